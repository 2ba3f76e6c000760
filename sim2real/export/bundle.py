"""Deployment bundles: ``policy.onnx``, ``manifest.json`` and the ROS 2 policy node's parameter file.

The manifest holds its own digest, the sha256 and size of every other file in the bundle, the policy
contract, provenance (run, checkpoint, config hash), versions, the export-time parity check and a summary
of the evaluation results when the run has them. :func:`verify_bundle` rejects a bundle with a changed
byte (in any file, the manifest included), a missing or an unlisted file, or a contract or provenance that
differs between the manifest, the model and what the caller declares.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from sim2real.export.contract import ContractError, check_contract, from_metadata
from sim2real.export.runtime import open_session

POLICY_FILE = "policy.onnx"
MANIFEST_FILE = "manifest.json"
NODE_PARAMS_FILE = "policy_node.yaml"
BUNDLE_FORMAT = "sim2real-bundle"
BUNDLE_VERSION = 1


class BundleError(ValueError):
    """A deployment bundle failed verification; the message says which file or key and why."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def node_parameters(contract: dict[str, Any]) -> dict[str, Any]:
    """ROS 2 parameters (``/**: ros__parameters``) of the ``s2r_ros`` policy node serving this policy.

    ``env_id``, ``num_agents`` and ``action_type`` are checked against the bundle when the node starts; the
    robots are ``cf1..cfN``; the stale timeout is three control periods. The bundle directory itself is the
    node's ``bundle`` parameter, given where the bundle is installed.
    """
    n = int(contract["num_agents"])
    rate = float(contract["ctrl_freq_hz"] or 30.0)
    action_type = contract["action_type"]
    params = {
        "env_id": contract["env_id"],
        "num_agents": n,
        "action_type": action_type,
        "robots": [f"cf{i + 1}" for i in range(n)],
        "rate_hz": rate,
        "stale_timeout_s": round(3.0 / rate, 6),
        "state_topic": "odom",
        "command_topic": "cmd_rpm" if action_type == "rpm" else "cmd_vel",
    }
    return {"/**": {"ros__parameters": params}}


def write_bundle_files(
    directory: Path,
    *,
    contract: dict[str, Any],
    provenance: dict[str, Any],
    versions: dict[str, Any],
    parity: dict[str, Any],
    evaluation: dict[str, Any] | None,
    created: str,
) -> dict[str, Any]:
    """Write the node parameters (robot envs only) and ``manifest.json`` beside ``policy.onnx``; return the manifest."""
    if contract["command"] is not None:
        params = "# ROS 2 parameters of the s2r_ros policy node for this bundle (add -p bundle:=<this directory>)\n"
        params += yaml.safe_dump(node_parameters(contract), sort_keys=False)
        (directory / NODE_PARAMS_FILE).write_text(params)
    files = {}
    for path in sorted(directory.iterdir()):
        if path.name != MANIFEST_FILE:
            files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "created": created,
        "files": files,
        "contract": contract,
        "provenance": provenance,
        "versions": versions,
        "parity": parity,
        "evaluation": evaluation,
    }
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest as canonical JSON (sorted keys, no spaces), without its own digest entry."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify_bundle(directory: str | Path, declared: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check a bundle's integrity and contract; returns its manifest, raises BundleError with the reason.

    Checks: the manifest is a sim2real bundle manifest of this format version and matches its own digest;
    every listed file exists with the listed size and sha256 and no other file is there; ``policy.onnx`` loads
    and its metadata (contract and provenance) equals the manifest's; the contract fits ``declared``.
    This detects damaged, edited or mixed-up bundles; it is not a signature (anyone can re-export one).

    Args:
        directory: the bundle directory.
        declared: contract keys the target expects (``env_id``, ``num_agents``, ``obs_layout``...); any
            difference from the bundle's contract rejects the bundle.
    """
    directory = Path(directory)
    manifest = _read_manifest(directory)
    files = manifest["files"]
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{name} is listed in the manifest but missing from {directory}")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise BundleError(
                f"{name} differs from the manifest (sha256 or size changed after export): the bundle was modified "
                "or damaged; re-export it or copy it again"
            )
    extra = sorted(p.name for p in directory.iterdir() if p.name != MANIFEST_FILE and p.name not in files)
    if extra:
        raise BundleError(f"{directory} holds file(s) the manifest does not list: {extra}; remove them or re-export")
    try:
        meta = dict(open_session(directory / POLICY_FILE).get_modelmeta().custom_metadata_map)
        contract = manifest["contract"]
        model_contract = from_metadata(meta, source=POLICY_FILE)
        check_contract(model_contract, contract, source=POLICY_FILE)
        if model_contract["env_params"] != contract["env_params"]:
            raise ContractError("env_params differ")
        prov = manifest["provenance"]
        recorded = {"run_id": prov.get("run_id"), "model_version": str(prov.get("model_version"))}
        recorded |= {"config_hash": prov.get("config_hash"), "created": manifest.get("created")}
        differ = sorted(k for k, v in recorded.items() if meta.get(k) != v)
        if differ:
            raise ContractError(f"provenance {differ} differs")
    except (ContractError, KeyError, TypeError, AttributeError) as err:
        raise BundleError(f"{MANIFEST_FILE} and {POLICY_FILE} do not belong together ({err}); re-export") from err
    if declared:
        try:
            check_contract(contract, declared, source=f"bundle {directory}")
        except ContractError as err:
            raise BundleError(str(err)) from err
    return manifest


def _read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest, checked for format, version, digest and structure."""
    if not directory.is_dir():
        raise BundleError(f"{directory} is not a directory; a bundle is the directory `sim2real export` wrote")
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{directory} has no {MANIFEST_FILE}: not a bundle (export one with `sim2real export`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path} is not valid JSON ({err}): the manifest was damaged") from err
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not a sim2real bundle manifest (format is not {BUNDLE_FORMAT!r})")
    if manifest.get("format_version") != BUNDLE_VERSION:
        raise BundleError(
            f"{path} has bundle format version {manifest.get('format_version')}; this sim2real reads "
            f"version {BUNDLE_VERSION}: re-export the policy"
        )
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise BundleError(f"{path} was edited after export (its digest does not match); re-export the bundle")
    files = manifest.get("files")
    if not isinstance(files, dict) or POLICY_FILE not in files:
        raise BundleError(f"{path} does not list {POLICY_FILE} in its 'files' section")
    for name, entry in files.items():
        plain = isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..")
        if not plain or not isinstance(entry, dict) or not {"sha256", "bytes"} <= set(entry):
            raise BundleError(f"{path}: files entry {name!r} must be a plain file name with sha256 and bytes")
    if not isinstance(manifest.get("contract"), dict) or not isinstance(manifest.get("provenance"), dict):
        raise BundleError(f"{path} lacks its 'contract' or 'provenance' section")
    return manifest
