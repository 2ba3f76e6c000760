"""The perturbation library: one spec for sensors, actions, dynamics, agents, timing and attacks.

- :func:`parse_spec` validates a spec (dict, YAML file, or the string form ``obs.gaussian(std=0.05)+...``);
- :func:`apply` wraps a batched env (training, evaluation);
- :class:`StreamPerturber` perturbs one robot's message stream, :class:`BurstPerturber` a swarm's message bursts
  (the ROS 2 bench);
- :data:`KINDS` lists every kind; ``sim2real perturb list`` prints them. See ``docs/perturbations.md``.
"""

from sim2real.perturb.adversarial import AttackTarget, LearnedAdversary, gradient_attack
from sim2real.perturb.base import Context, EventLog, Perturbation
from sim2real.perturb.pipeline import Pipeline
from sim2real.perturb.registry import KINDS
from sim2real.perturb.spec import Spec, SpecError, parse_spec
from sim2real.perturb.stream import BurstPerturber, StreamPerturber
from sim2real.perturb.wrapper import PerturbedEnv, apply

__all__ = [
    "KINDS",
    "AttackTarget",
    "BurstPerturber",
    "Context",
    "EventLog",
    "LearnedAdversary",
    "Perturbation",
    "PerturbedEnv",
    "Pipeline",
    "Spec",
    "SpecError",
    "StreamPerturber",
    "apply",
    "gradient_attack",
    "parse_spec",
]
