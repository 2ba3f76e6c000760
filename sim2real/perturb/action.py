"""Actuator faults: ``action.*`` kinds, in the policy's normalised action units ([-1, 1]).

For ``rpm`` actions dim ``i`` is motor ``i`` (``rpm = hover_rpm (1 + rpm_range a)``); for ``vel`` actions the
dims are the x, y, z velocity setpoint. For a physically weaker motor use ``dynamics.thrust``.
"""

from __future__ import annotations

import numpy as np

from sim2real.perturb.spec import REQUIRED, Param
from sim2real.perturb.values import DIMS, Delay, Gaussian, ValuePerturbation


class ActionNoise(Gaussian):
    kind = "action.noise"
    channel = "action"
    summary = "adds zero-mean Gaussian noise to the hit action dims every step."
    params = {**Gaussian.params, "dims": DIMS}


class ActionDelay(Delay):
    kind = "action.delay"
    channel = "action"
    summary = "executes the hit action dims `steps` steps late (actuator delay; zero action until then)."
    params = {**Delay.params, "dims": DIMS}

    def transform(self, x, hit, strength):
        # the actuator has no command before the episode's first one: start from the zero action
        self.line.push(np.zeros_like(x), self.fresh)
        self.line.buf[self.line.ptr] = x
        return self.line.get(self.p["steps"])


class ActionScale(ValuePerturbation):
    memoryless = True
    kind = "action.scale"
    channel = "action"
    summary = "multiplies the hit action dims by `factor`."
    params = {"factor": Param("float", REQUIRED, "Multiplier (0.8 = 20% weaker command).", strength=True), "dims": DIMS}

    def transform(self, x, hit, strength):
        f = 1.0 + (self.p["factor"] - 1.0) * strength[:, None, None]
        return (x * f).astype(np.float32)


class ActionSaturate(ValuePerturbation):
    memoryless = True
    kind = "action.saturate"
    channel = "action"
    summary = "clips the hit action dims to [-limit, limit] (a motor that cannot reach full command)."
    params = {
        "limit": Param("float", REQUIRED, "Largest absolute command that gets through.", low=0.0, high=1.0),
        "dims": DIMS,
    }

    def transform(self, x, hit, strength):
        return np.clip(x, -self.p["limit"], self.p["limit"])


class ActionStuck(ValuePerturbation):
    memoryless = True
    kind = "action.stuck"
    channel = "action"
    summary = "holds the hit action dims at `value` (a stuck motor or actuator)."
    params = {"value": Param("float", 0.0, "The stuck command in [-1, 1].", low=-1.0, high=1.0), "dims": DIMS}

    def transform(self, x, hit, strength):
        return np.full_like(x, self.p["value"])


ACTION_KINDS = (ActionNoise, ActionDelay, ActionScale, ActionSaturate, ActionStuck)
