"""The policy contract: what an exported policy expects to be fed and what it outputs.

The contract is a JSON-ready dict built from an env (:func:`env_contract`). It is stored in the ONNX model's
metadata (:func:`to_metadata`, one ``sim2real.<key>`` entry per key, JSON-encoded strings) and in the bundle
manifest, and it is compared with what a caller declares (:func:`check_contract`) before a policy runs.

Keys:
    env_id: registered env name, e.g. ``drone-hover``.
    env_params: the ``make`` arguments the policy was trained with (drone count, neighbours, action type...).
    num_agents: N, agents per env (the size of the one-hot agent id).
    obs_dim: D, per-agent observation size.
    obs_layout: ``[{name, start, size, unit, sensor}]`` slices of the observation vector.
    action_type: ``vel`` / ``rpm`` for the drones, ``discrete`` or ``box`` for other envs.
    action_dim: A, action components (the number of choices for ``discrete``).
    action_low, action_high: bounds of the ``action`` output (None for ``discrete``).
    command: ``{names, unit, scale, offset, low, high}``: the ``command`` output in physical units,
        ``clip(offset + scale * action, low, high)``; None when the env has no physical command.
    ctrl_freq_hz: the control rate the policy was trained at (None when the env has none).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

FORMAT = "sim2real-policy"
FORMAT_VERSION = 1
METADATA_PREFIX = "sim2real."
CONTRACT_KEYS = (
    "env_id",
    "env_params",
    "num_agents",
    "obs_dim",
    "obs_layout",
    "action_type",
    "action_dim",
    "action_low",
    "action_high",
    "command",
    "ctrl_freq_hz",
)
LAYOUT_KEYS = ("name", "start", "size", "unit", "sensor")


class ContractError(ValueError):
    """A policy file or bundle does not match what the caller declares, or is not a sim2real policy."""


def env_contract(env: Any, env_id: str, env_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract of a policy acting in ``env`` (a batched sim2real env) registered as ``env_id``."""
    space = env.single_action_space
    discrete = hasattr(space, "n") and not hasattr(space, "low")
    if discrete:
        action_type, action_dim, low, high = "discrete", int(space.n), None, None
    else:
        action_type = getattr(env, "action_type", "box")
        action_dim, low, high = int(space.shape[0]), _floats(space.low), _floats(space.high)
    command = env.command_spec() if hasattr(env, "command_spec") else None
    freq = getattr(env, "ctrl_freq", None)
    return {
        "env_id": env_id,
        "env_params": json.loads(json.dumps(env_params or {})),
        "num_agents": int(env.num_agents),
        "obs_dim": int(env.obs_dim),
        "obs_layout": normalize_layout(getattr(env, "obs_layout", None), int(env.obs_dim)),
        "action_type": action_type,
        "action_dim": action_dim,
        "action_low": low,
        "action_high": high,
        "command": None
        if command is None
        else {k: _floats(v) if k not in ("names", "unit") else v for k, v in command.items()},
        "ctrl_freq_hz": None if freq is None else float(freq),
    }


def normalize_layout(layout: Any, obs_dim: int) -> list[dict[str, Any]]:
    """An observation layout as ``[{name, start, size, unit, sensor}]`` from env ``ObsField``s or dicts.

    An env without a layout gets one field ``obs`` covering the whole vector.
    """
    if layout is None:
        return [{"name": "obs", "start": 0, "size": int(obs_dim), "unit": "-", "sensor": "-"}]
    return [{k: ("-" if v is None else v) for k, v in entry.items()} for entry in _layout_entries(layout, LAYOUT_KEYS)]


def _layout_entries(layout: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """``[{key: value}]`` for the layout fields (ObsField objects or dicts); missing keys of dicts are dropped."""
    if isinstance(layout, (str, bytes, dict)) or not hasattr(layout, "__iter__"):
        raise ContractError(f"an observation layout is a list of fields, got {type(layout).__name__}")
    out = []
    for field in layout:
        if isinstance(field, dict):
            entry = {k: field[k] for k in keys if k in field}
        else:
            entry = {k: getattr(field, k, None) for k in keys}
        if any(entry.get(k) is None for k in ("name", "start", "size")):
            raise ContractError(f"observation layout field {field!r} needs a name, start and size")
        try:
            entry["start"], entry["size"] = int(entry["start"]), int(entry["size"])
        except (TypeError, ValueError) as err:
            raise ContractError(f"observation layout field {field!r}: start and size must be integers") from err
        out.append(entry)
    return out


def to_metadata(contract: dict[str, Any]) -> dict[str, str]:
    """ONNX metadata entries (string to string) for a contract, with the format marker."""
    meta = {f"{METADATA_PREFIX}format": FORMAT, f"{METADATA_PREFIX}format_version": str(FORMAT_VERSION)}
    meta.update({f"{METADATA_PREFIX}{k}": json.dumps(contract[k]) for k in CONTRACT_KEYS})
    return meta


def from_metadata(meta: dict[str, str], source: str = "the model") -> dict[str, Any]:
    """The contract stored in ONNX metadata; ContractError if ``source`` is not a sim2real policy."""
    marker = meta.get(f"{METADATA_PREFIX}format")
    if marker != FORMAT:
        raise ContractError(
            f"{source} is not a sim2real policy (metadata key {METADATA_PREFIX}format is {marker!r}, "
            f"expected {FORMAT!r}); export policies with `sim2real export runs/NAME --out DIR`"
        )
    version = meta.get(f"{METADATA_PREFIX}format_version")
    if version != str(FORMAT_VERSION):
        raise ContractError(
            f"{source} has policy format version {version}; this sim2real reads version {FORMAT_VERSION}: "
            "re-export it with this version"
        )
    missing = [k for k in CONTRACT_KEYS if f"{METADATA_PREFIX}{k}" not in meta]
    if missing:
        raise ContractError(f"{source} lacks the metadata key(s) {[METADATA_PREFIX + k for k in missing]}")
    try:
        return {k: json.loads(meta[f"{METADATA_PREFIX}{k}"]) for k in CONTRACT_KEYS}
    except json.JSONDecodeError as err:
        raise ContractError(f"{source} has a malformed contract entry: {err}") from err


def check_contract(model: dict[str, Any], declared: dict[str, Any], source: str = "the policy") -> None:
    """Raise ContractError naming every key where ``declared`` differs from ``model``.

    ``declared`` may hold any subset of the contract keys. ``env_params`` is informational and not compared
    (reward weights and the like differ harmlessly; what shapes the observation and the command is in the
    other keys). A declared layout may give fewer keys per field (``name``, ``start``, ``size`` at least);
    only the keys it gives are compared.
    """
    unknown = sorted(set(declared) - set(CONTRACT_KEYS))
    if unknown:
        raise ContractError(f"unknown contract key(s) {unknown}; keys are {list(CONTRACT_KEYS)}")
    problems = []
    for key, want in declared.items():
        if key == "env_params":
            continue
        have = model.get(key)
        if key == "obs_layout":
            diff = _layout_difference(_layout_entries(have, LAYOUT_KEYS), _layout_entries(want, LAYOUT_KEYS))
            if diff:
                problems.append(f"obs_layout: {diff}")
        elif not _same(have, want):
            problems.append(f"{key}: {source} has {have!r}, the caller declares {want!r}")
    if problems:
        raise ContractError(f"{source} does not match this configuration:\n  " + "\n  ".join(problems))


def _layout_difference(have: list[dict[str, Any]], want: list[dict[str, Any]]) -> str:
    """The first difference between the policy's layout and a declared one (its keys only), or ''."""
    for i in range(max(len(have), len(want))):
        if i >= len(have):
            return f"the caller declares an extra field {want[i]['name']!r} at index {i}"
        if i >= len(want):
            return f"the policy expects a field {have[i]['name']!r} at index {i} that the caller lacks"
        for k, value in want[i].items():
            if have[i].get(k) != value:
                ours = have[i].get(k)
                return f"field {i} ({have[i]['name']!r}): the policy has {k}={ours!r}, the caller declares {value!r}"
    return ""


def describe_contract(contract: dict[str, Any], model_version: str | None = None) -> str:
    """A few lines: env, agents, control rate, observation fields, action and command."""
    c = contract
    rate = f", {c['ctrl_freq_hz']:g} Hz" if c["ctrl_freq_hz"] else ""
    fields = ", ".join(f"{f['name']}[{f['size']}] {f['unit']}" for f in c["obs_layout"] if f["size"])
    lines = [
        f"env {c['env_id']} ({c['num_agents']} agents{rate}), model version {model_version}",
        f"observation [{c['obs_dim']}]: {fields}",
        f"action: {c['action_type']} [{c['action_dim']}]"
        + (f" in [{_span(c['action_low'])}, {_span(c['action_high'])}]" if c["action_low"] is not None else ""),
    ]
    if c["command"]:
        cmd = c["command"]
        lines.append(f"command: {', '.join(cmd['names'])} in {cmd['unit']} [{_span(cmd['low'])}, {_span(cmd['high'])}]")
    return "\n".join(lines)


def _span(values: list[float]) -> str:
    return f"{values[0]:g}" if len(set(values)) == 1 else ", ".join(f"{v:g}" for v in values)


def _same(a: Any, b: Any) -> bool:
    """Equality with a relative tolerance of 1e-9 on numbers (JSON round trips keep floats exact anyway)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    numbers = (int, float, np.integer, np.floating)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0.0))
    return a == b


def _floats(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]
