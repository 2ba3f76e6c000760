"""The perturbation base class: binding to a batch, agent selection, schedules, run-time switch, ground truth.

Every perturbation works on arrays shaped ``[E, N, ...]`` (``E`` envs, ``N`` agents). A single robot's
message stream is the case ``E = N = 1`` (see :mod:`sim2real.perturb.stream`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from sim2real.perturb.spec import Param, PerturbationSpec, SpecError

SENSOR_ALIASES = {"pos": "position", "att": "attitude"}


@dataclass(frozen=True)
class Field:
    """A named slice of a message or observation vector, with the sensor it comes from."""

    name: str
    start: int
    size: int
    sensor: str = ""

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.size)


def layout_from(fields: Any) -> list[Field]:
    """A layout from an env's ``obs_layout`` (objects with name/start/size/sensor) or ``{name: size}``."""
    if isinstance(fields, dict):
        out, start = [], 0
        for name, size in fields.items():
            out.append(Field(name, start, int(size), name))
            start += int(size)
        return out
    return [Field(f.name, f.start, f.size, getattr(f, "sensor", "")) for f in fields]


@dataclass
class Context:
    """What a perturbation binds to.

    Attributes:
        num_envs, num_agents: batch shape ``E``, ``N``.
        obs_layout: fields of the observation vector (length ``obs_dim``).
        act_dim: action size (0 for an observation-only stream).
        dt: control period [s] (one step).
        env: the wrapped env (dynamics perturbations write its ``sim.params``), or None for a stream.
        target: an :class:`sim2real.perturb.adversarial.AttackTarget` for gradient attacks and adversarial
            malicious agents, or None.
    """

    num_envs: int
    num_agents: int
    obs_layout: list[Field]
    act_dim: int
    dt: float
    env: Any = None
    target: Any = None
    obs_dim: int = field(init=False)

    def __post_init__(self) -> None:
        self.obs_dim = self.obs_layout[-1].start + self.obs_layout[-1].size if self.obs_layout else 0

    def field_mask(self, names: list[str] | None, where: str) -> np.ndarray:
        """Boolean ``[obs_dim]`` mask of the named fields or sensors (``None``: every field)."""
        mask = np.zeros(self.obs_dim, dtype=bool)
        if names is None:
            mask[:] = True
            return mask
        by_name = {f.name: f for f in self.obs_layout}
        sensors = sorted({f.sensor for f in self.obs_layout if f.sensor})
        for name in names:
            if name in by_name:
                mask[by_name[name].slice] = True
                continue
            sensor = SENSOR_ALIASES.get(name, name)
            hits = [f for f in self.obs_layout if f.sensor == sensor]
            if not hits:
                raise SpecError(
                    f"{where}.fields: {name!r} is neither a field nor a sensor of this observation; "
                    f"fields are {sorted(by_name)}, sensors are {sensors} (aliases: pos, att)"
                )
            for f in hits:
                mask[f.slice] = True
        return mask


PENDING_LIMIT = 64
"""Calls of :meth:`EventLog.add` whose hits may wait to be counted (memory: the arrays they hold)."""


class EventLog:
    """Ground truth of what the perturbations did: one row per (perturbation, step, env, agent) hit.

    Rows hold ``kind``, ``name``, ``global_step``, ``episode_step``, ``env``, ``agent`` and ``magnitude``
    (L2 norm of the change for values; steps of staleness for timing; the factor drawn for a dynamics
    shift, recorded once per episode at reset with ``global_step = -1``; wind speed and push force per step).
    At most ``capacity`` rows are kept; :meth:`counts` keeps counting beyond it, also per agent. With ``agent``
    set, only that agent's hits are recorded (a robot's message stream, whose batch's other rows hold no
    message); with :attr:`agents` set, only those agents' (the robots a burst of messages carries).
    """

    def __init__(self, capacity: int = 200_000, agent: int | None = None) -> None:
        self.capacity = capacity
        self.agent = agent
        self.agents: np.ndarray | None = None
        """Agents whose hits are recorded now (bool ``[N]``), None for all; :class:`BurstPerturber` sets it."""
        self._chunks: list[tuple[str, str, np.ndarray]] = []
        self._rows = 0
        self._dropped = 0
        self._pending: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._counts: dict[str, int] = {}
        self._magnitude_sums: dict[str, float] = {}
        self._agent_counts: dict[str, np.ndarray] = {}  # name -> hits per agent [N]
        self._agent_magnitude_sums: dict[str, np.ndarray] = {}

    def add(
        self, kind: str, name: str, global_step: int, episode_step: np.ndarray, hit: np.ndarray, mag: np.ndarray
    ) -> None:
        """Record the hits ``hit [E, N]`` with magnitudes ``mag [E, N]`` at the given steps.

        The caller must not change ``hit`` or ``mag`` afterwards: once the log keeps no more rows (``capacity``
        reached, or 0 as in a long-running node), they are only counted, and that is done by :meth:`count_pending`:
        when the counts are read, when :data:`PENDING_LIMIT` calls are waiting, or when the caller asks (a node,
        after its outputs are out), so a node's control path does no counting."""
        if self._rows >= self.capacity:
            self._pending.append((name, hit, mag, self.agents))
            if len(self._pending) >= PENDING_LIMIT:
                self.count_pending()
            return
        env_idx, agent_idx, values = self._hits(hit, mag, self.agents)
        n = len(env_idx)
        if n == 0:
            return
        self._count(name, hit.shape[1], agent_idx, values)
        keep = min(n, self.capacity - self._rows)
        rows = np.empty((keep, 5))
        rows[:, 0] = global_step
        rows[:, 1] = np.asarray(episode_step)[env_idx[:keep]]
        rows[:, 2] = env_idx[:keep]
        rows[:, 3] = agent_idx[:keep]
        rows[:, 4] = values[:keep]
        self._chunks.append((kind, name, rows))
        self._rows += keep
        self._dropped += n - keep

    @property
    def dropped(self) -> int:
        """Hits counted but not kept as rows (beyond ``capacity``)."""
        self.count_pending()
        return self._dropped

    def _hits(
        self, hit: np.ndarray, mag: np.ndarray, agents: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The recorded hits' env and agent indices and magnitudes (float64), each ``[n]``."""
        if self.agent is not None:  # a robot's stream: its own column only
            (env_idx,) = np.nonzero(hit[:, self.agent])
            agent_idx = np.full(len(env_idx), self.agent)
        else:
            env_idx, agent_idx = np.nonzero(hit if agents is None else hit & agents)
        return env_idx, agent_idx, np.asarray(mag, dtype=np.float64)[env_idx, agent_idx]

    def _count(self, name: str, num_agents: int, agent_idx: np.ndarray, values: np.ndarray) -> None:
        """Add hits of ``name`` (``agent_idx [n]``, magnitudes ``values [n]``) to the counts."""
        n = len(agent_idx)
        total = float(values.sum())
        self._counts[name] = self._counts.get(name, 0) + n
        self._magnitude_sums[name] = self._magnitude_sums.get(name, 0.0) + total
        if name not in self._agent_counts:
            self._agent_counts[name] = np.zeros(num_agents, dtype=np.int64)
            self._agent_magnitude_sums[name] = np.zeros(num_agents)
        if self.agent is not None:
            self._agent_counts[name][self.agent] += n
            self._agent_magnitude_sums[name][self.agent] += total
        else:
            self._agent_counts[name] += np.bincount(agent_idx, minlength=num_agents)
            self._agent_magnitude_sums[name] += np.bincount(agent_idx, weights=values, minlength=num_agents)

    def count_pending(self) -> None:
        """Count the hits :meth:`add` left waiting, in the order they came. Reading the counts does it; a node can
        call it once its outputs are out, so the counting waits for no timer."""
        pending, self._pending = self._pending, []
        for name, hit, mag, agents in pending:
            _, agent_idx, values = self._hits(hit, mag, agents)
            if len(agent_idx):
                self._count(name, hit.shape[1], agent_idx, values)
                self._dropped += len(agent_idx)

    def records(self) -> list[dict[str, Any]]:
        """Every kept row as a dict."""
        out = []
        for kind, name, rows in self._chunks:
            for g, s, e, a, m in rows.tolist():
                out.append(
                    {
                        "kind": kind,
                        "name": name,
                        "global_step": int(g),
                        "episode_step": int(s),
                        "env": int(e),
                        "agent": int(a),
                        "magnitude": m,
                    }
                )
        return out

    def counts(self, agent: int | None = None) -> dict[str, dict[str, float]]:
        """Per perturbation name: number of hits and mean magnitude (over every hit, kept or not), of all agents
        or of ``agent`` only (names that never hit it are left out)."""
        self.count_pending()
        if agent is None:
            return {
                name: {"events": n, "mean_magnitude": self._magnitude_sums[name] / n}
                for name, n in self._counts.items()
            }
        return {
            name: {"events": int(n[agent]), "mean_magnitude": float(self._agent_magnitude_sums[name][agent] / n[agent])}
            for name, n in self._agent_counts.items()
            if n[agent]
        }


def drawn_count(agents: str | list[int], num_agents: int) -> int | None:
    """How many agents a ``random:K`` / ``fraction:F`` selector draws per episode; None for ``all`` or a list."""
    if isinstance(agents, str) and agents.startswith("random:"):
        return int(agents[len("random:") :])
    if isinstance(agents, str) and agents.startswith("fraction:"):
        return round(float(agents[len("fraction:") :]) * num_agents)
    return None


class Perturbation:
    """Base of every perturbation kind.

    Subclasses set ``kind``, ``channel`` (``obs``, ``action``, ``dynamics`` or ``attack``), ``summary`` and
    ``params``, and implement :meth:`setup` (allocate state after binding), :meth:`reset_state` (per
    episode) and the channel's method (:meth:`apply` for values). Each call to :meth:`gate` returns which
    ``(env, agent)`` pairs are hit this step and the strength ``[E]`` in [0, 1] from the schedule's ramp.
    """

    kind: ClassVar[str]
    channel: ClassVar[str]
    summary: ClassVar[str]
    params: ClassVar[dict[str, Param]]
    memoryless: ClassVar[bool] = False
    """True for kinds whose output at a step depends only on that step's input, the episode's draws (agents hit,
    parameters) and new random draws: no earlier input, no state carried from step to step."""

    def __init__(self, spec: PerturbationSpec, index: int) -> None:
        self.spec = spec
        self.p = spec.params
        self.name = spec.name or f"{index}:{spec.kind}"
        self.where = f"perturbations[{index}] ({spec.kind})"  # how errors name it, as the spec parser does
        self._full_hit: np.ndarray | None = None  # gate's hit mask on the default schedule, until it changes
        self.enabled = spec.enabled
        self.log: EventLog | None = None

    @property
    def enabled(self) -> bool:
        """Whether the perturbation acts (the run-time switch)."""
        return self._enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self._enabled = bool(on)
        self._full_hit = None

    # ------------------------------------------------------------------ spec-time
    @classmethod
    def validate(cls, where: str, spec: PerturbationSpec) -> None:
        """Cross-parameter checks at parse time (raise :class:`SpecError`)."""

    def explain(self) -> str:
        """One line saying what this perturbation will do."""
        own = ", ".join(f"{k}={v}" for k, v in self.p.items() if v is not None)
        s = self.spec
        if s.start == 0 and s.end is None:
            when = "every step"
        else:
            when = f"steps {s.start} to {'the end' if s.end is None else s.end - 1} on the {s.clock} clock"
        if s.prob < 1.0:
            when += f", in {s.prob:.0%} of episodes"
        if s.ramp:
            when += f", ramped over {s.ramp} steps"
        return f"{self.kind}({own}): {self.summary} Agents: {s.agents}; {when}{'' if self.enabled else '; off'}."

    # ------------------------------------------------------------------ binding
    def bind(self, ctx: Context, rng: np.random.Generator, log: EventLog) -> None:
        """Attach to a batch shape; checks that fields, agents and dims exist."""
        self.ctx, self.rng, self.log = ctx, rng, log
        e, n = ctx.num_envs, ctx.num_agents
        agents = self.spec.agents
        if isinstance(agents, list) and max(agents) >= n:
            raise SpecError(
                f"{self.where}.agents: {agents} names agent {max(agents)} but there are {n} agents (0..{n - 1})"
            )
        count = drawn_count(agents, n)
        if count is not None and count > n:
            raise SpecError(f"{self.where}.agents: {agents} asks for more agents than the {n} there are")
        if count is not None and count < 1:
            raise SpecError(f"{self.where}.agents: {agents} of {n} agents selects none; raise the fraction")
        self.agent_mask = np.zeros((e, n), dtype=bool)
        self.episode_on = np.ones(e, dtype=bool)
        s = self.spec
        self._always_full = s.start <= 0 and s.end is None and not s.ramp  # steps count from 0
        self._full_strength = np.ones(e)
        self._full_strength.setflags(write=False)
        self.setup()
        self.reset(np.arange(e))

    def setup(self) -> None:
        """Allocate per-env state once ``self.ctx`` is known."""

    def reset(self, env_ids: np.ndarray) -> None:
        """New episodes in ``env_ids``: draw the agents hit and whether the episode is perturbed."""
        k = len(env_ids)
        if k == 0:
            return
        n = self.ctx.num_agents
        agents = self.spec.agents
        if agents == "all":
            self.agent_mask[env_ids] = True
        elif isinstance(agents, list):
            self.agent_mask[env_ids] = False
            self.agent_mask[np.ix_(env_ids, agents)] = True
        else:  # a uniform random permutation per env; the agents holding its first `count` values are hit
            perm = np.argsort(self.rng.random((k, n)), axis=1)
            self.agent_mask[env_ids] = perm < drawn_count(agents, n)
        self.episode_on[env_ids] = self.rng.random(k) < self.spec.prob
        self._full_hit = None
        self.reset_state(env_ids)

    def reset_state(self, env_ids: np.ndarray) -> None:
        """Clear per-episode state of ``env_ids``."""

    @property
    def step_free(self) -> bool:
        """Whether a step's output depends on neither earlier steps nor the step count: a memoryless kind on the
        default schedule (every step, full strength). Such a perturbation can step any set of agents together."""
        return self.memoryless and self._always_full

    # ------------------------------------------------------------------ per step
    def gate(self, episode_step: np.ndarray, global_step: int) -> tuple[np.ndarray, np.ndarray]:
        """Hit mask ``[E, N]`` and strength ``[E]`` at this step (all False when switched off); callers do not
        change them.

        On the default schedule (every step at full strength) the mask is the same from step to step: it is
        computed once after each :meth:`reset` or switch and returned, read-only, as it is (no array operations
        per step)."""
        if self._always_full:
            if self._full_hit is None:
                self._full_hit = self.agent_mask & (self.episode_on & self.enabled)[:, None]
                self._full_hit.setflags(write=False)
            return self._full_hit, self._full_strength
        s = self.spec
        t = episode_step.astype(np.float64) if s.clock == "episode" else np.full(len(episode_step), float(global_step))
        on = self.episode_on & (t >= s.start) & self.enabled
        if s.end is not None:
            on &= t < s.end
        strength = np.clip((t - s.start + 1) / s.ramp, 0.0, 1.0) if s.ramp else np.ones_like(t)
        return self.agent_mask & on[:, None], strength

    def record(self, hit: np.ndarray, magnitude: np.ndarray, episode_step: np.ndarray, global_step: int) -> None:
        if self.log is not None:
            self.log.add(self.kind, self.name, global_step, episode_step, hit, magnitude)


def change_norm(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """L2 norm over the last axis of ``after - before``, ``[E, N]``."""
    d = after - before
    return np.sqrt(np.einsum("...i,...i->...", d, d))
