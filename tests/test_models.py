"""Drone model constants, derived values and the generated URDF."""

from __future__ import annotations

import numpy as np
import pybullet as pb
import pytest

from sim2real.envs.drones import CF2P, CF2X, get_model
from sim2real.envs.drones.urdf import write_urdf


def test_derived_constants_match_the_anchor() -> None:
    assert CF2X.hover_rpm == pytest.approx(14468.4, abs=0.1)
    assert CF2X.max_rpm == pytest.approx(21702.6, abs=0.1)
    assert CF2X.max_thrust == pytest.approx(0.59535, rel=1e-4)
    assert CF2X.max_xy_torque == pytest.approx(8.356e-3, rel=1e-3)
    assert CF2P.max_xy_torque == pytest.approx(5.909e-3, rel=1e-3)
    assert CF2X.max_z_torque == pytest.approx(7.480e-3, rel=1e-3)
    assert CF2X.gnd_eff_h_clip == pytest.approx(0.0378, abs=1e-4)


def test_prop_positions_follow_the_documented_order() -> None:
    x = CF2X.prop_positions()
    # 0 front-right, 1 back-right, 2 back-left, 3 front-left at arm / sqrt(2) = 0.028 m.
    np.testing.assert_allclose(np.sign(x[:, :2]), [[1, -1], [-1, -1], [-1, 1], [1, 1]])
    np.testing.assert_allclose(np.abs(x[:, :2]), 0.0397 / np.sqrt(2), rtol=1e-12)
    p = CF2P.prop_positions()
    np.testing.assert_allclose(p[:, :2], [[0.0397, 0], [0, 0.0397], [-0.0397, 0], [0, -0.0397]], atol=1e-12)


def test_unknown_model_is_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match="cf2x"):
        get_model("racer9000")


def test_generated_urdf_loads_with_the_model_mass_and_inertia(tmp_path) -> None:
    path = write_urdf(CF2P, tmp_path)
    client = pb.connect(pb.DIRECT)
    try:
        body = pb.loadURDF(str(path), flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=client)
        info = pb.getDynamicsInfo(body, -1, physicsClientId=client)
        assert info[0] == pytest.approx(CF2P.mass)
        np.testing.assert_allclose(info[2], CF2P.inertia, rtol=1e-6)
        assert pb.getNumJoints(body, physicsClientId=client) == 0
    finally:
        pb.disconnect(client)
