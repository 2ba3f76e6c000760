"""Malicious teammates: ``agents.malicious`` replaces some agents' actions before they reach the robots."""

from __future__ import annotations

import itertools

import numpy as np

from sim2real.perturb.base import Perturbation, change_norm, drawn_count
from sim2real.perturb.spec import Param, PerturbationSpec, SpecError


class Malicious(Perturbation):
    """With probability ``rate`` per step and env, ``k`` of the selected agents act maliciously.

    The ``k`` agents are drawn anew at every event; for a fixed malicious teammate select it with ``agents``
    (e.g. ``agents=[2]``, or ``agents=random:K`` with ``k=K``). Modes: ``random`` (uniform in [-1, 1]),
    ``frozen`` (repeats the command it sent on the previous step, as it left this stage: the zero action at
    an episode's start),
    ``inverted`` (``-a``) and ``adversarial``: the greedy search of ERNIE-A (Bukharin et al. 2023, Eq. 5 and
    the paragraph after it): ``k`` times, over the not yet changed agents ``i`` and candidate actions ``b``,
    pick the single change that most lowers the centralised critic ``Q(s, a'_{-i}, b)`` and apply it. ERNIE-A
    maximises ``|Q(s, a) - Q(s, a')|``; an attacker wants the *lower* value, so we minimise ``Q(s, a')``
    (deliberate). Continuous actions have no finite action set, so the candidates are the ``2^A`` corners
    of the action box (for ``A <= 6``), the zero action and the agent's inverted action. For the other modes
    the ``k`` agents are drawn at random among the selected ones.
    """

    kind = "agents.malicious"
    channel = "agents"
    summary = (
        "replaces k selected agents' actions with probability `rate` per step (random/frozen/inverted/adversarial)."
    )
    params = {
        "rate": Param(
            "float",
            1.0,
            "Probability per step and env that the malicious agents act.",
            low=0.0,
            high=1.0,
            strength=True,
        ),
        "k": Param("int", 1, "How many agents act maliciously when it happens.", low=1),
        "mode": Param("choice", "random", "What they do.", choices=("random", "frozen", "inverted", "adversarial")),
    }

    @classmethod
    def validate(cls, where: str, spec: PerturbationSpec) -> None:
        agents = spec.agents
        k = spec.params["k"]
        if isinstance(agents, list) and k > len(agents):
            raise SpecError(f"{where}.k: {k} malicious agents but only {len(agents)} selected by 'agents'")
        drawn = drawn_count(agents, k) if isinstance(agents, str) and agents.startswith("random:") else None
        if drawn is not None and k > drawn:
            raise SpecError(f"{where}.k: {k} malicious agents but only {drawn} selected by 'agents'")

    def setup(self) -> None:
        if self.p["k"] > self.ctx.num_agents:
            raise SpecError(f"{self.where}.k: {self.p['k']} malicious agents but the swarm has {self.ctx.num_agents}")
        a = self.ctx.act_dim
        if self.p["mode"] == "adversarial":
            if a > 6:
                raise SpecError(f"{self.where}: adversarial mode enumerates 2^A action corners; A = {a} is too large")
            self.corners = np.array(list(itertools.product((-1.0, 1.0), repeat=a)), dtype=np.float32)
        self.previous = np.zeros((self.ctx.num_envs, self.ctx.num_agents, a), dtype=np.float32)

    def reset_state(self, env_ids: np.ndarray) -> None:
        self.previous[env_ids] = 0.0

    def apply(
        self, actions: np.ndarray, obs: np.ndarray | None, episode_step: np.ndarray, global_step: int
    ) -> np.ndarray:
        """Actions ``[E, N, A]`` after replacement.

        ``obs`` are the clean observations (the critic's input; only ``adversarial`` needs them).
        """
        hit, strength = self.gate(episode_step, global_step)
        e, n = actions.shape[:2]
        event = self.rng.random(e) < self.p["rate"] * strength
        eligible = hit & event[:, None]
        if not eligible.any():
            self.previous = actions.copy()
            return actions
        k = self.p["k"]
        if self.p["mode"] == "adversarial":
            chosen, replacement = self._greedy(actions, obs, eligible, k)
        else:
            score = np.where(eligible, self.rng.random((e, n)), np.inf)
            rank = np.argsort(np.argsort(score, axis=1), axis=1)
            chosen = eligible & (rank < k)
            mode = self.p["mode"]
            if mode == "random":
                replacement = self.rng.uniform(-1.0, 1.0, actions.shape).astype(np.float32)
            elif mode == "frozen":
                replacement = self.previous
            else:
                replacement = -actions
        out = np.where(chosen[..., None], replacement, actions).astype(np.float32)
        self.previous = out
        self.record(chosen, change_norm(actions, out), episode_step, global_step)
        return out

    def _greedy(
        self, actions: np.ndarray, obs: np.ndarray, eligible: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """ERNIE-A greedy top-k swaps on the envs with an event: returns the chosen mask and the new actions."""
        target = self.ctx.target
        if target is None or target.team_critic is None:
            raise RuntimeError(
                f"{self.name}: adversarial malicious agents need AttackTarget(team_critic=...); "
                "pass target= to perturb.apply"
            )
        envs = np.nonzero(eligible.any(axis=1))[0]
        joint = actions[envs].copy()  # [B, N, A]
        free = eligible[envs].copy()
        o = obs[envs]
        b, n, a = joint.shape
        chosen = np.zeros((b, n), dtype=bool)
        for _ in range(k):
            if not free.any():
                break
            cands = np.concatenate(
                [
                    np.broadcast_to(self.corners, (b, n, *self.corners.shape)),
                    np.zeros((b, n, 1, a), np.float32),
                    -joint[:, :, None, :],
                ],
                axis=2,
            )  # [B, N, C, A]
            c = cands.shape[2]
            trial = np.broadcast_to(joint[:, None, None], (b, n, c, n, a)).copy()  # agent i takes candidate c
            idx = np.arange(n)
            trial[:, idx, :, idx, :] = cands.transpose(1, 0, 2, 3)
            q = np.asarray(
                target.team_critic(np.repeat(o, n * c, axis=0), trial.reshape(b * n * c, n, a)), dtype=np.float64
            )
            q = np.where(free[:, :, None], q.reshape(b, n, c), np.inf)
            best = q.reshape(b, -1).argmin(axis=1)
            agent, cand = np.divmod(best, c)
            ok = np.isfinite(q.reshape(b, -1).min(axis=1))
            rows = np.nonzero(ok)[0]
            joint[rows, agent[rows]] = cands[rows, agent[rows], cand[rows]]
            chosen[rows, agent[rows]] = True
            free[rows, agent[rows]] = False
        full_chosen = np.zeros(eligible.shape, dtype=bool)
        full_chosen[envs] = chosen
        replacement = actions.copy()
        replacement[envs] = joint
        return full_chosen, replacement


AGENT_KINDS = (Malicious,)
