"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import numpy as np
import pytest

from sim2real.envs.drones import CF2X

HOVER = CF2X.hover_rpm
BACKENDS = ("pybullet", "batched")


def constant_rpm(steps: int, num_drones: int = 1, scale: float | np.ndarray = 1.0) -> np.ndarray:
    """``[steps, num_drones, 4]`` RPM schedule at ``scale`` times hover."""
    return np.broadcast_to(HOVER * np.asarray(scale, dtype=np.float64), (steps, num_drones, 4)).copy()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Both physics backends."""
    return request.param
