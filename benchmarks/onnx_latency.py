"""Single-thread inference latency of the exported actor (onnxruntime) against torch eager on the same network.

Usage: ``python benchmarks/onnx_latency.py --out benchmarks/results/onnx_latency.json [--calls 10000]``

For swarms of 1, 4 and 16 drones (``drone-hover``, ``vel`` actions) a default-config MAPPO actor (2x64 tanh,
observation normalisation, one-hot agent id) is exported with the project's exporter and timed on a whole
swarm's observations ``[N, D]`` (batch 1 = one drone). Variants, interleaved in rounds so they see the same
machine load:

- ``torch_eager``: ``Actor.deterministic`` on a ready torch tensor, under ``no_grad`` (the network only);
- ``onnxruntime``: ``InferenceSession.run`` on ready numpy inputs (the graph only);
- ``onnx_policy``: ``OnnxPolicy.act(obs)`` (what the ROS 2 node and ``sim2real eval`` call: shape checks,
  agent ids, reshape).

One torch thread, one onnxruntime intra- and inter-op thread. Latencies are per call in microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import onnxruntime as ort
import torch

from sim2real import __version__
from sim2real.config import validate
from sim2real.envs import make
from sim2real.export.contract import env_contract, to_metadata
from sim2real.export.exporter import export_onnx
from sim2real.export.runtime import OnnxPolicy
from sim2real.train import MAPPO

SWARMS = (1, 4, 16)
GOAL_P50_US = 20.0
GOAL_SPEEDUP = 4.0


def timed(fn, calls: int) -> np.ndarray:
    """Per-call wall times [us] of ``calls`` calls."""
    out = np.empty(calls)
    clock = time.perf_counter
    for i in range(calls):
        start = clock()
        fn()
        out[i] = clock() - start
    return out * 1e6


def measure(num_drones: int, calls: int, rounds: int, workdir: Path) -> dict:
    config = validate({"env": {"num_drones": num_drones}})
    env = make("drone-hover", num_envs=4, seed=0, **config.env.make_kwargs())
    learner = MAPPO(env.obs_dim, env.num_agents, env.single_action_space, config)
    actor = learner.actor.eval()
    obs, _ = env.reset(seed=0)
    actor.obs_rms.update(torch.as_tensor(obs).reshape(-1, env.obs_dim))  # realistic, non-identity statistics
    contract = env_contract(env, "drone-hover", config.env.make_kwargs())
    env.close()
    path = workdir / f"policy_{num_drones}.onnx"
    export_onnx(actor, contract, path, to_metadata(contract), version=0)

    policy = OnnxPolicy(path)
    x = np.ascontiguousarray(obs[0])  # [N, D] float32: one swarm
    feed = {"obs": x, "agent": np.arange(num_drones, dtype=np.int64)}
    session = policy.session
    tx = torch.as_tensor(x)
    with torch.no_grad():
        np.testing.assert_allclose(policy.act(x), actor.deterministic(tx).numpy(), atol=1e-5)

    def torch_eager() -> None:
        with torch.no_grad():
            actor.deterministic(tx)

    variants = {
        "torch_eager": torch_eager,
        "onnxruntime": lambda: session.run(None, feed),
        "onnx_policy": lambda: policy.act(x),
    }
    samples: dict[str, list[np.ndarray]] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up
        timed(fn, 200)
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(timed(fn, calls // rounds))
    stats = {}
    for name, parts in samples.items():
        t = np.concatenate(parts)
        stats[name] = {"p50_us": float(np.median(t)), "p99_us": float(np.percentile(t, 99)), "calls": int(t.size)}
    params = sum(p.numel() for p in actor.parameters() if p.requires_grad) - actor.log_std.numel()
    return {
        "num_agents": num_drones,
        "batch_rows": num_drones,
        "obs_dim": int(x.shape[1]),
        "actor_params": int(params),
        **stats,
        "speedup_p50_onnxruntime": stats["torch_eager"]["p50_us"] / stats["onnxruntime"]["p50_us"],
        "speedup_p50_onnx_policy": stats["torch_eager"]["p50_us"] / stats["onnx_policy"]["p50_us"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--calls", type=int, default=10_000, help="timed calls per variant and swarm size")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds the calls are split into")
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SWARMS:
            records.append(measure(n, args.calls, args.rounds, Path(tmp)))
            r = records[-1]
            print(
                f"{n:2d} agents: torch eager p50 {r['torch_eager']['p50_us']:.1f} us, onnxruntime p50 "
                f"{r['onnxruntime']['p50_us']:.1f} us (p99 {r['onnxruntime']['p99_us']:.1f}), OnnxPolicy.act p50 "
                f"{r['onnx_policy']['p50_us']:.1f} us (p99 {r['onnx_policy']['p99_us']:.1f}); "
                f"speedup {r['speedup_p50_onnxruntime']:.1f}x / {r['speedup_p50_onnx_policy']:.1f}x",
                flush=True,
            )
    single = records[0]
    out = {
        "benchmark": "onnx_latency",
        "sim2real_version": __version__,
        "torch_version": torch.__version__,
        "onnxruntime_version": ort.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": {"torch": torch.get_num_threads(), "onnxruntime_intra_op": 1, "onnxruntime_inter_op": 1},
        "network": "MAPPO default actor: 2x64 tanh, obs normalisation, one-hot agent id, clipped mean",
        "results": records,
        "goals": {
            "p50_at_batch1_us_max": GOAL_P50_US,
            "speedup_min": GOAL_SPEEDUP,
            "p50_at_batch1_met_onnxruntime": single["onnxruntime"]["p50_us"] <= GOAL_P50_US,
            "p50_at_batch1_met_onnx_policy": single["onnx_policy"]["p50_us"] <= GOAL_P50_US,
            "speedup_met_onnxruntime": single["speedup_p50_onnxruntime"] >= GOAL_SPEEDUP,
            "speedup_met_onnx_policy": single["speedup_p50_onnx_policy"] >= GOAL_SPEEDUP,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
