"""The physical command of a policy contract: its names, units, bounds, safe value and inverse map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim2real.export.contract import ContractError


@dataclass(frozen=True)
class CommandSpec:
    """``command = clip(offset + scale * action, low, high)`` per component (the contract's ``command`` block).

    ``vel`` policies command world-frame velocity setpoints ``[vx, vy, vz]`` in m/s; ``rpm`` policies command
    motor speeds ``[m1, m2, m3, m4]`` in RPM. Arrays are ``[A]`` float64.
    """

    action_type: str
    names: tuple[str, ...]
    unit: str
    scale: np.ndarray
    offset: np.ndarray
    low: np.ndarray
    high: np.ndarray
    action_low: np.ndarray
    action_high: np.ndarray

    @classmethod
    def from_contract(cls, contract: dict[str, Any]) -> CommandSpec:
        """The command of a drone policy contract; ContractError for a policy without a physical command."""
        if contract.get("command") is None or contract.get("action_type") not in ("vel", "rpm"):
            raise ContractError(
                f"policy for {contract.get('env_id')!r} has action type {contract.get('action_type')!r} and no "
                "physical command: robots run drone policies with 'vel' or 'rpm' actions"
            )
        cmd = contract["command"]

        def array(values: Any) -> np.ndarray:
            return np.asarray(values, dtype=np.float64)

        return cls(
            action_type=contract["action_type"],
            names=tuple(cmd["names"]),
            unit=cmd["unit"],
            scale=array(cmd["scale"]),
            offset=array(cmd["offset"]),
            low=array(cmd["low"]),
            high=array(cmd["high"]),
            action_low=array(contract["action_low"]),
            action_high=array(contract["action_high"]),
        )

    @property
    def size(self) -> int:
        """A, the number of command components."""
        return len(self.names)

    def safe_command(self) -> np.ndarray:
        """The command of the zero action ``[A]``: zero velocity for ``vel``, hover RPM for ``rpm`` policies."""
        return np.clip(self.offset, self.low, self.high)

    def to_action(self, command: np.ndarray) -> np.ndarray:
        """The action in ``[action_low, action_high]`` that maps to ``command [..., A]`` (float32).

        The policy observes its previous action; after a clamp, a rate limit or a safe command, this is the
        action the robot actually received.
        """
        action = (np.asarray(command, dtype=np.float64) - self.offset) / self.scale
        return np.minimum(np.maximum(action, self.action_low), self.action_high).astype(np.float32)
