"""Sensor faults on observation fields: ``obs.*`` kinds. Units are those of the hit fields (m, m/s, rad/s, ...)."""

from __future__ import annotations

import numpy as np

from sim2real.perturb.spec import REQUIRED, Param, PerturbationSpec, SpecError
from sim2real.perturb.values import FIELDS, Delay, Gaussian, ValuePerturbation


class ObsGaussian(Gaussian):
    kind = "obs.gaussian"
    channel = "obs"
    summary = "adds zero-mean Gaussian noise to the hit fields every step."
    params = {**Gaussian.params, "fields": FIELDS}


class ObsUniform(ValuePerturbation):
    memoryless = True
    kind = "obs.uniform"
    channel = "obs"
    summary = "adds noise uniform in [-bound, bound] to the hit fields every step."
    params = {
        "bound": Param("float", REQUIRED, "Half width of the noise interval.", low=0.0, strength=True),
        "fields": FIELDS,
    }

    def transform(self, x, hit, strength):
        b = (self.p["bound"] * strength)[:, None, None]
        return x + self.rng.uniform(-1.0, 1.0, x.shape).astype(np.float32) * b


class ObsBias(ValuePerturbation):
    memoryless = True
    kind = "obs.bias"
    channel = "obs"
    summary = "adds a constant offset to the hit fields."
    params = {
        "value": Param(
            "floats", REQUIRED, "Offset: one number, or one per hit column (e.g. [0.1, 0, 0]).", strength=True
        ),
        "fields": FIELDS,
    }

    def setup_state(self) -> None:
        value = np.atleast_1d(np.asarray(self.p["value"], dtype=np.float32))
        if value.size not in (1, self.width):
            raise SpecError(
                f"{self.where}.value: {value.size} numbers for {self.width} hit columns; give 1 or {self.width}"
            )
        self.offset = np.broadcast_to(value, (self.width,)).copy()

    def transform(self, x, hit, strength):
        return x + self.offset * strength[:, None, None].astype(np.float32)


class ObsDrift(ValuePerturbation):
    kind = "obs.drift"
    channel = "obs"
    summary = "adds a random walk (restarting at 0 each episode) to the hit fields."
    params = {
        "std": Param("float", REQUIRED, "Random-walk step standard deviation per step.", low=0.0, strength=True),
        "fields": FIELDS,
    }

    def setup_state(self) -> None:
        self.walk = np.zeros((self.ctx.num_envs, self.ctx.num_agents, self.width), dtype=np.float32)

    def reset_state(self, env_ids):
        self.walk[env_ids] = 0.0

    def transform(self, x, hit, strength):
        step = self.rng.standard_normal(x.shape, dtype=np.float32) * (self.p["std"] * strength)[:, None, None]
        self.walk += np.where(hit[..., None], step, 0.0).astype(np.float32)
        return x + self.walk


class ObsDropout(ValuePerturbation):
    kind = "obs.dropout"
    channel = "obs"
    summary = "drops the hit fields of an agent with probability `rate` per step: holds the last value or zeros."
    params = {
        "rate": Param("float", REQUIRED, "Drop probability per step and agent.", low=0.0, high=1.0, strength=True),
        "mode": Param("choice", "hold", "What a dropped field shows.", choices=("hold", "zero")),
        "fields": FIELDS,
    }

    def setup_state(self) -> None:
        self.last = np.zeros((self.ctx.num_envs, self.ctx.num_agents, self.width), dtype=np.float32)

    def transform(self, x, hit, strength):
        self.last[self.fresh] = x[self.fresh]  # the first value of an episode is always seen
        drop = self.rng.random(hit.shape) < self.p["rate"] * strength[:, None]
        drop &= ~self.fresh[:, None]
        self.events = drop
        fill = self.last if self.p["mode"] == "hold" else np.zeros_like(x)
        out = np.where((drop & hit)[..., None], fill, x)
        self.last = out.astype(np.float32)
        return out


class ObsDelay(Delay):
    kind = "obs.delay"
    channel = "obs"
    summary = "shows the hit fields as they were `steps` steps earlier (the episode's first value until then)."
    params = {**Delay.params, "fields": FIELDS}


class ObsQuantize(ValuePerturbation):
    memoryless = True
    kind = "obs.quantize"
    channel = "obs"
    summary = "rounds the hit fields to multiples of `step` (sensor resolution)."
    params = {
        "step": Param("float", REQUIRED, "Quantisation step (units of the fields), > 0.", low=1e-12),
        "fields": FIELDS,
    }

    def transform(self, x, hit, strength):
        q = self.p["step"]
        return (np.round(x / q) * q).astype(np.float32)


class ObsSpike(ValuePerturbation):
    memoryless = True
    kind = "obs.spike"
    channel = "obs"
    summary = "adds outliers of +-`magnitude` to single values with probability `rate` each per step."
    params = {
        "rate": Param("float", REQUIRED, "Outlier probability per value and step.", low=0.0, high=1.0),
        "magnitude": Param("float", REQUIRED, "Outlier size (units of the fields).", low=0.0, strength=True),
        "fields": FIELDS,
    }

    def transform(self, x, hit, strength):
        spike = self.rng.random(x.shape) < self.p["rate"]
        self.events = spike.any(axis=-1)
        sign = np.where(self.rng.random(x.shape) < 0.5, -1.0, 1.0)
        return x + (spike * sign * (self.p["magnitude"] * strength)[:, None, None]).astype(np.float32)


class ObsClip(ValuePerturbation):
    memoryless = True
    kind = "obs.clip"
    channel = "obs"
    summary = "clips the hit fields to [low, high] (sensor range)."
    params = {
        "low": Param("float", REQUIRED, "Lowest value the sensor reports."),
        "high": Param("float", REQUIRED, "Highest value the sensor reports."),
        "fields": FIELDS,
    }

    @classmethod
    def validate(cls, where: str, spec: PerturbationSpec) -> None:
        if spec.params["low"] > spec.params["high"]:
            raise SpecError(f"{where}.low: {spec.params['low']} is above high {spec.params['high']}")

    def transform(self, x, hit, strength):
        return np.clip(x, self.p["low"], self.p["high"])


OBS_KINDS = (ObsGaussian, ObsUniform, ObsBias, ObsDrift, ObsDropout, ObsDelay, ObsQuantize, ObsSpike, ObsClip)
