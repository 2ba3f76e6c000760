"""Timing faults on whole messages: ``timing.*`` kinds, on the observation or the action stream (``on``).

One delivery model covers all of them, and it is the meaning the ROS 2 bench uses: every step each agent
sends one message (its observation, or the policy's command). A message sent at step ``t`` with latency
``L`` arrives at step ``t + L`` (``L = inf``: lost). The receiver always uses the freshest message that
has arrived and holds it until a fresher one arrives (a keep-last-1 subscriber). Steps are control periods
(``1 / ctrl_freq`` s in simulation, one message period on the bench). The first message of an episode is
delivered at once. The log records each hit step where the used message is stale, with its age in steps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from sim2real.perturb.base import Perturbation
from sim2real.perturb.spec import REQUIRED, Param, PerturbationSpec, SpecError

ON = Param(
    "choice",
    "obs",
    "Which stream: the observations the policy gets, or the commands the robot gets.",
    choices=("obs", "action"),
)


class TimingFault(Perturbation, ABC):
    """Base of the timing kinds: subclasses give :meth:`latency` (steps per message, inf = lost)."""

    channel = "timing"
    horizon = 1  # how many past messages can still arrive

    @property
    def stage(self) -> str:
        return self.p["on"]

    def setup(self) -> None:
        e, n = self.ctx.num_envs, self.ctx.num_agents
        width = self.ctx.obs_dim if self.stage == "obs" else self.ctx.act_dim
        h = self.horizon
        self.values = np.zeros((h, e, n, width), dtype=np.float32)
        self.sent = np.full((h, e, n), -np.inf)  # send step of each slot
        self.arrive = np.full((h, e, n), np.inf)
        self.ptr = 0
        self.used = np.zeros((e, n, width), dtype=np.float32)
        self.used_sent = np.zeros((e, n))
        self.fresh = np.ones(e, dtype=bool)

    def reset_state(self, env_ids: np.ndarray) -> None:
        self.fresh[env_ids] = True

    @abstractmethod
    def latency(self, hit: np.ndarray, strength: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Latency ``[E, N]`` in steps (``inf``: lost) of the messages sent at steps ``t [E, N]``."""

    def apply(self, x: np.ndarray, episode_step: np.ndarray, global_step: int) -> np.ndarray:
        """The message each agent uses at this step, given the one it was sent now ``x [E, N, D]``."""
        hit, strength = self.gate(episode_step, global_step)
        t = episode_step.astype(np.float64)[:, None] * np.ones(hit.shape)
        lat = np.where(hit, self.latency(hit, strength, t), 0.0)
        self.ptr = (self.ptr + 1) % self.horizon
        self.values[self.ptr] = x
        self.sent[self.ptr] = t
        self.arrive[self.ptr] = t + lat
        if self.fresh.any():  # first message of an episode: delivered now, older slots forgotten
            f = self.fresh
            self.sent[:, f] = -np.inf
            self.arrive[:, f] = np.inf
            self.sent[self.ptr, f] = t[f]
            self.arrive[self.ptr, f] = t[f]
            self.used_sent[f] = -np.inf
            self.fresh[:] = False
        arrived = self.arrive <= t
        best = np.where(arrived, self.sent, -np.inf).max(axis=0)  # freshest arrived send step [E, N]
        newer = best > self.used_sent
        self.delivered_new = newer
        if newer.any():
            slot = np.argmax(np.where(arrived, self.sent, -np.inf), axis=0)
            e, n = slot.shape
            candidate = self.values[slot, np.arange(e)[:, None], np.arange(n)[None, :]]
            self.used = np.where(newer[..., None], candidate, self.used)
            self.used_sent = np.where(newer, best, self.used_sent)
        age = t - self.used_sent
        self.record(hit & (age > 0), age, episode_step, global_step)
        return self.used.copy()


class Latency(TimingFault):
    kind = "timing.latency"
    summary = "delivers every message `steps` steps late."
    params = {"steps": Param("int", REQUIRED, "Latency in steps (control periods).", low=1), "on": ON}

    def setup(self) -> None:
        self.horizon = self.p["steps"] + 1
        super().setup()

    def latency(self, hit, strength, t):
        return np.full(hit.shape, float(self.p["steps"]))


class Jitter(TimingFault):
    kind = "timing.jitter"
    summary = "delays each message by a random 0..max_steps steps; the receiver uses the freshest that arrived."
    params = {"max_steps": Param("int", REQUIRED, "Largest extra latency in steps.", low=1, strength=True), "on": ON}

    def setup(self) -> None:
        self.horizon = self.p["max_steps"] + 1
        super().setup()

    def latency(self, hit, strength, t):
        top = np.floor(self.p["max_steps"] * strength)[:, None] + 1
        return np.floor(self.rng.random(hit.shape) * top)


class RateReduction(TimingFault):
    kind = "timing.rate"
    summary = "sends only every `divisor`-th message (a slower sensor or link); the rest hold the last one."
    params = {"divisor": Param("int", REQUIRED, "Keep one message in `divisor` (2 = half rate).", low=2), "on": ON}

    def latency(self, hit, strength, t):
        return np.where(t % self.p["divisor"] == 0, 0.0, np.inf)


class LossBurst(TimingFault):
    kind = "timing.loss"
    summary = "loses messages at mean rate `rate` in bursts of mean length `burst` (Gilbert model); holds the last one."
    params = {
        "rate": Param("float", REQUIRED, "Long-run fraction of lost messages.", low=0.0, high=0.99, strength=True),
        "burst": Param("float", 1.0, "Mean burst length in messages; 1 = independent losses.", low=1.0),
        "on": ON,
    }

    @classmethod
    def validate(cls, where: str, spec: PerturbationSpec) -> None:
        rate, burst = spec.params["rate"], spec.params["burst"]
        if burst > 1.0 and rate / (burst * (1.0 - rate)) > 1.0:
            raise SpecError(
                f"{where}.burst: a loss rate of {rate} needs bursts of at least {rate / (1 - rate):.3g} messages"
            )

    def setup(self) -> None:
        super().setup()
        self.bad = np.zeros((self.ctx.num_envs, self.ctx.num_agents), dtype=bool)

    def reset_state(self, env_ids):
        super().reset_state(env_ids)
        self.bad[env_ids] = False

    def latency(self, hit, strength, t):
        rate = self.p["rate"] * strength[:, None]
        burst = self.p["burst"]
        u = self.rng.random(hit.shape)
        if burst == 1.0:
            self.bad = u < rate
        else:  # two-state Markov chain with stationary loss probability `rate` and mean burst `burst`
            enter = rate / (burst * (1.0 - rate))
            self.bad = np.where(self.bad, u >= 1.0 / burst, u < enter)
        return np.where(self.bad & hit, np.inf, 0.0)


TIMING_KINDS = (Latency, Jitter, RateReduction, LossBurst)
