"""Swarm tasks: where each drone should be, and how close it is.

A task samples spawn states and targets per episode (vectorised over the envs being reset) and gives each
drone its target position and velocity at any time. Rewards are computed by the env from
:meth:`SwarmTask.distance`; see ``docs/drone-envs.md`` for the terms.
"""

from __future__ import annotations

import inspect
import math

import numpy as np


def grid_positions(
    rng: np.random.Generator, num_envs: int, num_drones: int, spacing: float, jitter: float
) -> np.ndarray:
    """Distinct jittered cells of a square xy grid centred on the origin, ``[num_envs, num_drones, 2]``.

    Cells are ``spacing`` apart and points move at most ``jitter`` from their cell centre, so any two points
    are at least ``spacing - 2 jitter`` apart.
    """
    side = math.ceil(math.sqrt(num_drones * 2))
    coords = (np.arange(side) - (side - 1) / 2.0) * spacing
    cells = np.stack(np.meshgrid(coords, coords, indexing="ij"), axis=-1).reshape(-1, 2)
    pick = np.argsort(rng.random((num_envs, len(cells))), axis=1)[:, :num_drones]
    return cells[pick] + rng.uniform(-jitter, jitter, (num_envs, num_drones, 2))


def region_half_width(num_drones: int, spacing: float = 0.5) -> float:
    """Half width [m] of the xy region that the grid of :func:`grid_positions` covers."""
    side = math.ceil(math.sqrt(num_drones * 2))
    return max(1.0, 0.5 * spacing * side)


def height_range(name: str, value: object) -> tuple[float, float]:
    """A validated (low, high) altitude range [m] with low <= high."""
    try:
        low, high = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of heights in m, got {value!r}") from None
    if not low <= high:
        raise ValueError(f"{name} must be an increasing pair (low, high), got {value!r}")
    return low, high


def pairwise_optimal_assignment(cost: np.ndarray) -> np.ndarray:
    """Goal of each drone ``[E, N]`` such that no swap of two drones' goals lowers the total cost.

    Args:
        cost: ``cost[e, i, g]``, the cost of drone ``i`` taking goal ``g`` in env ``e``, ``[E, N, N]``; the tasks
            use squared distances [m^2].

    Starting from drone ``i`` -> goal ``i``, each env makes the swap that lowers its total cost most until
    none does (each swap strictly lowers the total, so this ends). With squared start-goal distances as the
    cost, the result meets the pairwise condition that the collision-avoidance proof of CAPT (Turpin, Michael
    & Kumar, "CAPT: Concurrent assignment and planning of trajectories for multiple robots", IJRR 2014)
    rests on: synchronised straight-line flights from starts to goals that are all more than 2 sqrt(2) R
    apart keep drones of radius R apart. It is a local optimum, not always the cheapest assignment.
    """
    e, n = cost.shape[:2]
    goal = np.tile(np.arange(n), (e, 1))
    envs = np.arange(e)  # the envs that swapped last round (only they can improve further)
    while envs.size:
        k = envs.size
        c = np.take_along_axis(cost[envs], np.broadcast_to(goal[envs, None, :], (k, n, n)), axis=2)  # i, goal of j
        own = np.diagonal(c, axis1=1, axis2=2)
        gain = (own[:, :, None] + own[:, None, :] - c - np.swapaxes(c, 1, 2)).reshape(k, n * n)
        best = np.argmax(gain, axis=1)
        swap = gain[np.arange(k), best] > 1e-12
        envs = envs[swap]
        i, j = np.divmod(best[swap], n)
        goal[envs, i], goal[envs, j] = goal[envs, j], goal[envs, i]
    return goal


def squared_distances(starts: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """``[E, N, G]`` squared distances [m^2] from each start ``[E, N, 3]`` to each goal ``[E, G, 3]``."""
    diff = starts[:, :, None, :] - goals[:, None, :, :]
    return np.einsum("engk,engk->eng", diff, diff)


class SwarmTask:
    """Base task: static per-drone targets; subclasses change where targets are and how they move.

    Args:
        num_drones: swarm size.
        spawn_height: (low, high) spawn altitude range [m]; low must keep the drone off the ground.
        target_height: (low, high) target altitude range [m].
    """

    name = "base"
    extra_fields: tuple[tuple[str, int, str, str], ...] = ()  # (name, size, unit, sensor)
    """Task-specific observation fields: (name, size, unit)."""

    def __init__(
        self,
        num_drones: int,
        num_envs: int,
        *,
        spawn_height: tuple[float, float] = (0.2, 1.0),
        target_height: tuple[float, float] = (0.5, 1.5),
        min_spawn_height: float = 0.0,
    ) -> None:
        spawn_height = height_range("spawn_height", spawn_height)
        target_height = height_range("target_height", target_height)
        if spawn_height[0] < min_spawn_height:
            raise ValueError(
                f"spawn_height {spawn_height} must start at >= {min_spawn_height:.4f} m "
                "(the drone's half height; lower spawns start inside the ground)"
            )
        if target_height[0] <= 0:
            raise ValueError(f"target_height {target_height} must be positive heights")
        self.num_drones = num_drones
        self.spawn_height = spawn_height
        self.target_height = target_height
        self.half_width = region_half_width(num_drones)
        self.targets = np.zeros((num_envs, num_drones, 3))

    def sample_spawn(self, rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Spawn positions ``[k, N, 3]`` and yaw angles ``[k, N]`` for ``k`` envs (drones >= 0.3 m apart)."""
        xy = grid_positions(rng, k, self.num_drones, spacing=0.4, jitter=0.05)
        z = rng.uniform(*self.spawn_height, (k, self.num_drones, 1))
        yaw = rng.uniform(-0.2, 0.2, (k, self.num_drones))
        return np.concatenate([xy, z], axis=-1), yaw

    def reset(self, rng: np.random.Generator, env_ids: np.ndarray, spawn: np.ndarray) -> None:
        """Sample new targets for ``env_ids``, whose drones spawn at ``spawn [len(env_ids), N, 3]`` [m]."""
        xy = grid_positions(rng, len(env_ids), self.num_drones, spacing=0.5, jitter=0.1)
        z = rng.uniform(*self.target_height, (len(env_ids), self.num_drones, 1))
        self.targets[env_ids] = np.concatenate([xy, z], axis=-1)

    def target_state(self, time_s: np.ndarray, pos: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each drone's target position and velocity ``[E, N, 3]`` at episode times ``time_s [E]`` [s].

        ``pos [E, N, 3]`` and ``active [E, N]`` (drones still flying) are there for tasks whose targets
        depend on where the swarm is.
        """
        return self.targets, np.zeros_like(self.targets)

    def distance(self, pos: np.ndarray, target_pos: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Distance [m] that the proximity reward uses, ``[E, N]``: each drone to its own target."""
        return np.linalg.norm(target_pos - pos, axis=-1)

    def extra_obs(self, pos: np.ndarray) -> np.ndarray | None:
        """Task-specific observation ``[E, N, X]`` (``extra_fields``), or None."""
        return None

    def metrics(self, pos: np.ndarray, target_pos: np.ndarray, active: np.ndarray) -> dict[str, np.ndarray]:
        """Task metrics for ``info``: ``pos_error [E, N]`` [m] (distance to the drone's target)."""
        return {"pos_error": np.linalg.norm(target_pos - pos, axis=-1)}


class HoverTask(SwarmTask):
    """``drone-hover``: every drone flies to its own random target and holds it.

    Args:
        assignment: which sampled target each drone gets. ``"capt"`` (default): no swap of two drones' targets
            would lower the sum of squared spawn-target distances (:func:`pairwise_optimal_assignment`), so the
            straight paths do not cross; ``"random"``: the order sampled, so paths often cross and the drones
            must avoid each other on the way.
    """

    name = "hover"
    assignments = ("capt", "random")

    def __init__(self, num_drones: int, num_envs: int, *, assignment: str = "capt", **kwargs) -> None:
        super().__init__(num_drones, num_envs, **kwargs)
        if assignment not in self.assignments:
            raise ValueError(f"assignment must be one of {self.assignments}, got {assignment!r}")
        self.assignment = assignment

    def reset(self, rng: np.random.Generator, env_ids: np.ndarray, spawn: np.ndarray) -> None:
        super().reset(rng, env_ids, spawn)
        if self.assignment == "capt":
            targets = self.targets[env_ids]
            goal = pairwise_optimal_assignment(squared_distances(spawn, targets))
            self.targets[env_ids] = np.take_along_axis(targets, goal[..., None], axis=1)


class FormationTask(SwarmTask):
    """``drone-formation``: hold a ring formation around a reference moving on a horizontal circle.

    The ring's neighbouring slots are ``spacing`` apart; the reference circles the origin at radius
    ``path_radius`` [m] with speed ``ref_speed`` [m/s] at a random height and phase per episode.
    """

    name = "formation"

    def __init__(
        self,
        num_drones: int,
        num_envs: int,
        *,
        spacing: float = 0.4,
        path_radius: float = 1.0,
        ref_speed: float = 0.25,
        **kwargs,
    ) -> None:
        super().__init__(num_drones, num_envs, **kwargs)
        if spacing <= 0 or path_radius < 0 or ref_speed < 0:
            raise ValueError("formation needs spacing > 0, path_radius >= 0 and ref_speed >= 0")
        n = num_drones
        ring = 0.0 if n == 1 else spacing / (2.0 * math.sin(math.pi / n))
        angle = 2.0 * math.pi * np.arange(n) / n
        self.offsets = np.stack([ring * np.cos(angle), ring * np.sin(angle), np.zeros(n)], axis=-1)
        self.path_radius = path_radius
        self.omega = 0.0 if path_radius == 0 else ref_speed / path_radius
        self.half_width = max(self.half_width, path_radius + ring + 0.5)
        self.phase = np.zeros(num_envs)
        self.height = np.ones(num_envs)

    def reset(self, rng: np.random.Generator, env_ids: np.ndarray, spawn: np.ndarray) -> None:
        self.phase[env_ids] = rng.uniform(0.0, 2.0 * math.pi, len(env_ids))
        self.height[env_ids] = rng.uniform(*self.target_height, len(env_ids))

    def target_state(self, time_s: np.ndarray, pos: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = self.phase + self.omega * time_s
        r = self.path_radius
        ref = np.stack([r * np.cos(a), r * np.sin(a), self.height], axis=-1)
        ref_vel = np.stack([-r * self.omega * np.sin(a), r * self.omega * np.cos(a), np.zeros_like(a)], axis=-1)
        self.targets = ref[:, None, :] + self.offsets
        return self.targets, np.broadcast_to(ref_vel[:, None, :], self.targets.shape)


class NavigationTask(SwarmTask):
    """``drone-navigation``: N drones cover N goals (no fixed assignment) without colliding.

    No fixed assignment: each drone's target (``rel_target``, the proximity reward and ``pos_error``) is the
    goal that :meth:`matching` gives it, recomputed every step from where the swarm is: a matching of goals
    to flying drones that no swap of two drones' goals improves (sum of squared distances, as CAPT assigns
    goals; see :func:`pairwise_optimal_assignment`). A drone that observes every other drone
    (``num_neighbors >= N - 1``, the default up to 4 drones) can compute it itself. Each drone also
    observes every goal relative to itself, nearest first (field ``rel_goals``). ``coverage`` is the
    fraction of goals with a drone within ``cover_radius``.
    """

    name = "navigation"

    def __init__(self, num_drones: int, num_envs: int, *, cover_radius: float = 0.1, **kwargs) -> None:
        super().__init__(num_drones, num_envs, **kwargs)
        self.extra_fields = (("rel_goals", 3 * num_drones, "m", "position"),)
        self.cover_radius = cover_radius

    def _rel_goals(self, pos: np.ndarray) -> np.ndarray:
        """Goals relative to each drone, nearest first, ``[E, N, G, 3]``."""
        rel = self.targets[:, None, :, :] - pos[:, :, None, :]
        order = np.argsort(np.sum(rel * rel, axis=-1), axis=-1)
        return np.take_along_axis(rel, order[..., None], axis=2)

    def target_state(self, time_s: np.ndarray, pos: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each flying drone's target is the goal :meth:`matching` gives it; others target their nearest."""
        goal, _ = self.matching(pos, active)
        nearest = pos + self._rel_goals(pos)[:, :, 0, :]
        matched = np.take_along_axis(self.targets, np.maximum(goal, 0)[..., None], axis=1)
        return np.where(goal[..., None] >= 0, matched, nearest), np.zeros_like(pos)

    def _goal_distances(self, pos: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Distance from each goal to the nearest active drone ``[E, G]`` (inf if none is active)."""
        d = np.linalg.norm(self.targets[:, :, None, :] - pos[:, None, :, :], axis=-1)  # [E, G, N]
        return np.min(np.where(active[:, None, :], d, np.inf), axis=-1)

    def matching(self, pos: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Goals of the flying drones: no swap of two drones' goals lowers the sum of squared distances.

        Drones that are not flying cost nothing anywhere, so a flying drone takes over a goal that a crashed
        one held whenever that lowers the sum. Returns each drone's goal index ``[E, N]`` (-1 for drones not
        flying) and its distance to it [m] (inf when not flying).
        """
        cost = np.where(active[..., None], squared_distances(pos, self.targets), 0.0)
        goal = pairwise_optimal_assignment(cost)
        dist = np.linalg.norm(np.take_along_axis(self.targets, goal[..., None], axis=1) - pos, axis=-1)
        return np.where(active, goal, -1), np.where(active, dist, np.inf)

    def extra_obs(self, pos: np.ndarray) -> np.ndarray:
        rel = self._rel_goals(pos)
        return rel.reshape(*rel.shape[:2], -1)

    def metrics(self, pos: np.ndarray, target_pos: np.ndarray, active: np.ndarray) -> dict[str, np.ndarray]:
        out = super().metrics(pos, target_pos, active)
        out["coverage"] = np.mean(self._goal_distances(pos, active) < self.cover_radius, axis=-1)
        return out


TASK_CLASSES: dict[str, type[SwarmTask]] = {
    "hover": HoverTask,
    "formation": FormationTask,
    "navigation": NavigationTask,
}


def task_arguments(task_cls: type[SwarmTask]) -> set[str]:
    """Keyword arguments a task class accepts from ``make`` (its own and the base class's)."""
    names: set[str] = set()
    for cls in task_cls.__mro__:
        if issubclass(cls, SwarmTask):
            params = inspect.signature(cls.__init__).parameters.values()
            names |= {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return names - {"min_spawn_height"}
