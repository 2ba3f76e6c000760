"""Environments: the registry, ``make`` (batched multi-agent API) and ``make_parallel`` (PettingZoo)."""

from sim2real.envs.registry import EnvSpec, env_names, make, make_parallel, register, spec


def _register_builtin() -> None:
    from sim2real.envs.drones.env import DroneSwarmEnv

    descriptions = {
        "hover": "each drone flies to its own random target and holds it",
        "formation": "hold a ring formation around a reference moving on a circle",
        "navigation": "N drones cover N goals (no assignment) without colliding",
    }
    for task, text in descriptions.items():

        def factory(_task: str = task, **kwargs):
            return DroneSwarmEnv(_task, **kwargs)

        register(EnvSpec(f"drone-{task}", factory, text, {"num_drones": 4}))


_register_builtin()

__all__ = ["EnvSpec", "env_names", "make", "make_parallel", "register", "spec"]
