"""Drone-swarm domain: Crazyflie models, PyBullet and batched physics, PID control, swarm tasks."""

from sim2real.envs.drones.backend import BACKENDS, Contacts, DroneBackend, make_backend
from sim2real.envs.drones.forces import EFFECTS, parse_effects
from sim2real.envs.drones.models import CF2P, CF2X, MODELS, DroneModel, G, get_model
from sim2real.envs.drones.params import DroneParams
from sim2real.envs.drones.simulate import simulate_rpm, trajectory_gap

__all__ = [
    "BACKENDS",
    "CF2P",
    "CF2X",
    "EFFECTS",
    "MODELS",
    "Contacts",
    "DroneBackend",
    "DroneModel",
    "DroneParams",
    "G",
    "get_model",
    "make_backend",
    "parse_effects",
    "simulate_rpm",
    "trajectory_gap",
]
