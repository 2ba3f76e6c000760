"""Every perturbation kind by name (``obs.gaussian``, ``dynamics.mass``, ...)."""

from __future__ import annotations

from sim2real.perturb.action import ACTION_KINDS
from sim2real.perturb.adversarial import ATTACK_KINDS
from sim2real.perturb.agents import AGENT_KINDS
from sim2real.perturb.base import Perturbation
from sim2real.perturb.dynamics import DYNAMICS_KINDS
from sim2real.perturb.observation import OBS_KINDS
from sim2real.perturb.timing import TIMING_KINDS

KINDS: dict[str, type[Perturbation]] = {
    cls.kind: cls for cls in (*OBS_KINDS, *ACTION_KINDS, *DYNAMICS_KINDS, *AGENT_KINDS, *TIMING_KINDS, *ATTACK_KINDS)
}
