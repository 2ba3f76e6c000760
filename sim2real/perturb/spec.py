"""The perturbation spec: one format as a dict, YAML or a short command-line string, validated.

A spec is a list of perturbations. Each entry has a ``kind`` (``obs.gaussian``, ``agents.malicious``, ...),
the kind's own parameters and the common ones every kind accepts:

- ``agents``: ``all`` (default), a list of agent indices, ``random:K`` (K random agents per episode) or
  ``fraction:F`` (``round(F * num_agents)`` random agents per episode);
- schedule: ``start`` / ``end`` (steps, ``end`` exclusive), ``clock`` (``episode`` steps or ``global`` steps
  since the wrapper was built), ``prob`` (probability that an episode is perturbed at all) and ``ramp``
  (steps after ``start`` over which the strength grows linearly from 0 to full: a curriculum);
- ``name`` (a label for switching it on and off at run time) and ``enabled``.

Dict / YAML form::

    seed: 0
    perturbations:
      - {kind: obs.gaussian, std: 0.05, fields: [position]}
      - {kind: agents.malicious, rate: 0.05, mode: random, schedule: {start: 100}}

String form (``+`` joins perturbations, lists in brackets)::

    obs.gaussian(std=0.05,fields=pos)+agents.malicious(rate=0.05,mode=random)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REQUIRED = object()  # marker for a parameter without a default


class SpecError(ValueError):
    """A perturbation spec is invalid; the message names the entry, the field and what is allowed."""


@dataclass(frozen=True)
class Param:
    """One parameter of a perturbation kind.

    ``type`` is one of ``float``, ``int``, ``bool``, ``str``, ``choice`` (one of ``choices``), ``floats``
    (a number or a list of numbers), ``ints`` (a list of integers), ``scale`` (a number, or ``[low, high]``
    sampled uniformly per episode), ``fields`` (observation field or sensor names). ``low``/``high`` bound
    numbers (inclusive). ``strength`` marks the parameter a ``ramp`` scales.
    """

    type: str
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    strength: bool = False

    def describe(self) -> str:
        allowed = f" one of {', '.join(self.choices)};" if self.choices else ""
        bounds = ""
        if self.low is not None or self.high is not None:
            bounds = f" in [{'-inf' if self.low is None else self.low}, {'inf' if self.high is None else self.high}];"
        default = "required" if self.default is REQUIRED else f"default {self.default!r}"
        return f"{self.type};{allowed}{bounds} {default}. {self.doc}"


COMMON_PARAMS: dict[str, Param] = {
    "agents": Param("str", "all", "Agents hit: all, a list [0,2], random:K per episode, or fraction:F."),
    "start": Param("int", 0, "First step (on `clock`) the perturbation acts.", low=0),
    "end": Param("int", None, "Step (on `clock`) it stops acting, exclusive; none = never.", low=1),
    "clock": Param("choice", "episode", "Which step counter start/end/ramp use.", choices=("episode", "global")),
    "prob": Param("float", 1.0, "Probability that an episode (per env) is perturbed at all.", low=0.0, high=1.0),
    "ramp": Param("int", 0, "Steps after `start` over which the strength grows linearly to full (curriculum).", low=0),
    "name": Param("str", None, "Label used to switch this perturbation on and off at run time."),
    "enabled": Param("bool", True, "Initial on/off state."),
}
SCHEDULE_KEYS = ("start", "end", "clock", "prob", "ramp")


@dataclass
class PerturbationSpec:
    """One validated perturbation: its kind, its own parameters and the common ones (see module doc)."""

    kind: str
    params: dict[str, Any]
    agents: str | list[int] = "all"
    start: int = 0
    end: int | None = None
    clock: str = "episode"
    prob: float = 1.0
    ramp: int = 0
    name: str | None = None
    enabled: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The dict form that :func:`parse_spec` reads back to an equal spec."""
        out: dict[str, Any] = {"kind": self.kind, **self.params}
        for key, param in COMMON_PARAMS.items():
            value = getattr(self, key)
            if value != param.default:
                out[key] = value
        return out


@dataclass
class Spec:
    """A validated list of perturbations plus an optional seed."""

    perturbations: list[PerturbationSpec] = field(default_factory=list)
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"perturbations": [p.to_dict() for p in self.perturbations]}
        if self.seed is not None:
            out["seed"] = self.seed
        return out

    def __len__(self) -> int:
        return len(self.perturbations)


# ----------------------------------------------------------------------------- value checks
def _number(where: str, value: Any, integer: bool) -> float | int:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{where}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise SpecError(f"{where}: expected a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise SpecError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    return float(value)


def _bounded(where: str, value: float, param: Param) -> None:
    if param.low is not None and value < param.low:
        raise SpecError(f"{where}: {value!r} is below the minimum {param.low}")
    if param.high is not None and value > param.high:
        raise SpecError(f"{where}: {value!r} is above the maximum {param.high}")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_value(where: str, param: Param, value: Any) -> Any:
    """Validate and normalise one parameter value; raises :class:`SpecError` naming ``where``."""
    if value is None and param.default is None:
        return None
    t = param.type
    if t in ("float", "int"):
        v = _number(where, value, t == "int")
        _bounded(where, v, param)
        return v
    if t == "bool":
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true or false, got {value!r}")
        return value
    if t == "str":
        if not isinstance(value, str) or not value:
            raise SpecError(f"{where}: expected a non-empty string, got {value!r}")
        return value
    if t == "choice":
        if value not in param.choices:
            raise SpecError(f"{where}: {value!r} is not allowed; choose one of {', '.join(param.choices)}")
        return value
    if t == "floats":
        values = [_number(f"{where}[{i}]", v, False) for i, v in enumerate(_as_list(value))]
        if not values:
            raise SpecError(f"{where}: expected a number or a non-empty list of numbers")
        for i, v in enumerate(values):
            _bounded(f"{where}[{i}]", v, param)
        return values[0] if not isinstance(value, (list, tuple)) else values
    if t == "ints":
        values = [_number(f"{where}[{i}]", v, True) for i, v in enumerate(_as_list(value))]
        if not values or len(set(values)) != len(values):
            raise SpecError(f"{where}: expected a non-empty list of distinct integers, got {value!r}")
        for i, v in enumerate(values):
            _bounded(f"{where}[{i}]", v, param)
        return values
    if t == "scale":
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise SpecError(f"{where}: a range is [low, high], got {value!r}")
            lo, hi = (_number(f"{where}[{i}]", v, False) for i, v in enumerate(value))
            if lo > hi:
                raise SpecError(f"{where}: range low {lo} is above high {hi}")
            for v in (lo, hi):
                _bounded(where, v, param)
            return [lo, hi]
        v = _number(where, value, False)
        _bounded(where, v, param)
        return v
    if t == "fields":
        names = _as_list(value)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise SpecError(f"{where}: expected field or sensor names (e.g. [position, vel]), got {value!r}")
        return names
    raise AssertionError(f"unknown parameter type {t!r}")


def check_agents(where: str, value: Any) -> str | list[int]:
    """Normalise the ``agents`` selector: ``all``, a list of indices, ``random:K`` or ``fraction:F``."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, val),) = value.items()
        value = f"{key}:{val}"
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (list, tuple)):
        return check_value(where, Param("ints", REQUIRED, "", low=0), list(value))
    if value == "all":
        return "all"
    if isinstance(value, str):
        m = re.fullmatch(r"(random|fraction):\s*([0-9.eE+-]+)", value)
        if m:
            kind, num = m.groups()
            try:
                number = float(num)
            except ValueError:
                number = -1.0
            if kind == "random" and number.is_integer() and number >= 1:
                return f"random:{int(number)}"
            if kind == "fraction" and 0.0 < number <= 1.0:
                return f"fraction:{number:g}"
    raise SpecError(
        f"{where}: {value!r} is not an agent selector; use all, a list like [0, 2], random:K (K >= 1) "
        "or fraction:F (0 < F <= 1)"
    )


# ----------------------------------------------------------------------------- parsing
def _entry(where: str, raw: Any) -> PerturbationSpec:
    from sim2real.perturb.registry import KINDS

    if not isinstance(raw, dict):
        raise SpecError(f"{where}: each perturbation is a mapping with a 'kind', got {raw!r}")
    raw = dict(raw)
    kind = raw.pop("kind", None)
    if kind is None:
        raise SpecError(f"{where}: missing 'kind'; kinds are {', '.join(sorted(KINDS))}")
    if kind not in KINDS:
        raise SpecError(f"{where}.kind: unknown kind {kind!r}; kinds are {', '.join(sorted(KINDS))}")
    where = f"{where} ({kind})"
    schedule = raw.pop("schedule", {})
    if not isinstance(schedule, dict):
        raise SpecError(f"{where}.schedule: expected a mapping of {', '.join(SCHEDULE_KEYS)}, got {schedule!r}")
    for key in schedule:
        if key not in SCHEDULE_KEYS:
            raise SpecError(f"{where}.schedule.{key}: unknown; allowed are {', '.join(SCHEDULE_KEYS)}")
        if key in raw:
            raise SpecError(f"{where}: {key!r} is given both in 'schedule' and at the top level")
    raw.update(schedule)
    own = KINDS[kind].params
    allowed = sorted(set(own) | set(COMMON_PARAMS))
    for key in raw:
        if key not in allowed:
            raise SpecError(f"{where}: unknown parameter {key!r}; allowed are {', '.join(allowed)}")
    params: dict[str, Any] = {}
    for key, param in own.items():
        if key in raw:
            params[key] = check_value(f"{where}.{key}", param, raw[key])
        elif param.default is REQUIRED:
            raise SpecError(f"{where}: missing required parameter {key!r} ({param.doc})")
        else:
            params[key] = param.default
    common: dict[str, Any] = {}
    for key, param in COMMON_PARAMS.items():
        if key not in raw:
            continue
        if key == "agents":
            common[key] = check_agents(f"{where}.agents", raw[key])
        else:
            common[key] = check_value(f"{where}.{key}", param, raw[key])
    spec = PerturbationSpec(kind=kind, params=params, **common)
    if spec.end is not None and spec.end <= spec.start:
        raise SpecError(f"{where}.end: {spec.end} must be after start {spec.start}")
    KINDS[kind].validate(where, spec)
    return spec


def parse_spec(spec: Spec | dict | list | str | Path | None) -> Spec:
    """Validate a spec given as a :class:`Spec`, a dict, a list of entries, a YAML file path or the string form."""
    if spec is None:
        return Spec()
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, Path) or (isinstance(spec, str) and spec.endswith((".yaml", ".yml"))):
        path = Path(spec)
        if not path.is_file():
            raise SpecError(f"spec file {str(path)!r} does not exist")
        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise SpecError(f"{path}: not valid YAML: {err}") from err
        if spec is None:
            return Spec()
    if isinstance(spec, str):
        spec = parse_string(spec)
    seed = None
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"perturbations", "seed"})
        if unknown:
            if "kind" in spec:
                spec = {"perturbations": [spec]}
            else:
                raise SpecError(f"spec: unknown key(s) {unknown}; a spec has 'perturbations' and optionally 'seed'")
        seed = spec.get("seed")
        if seed is not None:
            seed = check_value("spec.seed", Param("int", REQUIRED, "", low=0), seed)
        spec = spec.get("perturbations", [])
    if not isinstance(spec, list):
        raise SpecError(f"spec: expected a list of perturbations, got {type(spec).__name__}")
    entries = [_entry(f"perturbations[{i}]", raw) for i, raw in enumerate(spec)]
    names = [e.name for e in entries if e.name is not None]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"spec: perturbation name(s) {dupes} are used more than once; names must be unique")
    return Spec(entries, seed)


_CALL = re.compile(r"\s*([A-Za-z_][\w.]*)\s*(?:\((.*)\))?\s*", re.DOTALL)


def _split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` outside brackets and parentheses."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced brackets in {text!r}")
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise SpecError(f"unbalanced brackets in {text!r}")
    parts.append("".join(current))
    return parts


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [_scalar(t) for t in _split_top(inner, ",")] if inner else []
    value = yaml.safe_load(text) if text else None
    return value if isinstance(value, (int, float, bool, str)) or value is None else text


def parse_string(text: str) -> list[dict[str, Any]]:
    """Turn the command-line form ``kind(key=value,...)+kind(...)`` into a list of raw entries."""
    entries = []
    for part in _split_top(text, "+"):
        m = _CALL.fullmatch(part)
        if not m:
            raise SpecError(f"cannot read {part.strip()!r}; write kind(key=value,...), e.g. obs.gaussian(std=0.05)")
        kind, args = m.group(1), m.group(2)
        entry: dict[str, Any] = {"kind": kind}
        for arg in _split_top(args or "", ","):
            if not arg.strip():
                continue
            if "=" not in arg:
                raise SpecError(f"{kind}: argument {arg.strip()!r} needs the form key=value")
            key, value = arg.split("=", 1)
            entry[key.strip()] = _scalar(value)
        entries.append(entry)
    return entries
