"""Export a trained run's deterministic actor to ONNX, check it against torch, and write the deployment bundle.

Export settings (``../shared/research/marl-stack.md`` section 2): the dynamo exporter at opset 18 with the IR version
lowered to 8, so onnxruntime 1.16 and newer load the file; an example batch of at least 2 rows and a check that
the batch dimension stayed symbolic (the exporter silently specialises batch-1 examples); normalisation, the
agent id and action scaling are inside the graph; the contract is in the model's metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sim2real import __version__
from sim2real.envs import make
from sim2real.export.bundle import BUNDLE_FORMAT, MANIFEST_FILE, POLICY_FILE, verify_bundle, write_bundle_files
from sim2real.export.contract import env_contract, to_metadata
from sim2real.export.runtime import ACTION_OUTPUT, AGENT_INPUT, COMMAND_OUTPUT, OBS_INPUT, OnnxPolicy, open_session
from sim2real.train.networks import Actor

OPSET = 18
IR_VERSION = 8
PARITY_TOLERANCE = 1e-5
MAX_BATCH = 1 << 20


class ExportError(RuntimeError):
    """The export failed: the file would not be what was evaluated, or the run cannot be exported."""


class DeployActor(nn.Module):
    """The deterministic actor as deployed: ``obs [B, D]`` (and ``agent [B]`` int64) to actions.

    ``action = clip(head(body([clip((obs - mean) / std, ±c), onehot(agent)])), low, high)``, exactly
    ``Actor.deterministic`` on the same rows, and ``command = clip(offset + scale * action, cmd_low, cmd_high)``
    (the env's ``command_spec``). Discrete actors output the most likely index.
    """

    def __init__(self, actor: Actor, command: dict[str, Any] | None) -> None:
        super().__init__()
        self.body, self.head = actor.body, actor.head
        self.discrete, self.agent_id = actor.discrete, actor.agent_id
        self.use_obs_norm = actor.use_obs_norm
        self.clip = actor.obs_rms.clip
        self.register_buffer("mean", actor.obs_rms.mean.float().clone())
        self.register_buffer("std", actor.obs_rms.std.clone())
        self.register_buffer("eye", torch.eye(actor.num_agents))
        if not self.discrete:
            self.register_buffer("low", actor.low.clone())
            self.register_buffer("high", actor.high.clone())
        self.has_command = command is not None and not self.discrete
        if self.has_command:
            for key in ("scale", "offset", "low", "high"):
                self.register_buffer(f"cmd_{key}", torch.tensor(command[key], dtype=torch.float32))

    def forward(self, obs: torch.Tensor, agent: torch.Tensor | None = None) -> Any:
        x = obs
        if self.use_obs_norm:
            x = (x - self.mean) / self.std
            if self.clip is not None:
                x = torch.clamp(x, -self.clip, self.clip)
        if self.agent_id:
            x = torch.cat([x, self.eye[agent]], dim=-1)
        out = self.head(self.body(x))
        if self.discrete:
            return out.argmax(-1)
        action = torch.maximum(torch.minimum(out, self.high), self.low)
        if not self.has_command:
            return action
        command = torch.maximum(torch.minimum(self.cmd_offset + self.cmd_scale * action, self.cmd_high), self.cmd_low)
        return action, command


def export_onnx(actor: Actor, contract: dict[str, Any], path: Path, metadata: dict[str, str], version: int) -> None:
    """Write ``actor`` as an ONNX file at ``path`` (opset 18, IR 8, dynamic batch) with ``metadata``.

    Raises ExportError when the batch dimension did not stay dynamic or ``onnx.checker`` rejects the model.
    """
    import onnx

    module = DeployActor(actor, contract["command"]).eval()
    rows = max(2, actor.num_agents)  # batch >= 2: a batch-1 example is silently specialised
    example: tuple[torch.Tensor, ...] = (torch.zeros(rows, actor.obs_dim),)
    inputs = [OBS_INPUT]
    if actor.agent_id:
        example += (torch.arange(rows) % actor.num_agents,)
        inputs.append(AGENT_INPUT)
    outputs = [ACTION_OUTPUT] + ([COMMAND_OUTPUT] if module.has_command else [])
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with _quiet_exporter():
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=tuple({0: batch} for _ in example),
            optimize=True,
            verbose=False,
        )
        program.save(str(path))
    model = onnx.load(str(path))
    _strip_debug_metadata(model)
    model.ir_version = IR_VERSION
    onnx.helper.set_model_props(model, metadata)
    model.producer_name = "sim2real"
    model.producer_version = __version__
    model.model_version = version
    model.doc_string = f"sim2real policy for {contract['env_id']} ({contract['num_agents']} agents)"
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"onnx.checker rejects the exported model: {err}") from err
    onnx.save(model, str(path))
    static = [i.name for i in open_session(path).get_inputs() if not isinstance(i.shape[0], str)]
    if static:
        raise ExportError(f"the batch dimension of input(s) {static} was specialised to a fixed size during export")


def parity_check(actor: Actor, policy: OnnxPolicy, samples: dict[str, np.ndarray]) -> dict[str, Any]:
    """Torch ``Actor.deterministic`` against onnxruntime on each sample set ``[B, N, D]``.

    Returns the max abs action difference per set (and of the command against the affine map of the torch
    action); raises ExportError when a difference exceeds 1e-5, or when a discrete action differs where
    torch's two best logits are more than 1e-5 apart.
    """
    report: dict[str, Any] = {"tolerance": PARITY_TOLERANCE}
    command = policy.contract["command"]
    for name, obs in samples.items():
        with torch.no_grad():
            expected = actor.deterministic(torch.as_tensor(obs)).numpy()
        action, cmd = policy.run(obs)
        if policy.discrete:
            with torch.no_grad():
                logits = actor.head(actor.body(actor.features(torch.as_tensor(obs)))).numpy()
            top2 = np.sort(logits, axis=-1)[..., -2:]
            clear = top2[..., 1] - top2[..., 0] > PARITY_TOLERANCE  # near-ties may flip on rounding alone
            diff = float(np.count_nonzero((action != expected) & clear))
            report[f"{name}_mismatched_actions"] = int(diff)
        else:
            diff = float(np.max(np.abs(action.astype(np.float64) - expected)))
            report[f"{name}_max_abs_diff"] = diff
        report[f"{name}_samples"] = int(obs.shape[0] * obs.shape[1])
        if diff > PARITY_TOLERANCE:
            raise ExportError(
                f"parity check failed on {name} observations: onnxruntime differs from torch by {diff:.3g} "
                f"(tolerance {PARITY_TOLERANCE}); the file would not be the policy that was evaluated"
            )
        if cmd is not None:
            scale, offset = np.asarray(command["scale"]), np.asarray(command["offset"])
            want = np.clip(offset + scale * expected, command["low"], command["high"])
            cmd_diff = float(np.max(np.abs(cmd - want) / (np.abs(offset) + scale)))
            report[f"{name}_command_max_rel_diff"] = cmd_diff
            if cmd_diff > PARITY_TOLERANCE:
                raise ExportError(f"parity check failed on {name} commands: relative difference {cmd_diff:.3g}")
    return report


def parity_samples(
    actor: Actor,
    env_id: str,
    env_kwargs: dict[str, Any],
    *,
    random_rows: int = 1024,
    envs: int = 8,
    steps: int = 64,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Observation sets ``[B, N, D]`` float32 for the parity check.

    ``random``: Gaussian around the normaliser's mean with twice its spread, plus one row in eight pushed to
    ±50 standard deviations (exercises the clip). ``recorded``: the observations the deterministic policy
    meets flying ``envs`` envs of the batched backend for ``steps`` control steps.
    """
    rng = np.random.default_rng(seed)
    n, d = actor.num_agents, actor.obs_dim
    mean = actor.obs_rms.mean.numpy().astype(np.float32)
    std = actor.obs_rms.std.numpy()
    z = rng.standard_normal((random_rows, n, d)).astype(np.float32) * 2.0
    z[::8] *= 25.0
    random = mean + std * z
    env = make(env_id, num_envs=envs, seed=seed, **env_kwargs)
    recorded = []
    try:
        obs, _ = env.reset(seed=seed)
        for _ in range(steps):
            recorded.append(np.asarray(obs, dtype=np.float32))
            with torch.no_grad():
                action = actor.deterministic(torch.as_tensor(recorded[-1])).numpy()
            obs, *_ = env.step(action)
    finally:
        env.close()
    return {"random": random.astype(np.float32), "recorded": np.concatenate(recorded)}


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a run's policy (latest checkpoint unless given) as a verified bundle in ``out``; returns the manifest.

    The bundle is assembled in a temporary directory next to ``out`` and moved into place only after the
    parity check and the bundle verification pass; an existing bundle (``overwrite``) is swapped out
    atomically, so a failed or interrupted export leaves the previous bundle as it was.
    """
    from sim2real.train.runner import RunError, load_learner

    run_dir, out = Path(run_dir), Path(out)
    try:
        loaded = load_learner(run_dir, checkpoint)
    except RunError as err:
        raise ExportError(str(err)) from err
    _check_destination(run_dir, out, overwrite)
    actor, config = loaded.learner.actor.eval(), loaded.config
    env_kwargs = config.env.make_kwargs()
    env = make(config.env.name, num_envs=1, **env_kwargs)
    try:
        contract = env_contract(env, config.env.name, env_kwargs)
    finally:
        env.close()
    config_json = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    provenance = {
        "run_id": config.name or run_dir.resolve().name,
        "run_dir": str(run_dir),
        "checkpoint": loaded.checkpoint.name,
        "model_version": loaded.update,
        "env_steps": loaded.env_steps,
        "config_hash": "sha256:" + hashlib.sha256(config_json.encode()).hexdigest(),
        "algo": config.algo,
        "seed": config.seed,
    }
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    norm = actor.obs_rms
    metadata = {
        **to_metadata(contract),
        "model_version": str(loaded.update),
        "run_id": provenance["run_id"],
        "config_hash": provenance["config_hash"],
        "created": created,
        "sim2real_version": __version__,
        "torch_version": torch.__version__,
        "normalization_baked_in": json.dumps(bool(actor.use_obs_norm)),
        "obs_norm_mean": json.dumps(norm.mean.float().tolist()),
        "obs_norm_std": json.dumps(norm.std.tolist()),
        "obs_clip": json.dumps(norm.clip),
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    backup = out.parent / f".{out.name}.previous-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        export_onnx(actor, contract, tmp / POLICY_FILE, metadata, loaded.update)
        policy = OnnxPolicy(tmp / POLICY_FILE, declared=contract)
        parity = parity_check(actor, policy, parity_samples(actor, config.env.name, env_kwargs, seed=config.seed))
        manifest = write_bundle_files(
            tmp,
            contract=contract,
            provenance=provenance,
            versions=_versions(),
            parity=parity,
            evaluation=_evaluation_summary(run_dir, loaded.checkpoint.name, loaded.update),
            created=created,
        )
        verify_bundle(tmp)
        if out.exists():
            os.replace(out, backup)
        try:
            os.replace(tmp, out)
        except OSError:
            if backup.exists():
                os.replace(backup, out)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _check_destination(run_dir: Path, out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that is a file, holds the run or the working directory, or is a non-empty non-bundle."""
    target = out.resolve()
    for inside, what in ((run_dir.resolve(), "the run directory"), (Path.cwd().resolve(), "the working directory")):
        if target == inside or target in inside.parents:
            raise ExportError(f"--out {out} would replace {what}; choose a new directory such as RUN/export")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; choose a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ExportError(f"{out} exists and is not empty; pass --overwrite to replace the bundle in it")
    try:
        listed = set(json.loads((out / MANIFEST_FILE).read_text()).get("files", {}))
        is_bundle = json.loads((out / MANIFEST_FILE).read_text()).get("format") == BUNDLE_FORMAT
    except (OSError, ValueError, AttributeError):
        listed, is_bundle = set(), False
    if not is_bundle or {p.name for p in out.iterdir()} - listed - {MANIFEST_FILE}:
        raise ExportError(f"{out} is not a bundle (or holds other files); refusing to overwrite it")


def _evaluation_summary(run_dir: Path, checkpoint: str, update: int) -> dict[str, Any] | None:
    """The run's evaluation results of exactly this checkpoint: the end-of-training eval, ``eval/results.json``."""
    found: dict[str, Any] = {}
    summary = _read_json(run_dir / "summary.json")
    if summary.get("eval") and summary.get("updates") == update:
        found["training_eval"] = summary["eval"]
    results = _read_json(run_dir / "eval" / "results.json")
    if results.get("policy", {}).get("checkpoint") == checkpoint and "families" in results:
        keep = ("created", "backends", "episodes", "seed", "family_ratio")
        found["eval"] = {
            "suite": results["suite"]["name"],
            "clean": results["families"]["clean"].get("clean"),
            **{k: results[k] for k in keep if k in results},
        }
    return found or None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or {} when the file is missing or unreadable (evaluation notes are optional)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _strip_debug_metadata(model: Any) -> None:
    """Drop the exporter's per-node and per-graph debug metadata (stack traces with local paths; IR 10 fields)."""
    del model.graph.metadata_props[:]
    for node in model.graph.node:
        del node.metadata_props[:]
    for info in (*model.graph.value_info, *model.graph.input, *model.graph.output, *model.graph.initializer):
        del info.metadata_props[:]


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime as ort

    return {
        "sim2real": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "opset": str(OPSET),
        "ir_version": str(IR_VERSION),
    }


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the dynamo exporter's progress prints and its warnings about optional packages."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
