"""ONNX export, the OnnxPolicy runtime, deployment bundles, and evaluating the exported file (real onnxruntime)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from sim2real.cli import app
from sim2real.config import validate
from sim2real.envs import make
from sim2real.eval import evaluate
from sim2real.eval.policies import load_policy
from sim2real.export import BundleError, ContractError, OnnxPolicy, env_contract, exporter, verify_bundle
from sim2real.export.bundle import manifest_digest
from sim2real.export.exporter import ExportError, export_run, parity_check, parity_samples
from sim2real.train import Trainer, load_learner

runner = CliRunner()
NUM_DRONES = 2


def train(run_dir: Path, env: dict, updates: int, **extra) -> Path:
    config = validate(
        {
            "env": {"num_envs": 128, **env},
            "train": {"total_steps": 128 * 16 * updates, "rollout_steps": 16, "lr": 3e-3, "lr_schedule": "constant"},
            "policy": {"hidden": [32, 32]},
            "eval_episodes": 0,
            **extra,
        }
    )
    Trainer.create(config, run_dir, progress=False).train()
    return run_dir


@pytest.fixture(scope="module")
def hover_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-drone velocity-action hover policy trained for 60 updates (about 15 cm from its targets)."""
    return train(tmp_path_factory.mktemp("hover") / "run", {"num_drones": NUM_DRONES}, 60, name="hover2")


@pytest.fixture(scope="module")
def bundle(hover_run: Path) -> Path:
    """The run exported through the command line."""
    out = hover_run.parent / "bundle"
    result = runner.invoke(app, ["export", str(hover_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "parity torch vs onnxruntime" in result.output
    return out


def obs_batch(env_id: str = "drone-hover", envs: int = 5, **kwargs) -> np.ndarray:
    env = make(env_id, num_envs=envs, seed=3, **{"num_drones": NUM_DRONES, **kwargs})
    obs, _ = env.reset()
    for _ in range(10):
        obs, *_ = env.step(np.random.default_rng(0).uniform(-1, 1, env.action_space.shape))
    env.close()
    return obs


# ---------------------------------------------------------------------------------------------- the file
def test_export_is_opset18_ir8_with_dynamic_batch_and_the_contract_in_metadata(bundle: Path) -> None:
    model = onnx.load(str(bundle / "policy.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    # no IR-10 debug metadata (the exporter's stack traces with local paths) is left in the graph
    assert not model.graph.metadata_props and not any(n.metadata_props for n in model.graph.node)
    meta = {p.key: p.value for p in model.metadata_props}
    for key in ("model_version", "run_id", "config_hash", "sim2real_version", "torch_version", "obs_norm_mean"):
        assert meta[key], key
    assert meta["run_id"] == "hover2" and meta["config_hash"].startswith("sha256:")
    assert meta["sim2real.env_id"] == '"drone-hover"'
    assert json.loads(meta["sim2real.env_params"])["num_drones"] == NUM_DRONES
    layout = json.loads(meta["sim2real.obs_layout"])
    env = make("drone-hover", num_drones=NUM_DRONES)
    assert [(f["name"], f["start"], f["size"], f["unit"]) for f in layout] == [
        (f.name, f.start, f.size, f.unit) for f in env.obs_layout
    ]
    assert json.loads(meta["sim2real.action_type"]) == "vel"
    assert json.loads(meta["sim2real.action_low"]) == [-1.0] * 3
    assert json.loads(meta["sim2real.command"])["unit"] == "m/s"
    assert int(meta["model_version"]) == model.model_version == 60

    session = ort.InferenceSession(str(bundle / "policy.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["obs", "agent"]
    assert all(isinstance(i.shape[0], str) for i in session.get_inputs())  # the batch stayed symbolic
    for rows in (1, 3, 7, 300):  # the example had 2 rows
        out = session.run(None, {"obs": np.zeros((rows, env.obs_dim), np.float32), "agent": np.zeros(rows, np.int64)})
        assert out[0].shape == (rows, 3) and out[1].shape == (rows, 3)
    env.close()


def test_normalisation_and_scaling_are_inside_the_graph(bundle: Path, hover_run: Path) -> None:
    learner = load_learner(hover_run).learner
    assert learner.actor.obs_rms.count > 1000  # trained statistics, far from the identity
    obs = obs_batch()
    policy = OnnxPolicy(bundle)
    action, command = policy.run(obs)
    with torch.no_grad():
        expected = learner.actor.deterministic(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(action, expected, atol=1e-5)  # raw observations in, actions out
    np.testing.assert_allclose(command, action, atol=1e-6)  # vel setpoints in m/s; max_speed 1 m/s
    np.testing.assert_allclose(policy.command(obs), command)
    assert np.all(np.abs(action) <= 1.0)
    manifest = json.loads((bundle / "manifest.json").read_text())
    parity = manifest["parity"]
    assert parity["random_max_abs_diff"] <= 1e-5 and parity["recorded_max_abs_diff"] <= 1e-5
    assert parity["recorded_samples"] == 8 * 64 * NUM_DRONES


def test_parity_check_fails_loudly_when_the_file_is_not_the_evaluated_policy(bundle: Path, hover_run: Path) -> None:
    learner, config, *_ = load_learner(hover_run)
    samples = parity_samples(learner.actor, "drone-hover", config.env.make_kwargs(), random_rows=64, envs=2, steps=8)
    policy = OnnxPolicy(bundle / "policy.onnx")
    assert parity_check(learner.actor, policy, samples)["recorded_max_abs_diff"] <= 1e-5
    with torch.no_grad():
        learner.actor.head.bias += 1e-3  # the torch policy changed after export
    with pytest.raises(ExportError, match="parity check failed"):
        parity_check(learner.actor, policy, samples)


def test_commands_in_physical_units_and_discrete_policies_export_argmax(tmp_path: Path, match_cue: str) -> None:
    run = train(tmp_path / "rpm", {"num_drones": 2, "action_type": "rpm"}, 1)
    export_run(run, tmp_path / "rpm-bundle")
    policy = OnnxPolicy(tmp_path / "rpm-bundle", action_type="rpm", num_agents=2)
    env = make("drone-hover", num_drones=2, action_type="rpm")
    spec = env.command_spec()
    assert spec["unit"] == "rpm" and policy.contract["command"] == spec
    obs = obs_batch(num_drones=2, action_type="rpm")
    action, command = policy.run(obs)
    hover = env.model.hover_rpm
    np.testing.assert_allclose(command, hover * (1.0 + env.rpm_range * action), rtol=1e-6)
    env.close()

    run = train(tmp_path / "fast", {"num_drones": 2, "args": {"max_speed": 2.5}}, 1)
    export_run(run, tmp_path / "fast-bundle")
    policy = OnnxPolicy(tmp_path / "fast-bundle")
    action, command = policy.run(obs_batch(num_drones=2, max_speed=2.5))
    np.testing.assert_allclose(command, 2.5 * action, rtol=1e-6)  # velocity setpoints [m/s]

    run = train(tmp_path / "toy", {"name": match_cue, "num_drones": 2, "action_type": None}, 20, policy={})
    export_run(run, tmp_path / "toy-bundle")
    toy = OnnxPolicy(tmp_path / "toy-bundle")
    assert toy.discrete and not toy.has_command
    cues = np.eye(3, dtype=np.float32)[[[0, 1], [2, 0], [1, 1]]]
    chosen = toy.act(cues)
    assert chosen.shape == (3, 2) and chosen.dtype == np.int64
    np.testing.assert_array_equal(chosen, load_learner(run).learner.policy()(cues))
    assert not (tmp_path / "toy-bundle" / "policy_node.yaml").exists()  # no robot, no ROS 2 node parameters
    with pytest.raises(ContractError, match="no physical command output"):
        toy.command(cues)


# ---------------------------------------------------------------------------------------------- runtime
def test_onnx_policy_batches_and_takes_agent_ids(bundle: Path) -> None:
    policy = OnnxPolicy(bundle / "policy.onnx")
    obs = obs_batch()
    batched = policy.act(obs)
    assert batched.shape == (5, NUM_DRONES, 3) and batched.dtype == np.float32
    np.testing.assert_allclose(policy.act(obs[2]), batched[2], atol=1e-7)
    # a robot running its own copy of the policy passes its own index
    np.testing.assert_allclose(policy.act(obs[2, 1:2], agent_ids=[1]), batched[2, 1:2], atol=1e-7)
    # the agent id matters: the same observation as agent 0 gives another action
    assert not np.allclose(policy.act(obs[2, 1:2], agent_ids=[0]), batched[2, 1:2])
    with pytest.raises(ValueError, match=r"obs must be \[num_agents"):
        policy.act(obs[..., :-1])
    with pytest.raises(ValueError, match="pass agent_ids"):
        policy.act(obs[:, :1])
    with pytest.raises(ValueError, match="agent_ids must be"):
        policy.act(obs[0, :1], agent_ids=[NUM_DRONES])


def test_onnx_policy_refuses_a_contract_mismatch(bundle: Path) -> None:
    path = bundle / "policy.onnx"
    with pytest.raises(ContractError, match=r"env_id: .* has 'drone-hover', the caller declares 'drone-navigation'"):
        OnnxPolicy(path, env_id="drone-navigation")
    with pytest.raises(ContractError, match="num_agents"):
        OnnxPolicy(path, num_agents=4)
    with pytest.raises(ContractError, match="action_type"):
        OnnxPolicy(path, action_type="rpm")
    other = make("drone-hover", num_drones=NUM_DRONES, num_neighbors=0)
    layout_error = r"obs_layout: field 7 \('nbr_rel_pos'\): the policy has size=3, the caller declares 0"
    with pytest.raises(ContractError, match=layout_error):
        OnnxPolicy(path, obs_layout=other.obs_layout)
    policy = OnnxPolicy(path, env_id="drone-hover", num_agents=NUM_DRONES, action_type="vel")
    with pytest.raises(ContractError, match="obs_dim"):
        policy.check_env(other, "drone-hover")
    faster = make("drone-hover", num_drones=NUM_DRONES, max_speed=2.0)
    with pytest.raises(ContractError, match="command"):  # same shapes, different command units
        policy.check_env(faster, "drone-hover")
    same = make("drone-hover", num_drones=NUM_DRONES)
    policy.check_env(same, "drone-hover")
    # a declared layout may name fewer keys per field; only those are compared
    policy.check(obs_layout=[{"name": f.name, "start": f.start, "size": f.size} for f in same.obs_layout])
    with pytest.raises(ContractError, match="unknown contract key"):
        policy.check(num_drones=NUM_DRONES)
    for env in (other, faster, same):
        env.close()


def test_onnx_policy_rejects_files_that_are_not_sim2real_policies(bundle: Path, tmp_path: Path) -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["obs"], ["action"])],
        "plain",
        [onnx.helper.make_tensor_value_info("obs", onnx.TensorProto.FLOAT, ["batch", 4])],
        [onnx.helper.make_tensor_value_info("action", onnx.TensorProto.FLOAT, ["batch", 4])],
    )
    plain = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    plain.ir_version = 8
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(ContractError, match="is not a sim2real policy"):
        OnnxPolicy(tmp_path / "plain.onnx")

    model = onnx.load(str(bundle / "policy.onnx"))
    kept = [p for p in model.metadata_props if p.key != "sim2real.obs_layout"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "partial.onnx"))
    with pytest.raises(ContractError, match=r"lacks the metadata key\(s\) \['sim2real.obs_layout'\]"):
        OnnxPolicy(tmp_path / "partial.onnx")

    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ContractError, match="not a loadable ONNX model"):
        OnnxPolicy(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError):
        OnnxPolicy(tmp_path / "missing.onnx")


# ---------------------------------------------------------------------------------------------- bundles
def test_bundle_holds_hashes_contract_node_parameters_and_verifies(bundle: Path) -> None:
    manifest = verify_bundle(bundle)
    assert set(manifest["files"]) == {"policy.onnx", "policy_node.yaml"}
    assert manifest["contract"]["num_agents"] == NUM_DRONES
    assert manifest["provenance"]["checkpoint"] == "update_000060.pt"
    assert manifest["versions"]["opset"] == "18"
    params = (bundle / "policy_node.yaml").read_text()
    assert "env_id: drone-hover" in params and "rate_hz: 30.0" in params and "- cf2" in params
    env = make("drone-hover", num_drones=NUM_DRONES)
    verify_bundle(bundle, env_contract(env, "drone-hover"))
    env.close()
    assert OnnxPolicy(bundle).manifest == manifest


def rewrite_manifest(bundle: Path, edit, *, redigest: bool) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    if redigest:
        manifest["manifest_sha256"] = manifest_digest(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


DAMAGE = {
    "changed byte": "policy.onnx differs from the manifest",
    "missing file": "policy_node.yaml is listed in the manifest but missing",
    "extra file": r"does not list: \['notes.txt'\]",
    "edited manifest": "was edited after export",
    "re-digested contract": "(?s)do not belong together .*obs_layout: field 0 .*unit='m', the caller declares 'cm'",
    "re-digested provenance": r"do not belong together .*provenance \['run_id'\] differs",
    "malformed manifest": "files entry 'policy.onnx' must be a plain file name with sha256 and bytes",
    "declared": "num_agents: .* has 2, the caller declares 8",
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_bundle_verification_rejects_a_damaged_or_incompatible_bundle(bundle: Path, tmp_path: Path, damage: str):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    declared = None
    if damage == "changed byte":
        data = bytearray((copy / "policy.onnx").read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / "policy.onnx").write_bytes(bytes(data))
    elif damage == "missing file":
        (copy / "policy_node.yaml").unlink()
    elif damage == "extra file":
        (copy / "notes.txt").write_text("hi")
    elif damage == "edited manifest":
        rewrite_manifest(copy, lambda m: m["provenance"].update(checkpoint="update_999999.pt"), redigest=False)
    elif damage == "re-digested contract":
        rewrite_manifest(copy, lambda m: m["contract"]["obs_layout"][0].update(unit="cm"), redigest=True)
    elif damage == "re-digested provenance":
        rewrite_manifest(copy, lambda m: m["provenance"].update(run_id="another"), redigest=True)
    elif damage == "malformed manifest":
        rewrite_manifest(copy, lambda m: m["files"].update({"policy.onnx": "abc"}), redigest=True)
    else:
        declared = {"num_agents": 8}
    with pytest.raises(BundleError, match=DAMAGE[damage]):
        verify_bundle(copy, declared)
    if damage != "declared":
        with pytest.raises(BundleError):
            OnnxPolicy(copy)
        result = runner.invoke(app, ["bundle", "verify", str(copy)])
        assert result.exit_code == 1 and "REJECTED" in result.output


def test_cli_bundle_verify_prints_the_contract_and_checks_a_robot_configuration(bundle: Path) -> None:
    result = runner.invoke(app, ["bundle", "verify", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "rel_target[3] m" in result.output and "vx, vy, vz in m/s" in result.output
    for option, value, reason in [
        ("--num-drones", "5", "num_agents"),
        ("--action-type", "rpm", "action_type"),
        ("--env", "drone-formation", "env_id"),
    ]:
        result = runner.invoke(app, ["bundle", "verify", str(bundle), option, value])
        assert result.exit_code == 1 and reason in result.output, result.output
    result = runner.invoke(app, ["bundle", "verify", str(bundle), "--num-drones", str(NUM_DRONES)])
    assert result.exit_code == 0, result.output


def test_export_refuses_bad_destinations_and_replaces_a_bundle_atomically(
    bundle: Path, hover_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = runner.invoke(app, ["export", str(bundle), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "not a run directory" in result.output
    result = runner.invoke(app, ["export", str(hover_run), "--out", str(bundle)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    for out, reason in [(hover_run, "would replace the run directory"), (Path("."), "the working directory")]:
        result = runner.invoke(app, ["export", str(hover_run), "--out", str(out), "--overwrite"])
        assert result.exit_code == 2 and reason in result.output, result.output
    other = tmp_path / "notes"
    other.mkdir()
    (other / "manifest.json").write_text("{}")
    result = runner.invoke(app, ["export", str(hover_run), "--out", str(other), "--overwrite"])
    assert result.exit_code == 2 and "is not a bundle" in result.output and (other / "manifest.json").exists()
    stranger = tmp_path / "ckpt.pt"
    shutil.copy(next((hover_run / "checkpoints").iterdir()), stranger)
    result = runner.invoke(app, ["export", str(hover_run), "--checkpoint", str(stranger)])
    assert result.exit_code == 2 and "is not one of" in result.output

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    before = (copy / "manifest.json").read_text()
    monkeypatch.setattr(exporter, "PARITY_TOLERANCE", 0.0)  # any rounding difference now fails the export
    with pytest.raises(ExportError, match="parity check failed"):
        export_run(hover_run, copy, overwrite=True)
    assert (copy / "manifest.json").read_text() == before and verify_bundle(copy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "ckpt.pt", "notes"]  # no temporary left
    monkeypatch.undo()
    manifest = export_run(hover_run, copy, overwrite=True)
    assert manifest["created"] >= json.loads(before)["created"] and verify_bundle(copy) == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "ckpt.pt", "notes"]


# ---------------------------------------------------------------------------------------------- evaluation
def test_exported_file_evaluates_like_the_torch_policy(bundle: Path, hover_run: Path, tmp_path: Path) -> None:
    torch_policy, onnx_policy = load_policy(hover_run), load_policy(bundle / "policy.onnx")
    assert (torch_policy.kind, onnx_policy.kind) == ("torch", "onnx")
    assert onnx_policy.env_kwargs == torch_policy.env_kwargs
    results = {}
    for name, loaded in (("torch", torch_policy), ("onnx", onnx_policy)):
        out = tmp_path / name
        source = hover_run if name == "torch" else bundle / "policy.onnx"
        result = runner.invoke(app, ["eval", str(source), "--episodes", "8", "--no-progress", "--out", str(out)])
        assert result.exit_code == 0, result.output
        results[name] = json.loads((out / "results.json").read_text())["families"]["clean"]["clean"]["batched"]
        direct = evaluate(loaded.act, loaded.env_id, loaded.env_kwargs, episodes=8, seed=10_000).summary()
        assert direct["mean_return"] == results[name]["mean_return"]
    a, b = results["torch"], results["onnx"]
    # per-step actions agree to 1e-6; over 240 closed-loop steps the difference grows, but stays tiny
    assert abs(a["mean_return"] - b["mean_return"]) <= 2e-3 * abs(a["mean_return"])
    assert abs(a["mean_position_error_m"] - b["mean_position_error_m"]) <= 1e-3
    assert (a["collisions"], a["crashes"]) == (b["collisions"], b["crashes"])


def test_eval_rejects_gradient_attacks_on_an_exported_file_but_runs_other_perturbations(bundle: Path, tmp_path):
    result = runner.invoke(app, ["eval", str(bundle), "--perturb", "adv.fgsm(eps=0.1)", "--no-progress"])
    assert result.exit_code == 2 and "evaluate the run directory instead" in result.output
    out = tmp_path / "noise"
    args = ["eval", str(bundle), "--episodes", "4", "--no-progress", "--out", str(out)]
    result = runner.invoke(app, [*args, "--perturb", "obs.gaussian(std=0.3)"])
    assert result.exit_code == 0, result.output
    families = json.loads((out / "results.json").read_text())["families"]
    perturbed, clean = families["obs_noise"]["perturbed"]["batched"], families["clean"]["clean"]["batched"]
    assert perturbed["mean_position_error_m"] > clean["mean_position_error_m"]
    assert (out / "report.md").is_file()
    # the quick suite on the exported file skips the gradient attack with the reason, and runs the rest
    result = runner.invoke(
        app,
        ["eval", str(bundle), "--suite", "quick", "--episodes", "2", "--no-progress", "--out", str(tmp_path / "quick")],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "quick" / "results.json").read_text())
    assert "evaluate the run directory instead" in record["families"]["attack"]["fgsm-0.1"]["skipped"]
    assert "batched" in record["families"]["timing"]["obs-delay-1"]
    result = runner.invoke(app, ["eval", str(tmp_path / "nothing"), "--no-progress"])
    assert result.exit_code == 2 and "does not exist" in result.output
