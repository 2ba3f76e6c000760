"""Our own URDF description of a drone model, generated from its constants (single source of truth).

One rigid link: the inertial from the model, a collision cylinder (the anchor's envelope: r = 0.06 m,
length 0.025 m, centred on the centre of mass) and simple visuals (a body box, four rotor discs and a red
nose marker on +x). Rotor forces are applied by the simulator, so the rotors need no links of their own.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from sim2real.envs.drones.models import DroneModel


def urdf_text(model: DroneModel) -> str:
    """URDF XML for ``model``."""
    ixx, iyy, izz = model.inertia
    rotor_visuals = "\n".join(
        f"""    <visual>
      <origin xyz="{x:.6f} {y:.6f} 0.012" rpy="0 0 0"/>
      <geometry><cylinder radius="{model.prop_radius:.6f}" length="0.002"/></geometry>
      <material name="rotor"><color rgba="0.2 0.2 0.2 0.6"/></material>
    </visual>"""
        for x, y, _ in model.prop_positions()
    )
    return f"""<?xml version="1.0"?>
<!-- sim2real {model.name}: {model.description}. Generated from sim2real.envs.drones.models. -->
<robot name="{model.name}">
  <link name="base_link">
    <inertial>
      <origin xyz="0 0 0" rpy="0 0 0"/>
      <mass value="{model.mass}"/>
      <inertia ixx="{ixx}" ixy="0" ixz="0" iyy="{iyy}" iyz="0" izz="{izz}"/>
    </inertial>
    <collision>
      <origin xyz="0 0 0" rpy="0 0 0"/>
      <geometry><cylinder radius="{model.collision_radius}" length="{model.collision_height}"/></geometry>
    </collision>
    <visual>
      <origin xyz="0 0 0" rpy="0 0 0"/>
      <geometry><box size="0.03 0.03 0.01"/></geometry>
      <material name="body"><color rgba="0.8 0.8 0.8 1"/></material>
    </visual>
    <visual>
      <origin xyz="0.02 0 0.006" rpy="0 0 0"/>
      <geometry><box size="0.008 0.004 0.002"/></geometry>
      <material name="nose"><color rgba="0.9 0.1 0.1 1"/></material>
    </visual>
{rotor_visuals}
  </link>
</robot>
"""


def write_urdf(model: DroneModel, directory: str | Path | None = None) -> Path:
    """Write the model's URDF and return its path.

    Without ``directory`` the file goes to a per-user temporary cache named after the content hash, so
    repeated calls reuse it.
    """
    text = urdf_text(model)
    if directory is None:
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        directory = Path(tempfile.gettempdir()) / "sim2real-urdf"
        path = Path(directory) / f"{model.name}-{digest}.urdf"
    else:
        path = Path(directory) / f"{model.name}.urdf"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path
