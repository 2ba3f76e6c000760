"""Cost of the perturbation library on the batched drone env, and of gradient attacks.

Usage: ``python benchmarks/perturb_overhead.py --out benchmarks/results/perturb_overhead.json [--quick]``

For each spec the batched ``drone-hover`` env (4 drones, ``vel`` actions, no aerodynamic effects) is stepped
with zero actions for a fixed wall-clock budget, wrapped and unwrapped; records give env steps/s, agent
steps/s and the overhead per step in ms. The attack records time one ``adv.pgd`` / ``adv.fgsm`` call on
``[num_envs, 4, obs_dim]`` observations against a 2x64 tanh Gaussian MLP (the default actor size of the
MAPPO issue), one torch thread. Rates are medians of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from sim2real import __version__
from sim2real.envs import make
from sim2real.perturb import AttackTarget, apply

SPECS = {
    "none": None,
    "sensor_noise": "obs.gaussian(std=0.05,fields=pos)+obs.gaussian(std=0.1,fields=velocity)",
    "timing": "timing.latency(steps=2)+timing.loss(rate=0.1,burst=3)+timing.jitter(max_steps=2,on=action)",
    "dynamics_dr": (
        "dynamics.mass(scale=[0.8,1.2])+dynamics.thrust(scale=[0.9,1.1])+dynamics.wind(speed=0.5,gust_std=0.3)"
    ),
    "malicious": "agents.malicious(rate=0.05,mode=random)",
    "everything": (
        "obs.gaussian(std=0.05,fields=pos)+obs.dropout(rate=0.1)+obs.delay(steps=2,fields=vel)+obs.drift(std=0.001)"
        "+action.noise(std=0.05)+action.saturate(limit=0.9,dims=[2])+timing.loss(rate=0.1,burst=3)"
        "+dynamics.mass(scale=[0.8,1.2])+dynamics.wind(speed=0.5,gust_std=0.3)+dynamics.push(force=0.05)"
        "+agents.malicious(rate=0.05,mode=inverted)"
    ),
}


def env_rate(spec: str | None, num_envs: int, budget_s: float) -> float:
    env = make("drone-hover", num_envs=num_envs, num_drones=4, action_type="vel")
    penv = apply(env, spec, seed=0) if spec else env
    penv.reset(seed=0)
    actions = np.zeros((num_envs, 4, 3), np.float32)
    for _ in range(3):
        penv.step(actions)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget_s:
        penv.step(actions)
        steps += 1
    rate = steps * num_envs / (time.perf_counter() - start)
    env.close()
    return rate


def attack_ms(kind: str, num_envs: int, repeats: int) -> float:
    env = make("drone-hover", num_envs=num_envs, num_drones=4)
    obs, _ = env.reset(seed=0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(env.obs_dim, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, env.act_dim),
    )

    def policy(o):
        return torch.distributions.Normal(net(o), 0.3)

    penv = apply(env, kind, seed=0, target=AttackTarget(policy=policy))
    pipeline = penv.pipeline
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipeline.observations(obs, np.zeros(num_envs), 0)
        times.append(time.perf_counter() - start)
    env.close()
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="short budgets (smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    budget = 0.3 if args.quick else 2.0
    records = []
    for num_envs in (1, 64, 1024):
        base = None
        for name, spec in SPECS.items():
            rate = statistics.median(env_rate(spec, num_envs, budget) for _ in range(args.repeats))
            base = rate if name == "none" else base
            step_ms = 1e3 * num_envs / rate
            records.append(
                {
                    "spec_name": name,
                    "spec": spec,
                    "num_envs": num_envs,
                    "env_steps_per_s": round(rate, 1),
                    "agent_steps_per_s": round(4 * rate, 1),
                    "ms_per_batch_step": round(step_ms, 4),
                    "overhead_ms_per_batch_step": round(step_ms - 1e3 * num_envs / base, 4),
                }
            )
            print(json.dumps(records[-1]), flush=True)
    attacks = []
    for kind in ("adv.fgsm(eps=0.05)", "adv.pgd(eps=0.05,steps=3)", "adv.pgd(eps=0.05,steps=10)"):
        for num_envs in (1, 64, 1024):
            ms = attack_ms(kind, num_envs, 5 if args.quick else 20)
            attacks.append(
                {
                    "attack": kind,
                    "num_envs": num_envs,
                    "agents": 4 * num_envs,
                    "ms_per_call": round(ms, 3),
                    "us_per_agent": round(1e3 * ms / (4 * num_envs), 3),
                }
            )
            print(json.dumps(attacks[-1]), flush=True)
    out = {
        "benchmark": "perturb_overhead",
        "sim2real": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "env": "drone-hover, 4 drones, vel actions, batched backend, no effects",
        "env_records": records,
        "attack_records": attacks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
