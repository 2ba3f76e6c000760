"""Robustness suites: named lists of perturbation conditions, grouped by family, and the code that runs them.

A suite is YAML (built-in: ``standard`` and ``quick`` in ``sim2real/eval/suites/``)::

    name: my-suite
    conditions:
      - {family: clean, name: clean}
      - family: obs_noise                 # clean, obs_noise, attack, dynamics, malicious or timing
        name: gaussian                    # unique; a sweep appends the value: gaussian-0.05
        spec: {kind: obs.gaussian, std: 0.05}   # any perturbation spec (string, entry, list or mapping)
        sweep: {param: std, values: [0.02, 0.05, 0.1]}   # optional: one condition per value
      - {family: dynamics, name: drag-x2, spec: {kind: dynamics.drag, scale: 2.0}, add_effects: [drag]}

``add_effects`` turns aerodynamic effects on in the evaluation env (a model the policy was not trained with).
Every suite has a ``clean`` condition (added first when missing): the robustness ratio of a condition is its
mean return over the clean mean return on the same backend, episodes and seeds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from sim2real.envs import make
from sim2real.eval.policies import LoadedPolicy
from sim2real.eval.rollout import evaluate
from sim2real.perturb import SpecError, parse_spec

FAMILIES = ("clean", "obs_noise", "attack", "dynamics", "malicious", "timing")
BUILTIN_DIR = Path(__file__).parent / "suites"


class SuiteError(ValueError):
    """An invalid suite file; the message names the condition and the field."""


@dataclass
class Condition:
    """One evaluation condition.

    Attributes:
        name: unique label (``pgd-0.1``).
        family: one of :data:`FAMILIES`.
        spec: the perturbation spec in dict form (``{"perturbations": [...]}``), None for clean.
        sweep: the sweep it belongs to (``pgd``), or None.
        budget: the swept parameter's value, or None.
        add_effects: aerodynamic effects switched on in the evaluation env.
    """

    name: str
    family: str
    spec: dict[str, Any] | None = None
    sweep: str | None = None
    budget: float | None = None
    add_effects: list[str] = field(default_factory=list)


@dataclass
class Suite:
    """A validated suite: its name, its conditions (clean first, sweeps expanded) and the entries they came from."""

    name: str
    conditions: list[Condition]
    description: str = ""
    entries: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The suite file's form (sweeps kept compact, specs validated); :func:`parse_suite` reads it back."""
        entries = self.entries or [_entry_of(c) for c in self.conditions]
        return {"name": self.name, "description": self.description, "conditions": entries}


def _entry_of(condition: Condition) -> dict[str, Any]:
    entry: dict[str, Any] = {"family": condition.family, "name": condition.name}
    if condition.spec is not None:
        entry["spec"] = condition.spec
    if condition.add_effects:
        entry["add_effects"] = condition.add_effects
    return entry


def builtin_suites() -> list[str]:
    """Names of the suites shipped with the package."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """A built-in suite by name (``standard``, ``quick``) or a suite YAML file."""
    text = str(name_or_path)
    if text in builtin_suites():
        path = BUILTIN_DIR / f"{text}.yaml"
    else:
        path = Path(text)
        if not path.is_file():
            raise SuiteError(f"no suite {text!r}: not a built-in ({', '.join(builtin_suites())}) and not a file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SuiteError(f"{path} is not valid YAML: {err}") from None
    return parse_suite(data, default_name=path.stem)


def parse_suite(data: Any, default_name: str = "suite") -> Suite:
    """Validate a suite mapping (see the module doc); :class:`SuiteError` names what is wrong."""
    if not isinstance(data, dict):
        raise SuiteError(f"a suite is a mapping with a `conditions` list, got {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "description", "conditions"})
    if unknown:
        raise SuiteError(f"unknown suite key(s) {unknown}; allowed: name, description, conditions")
    raw = data.get("conditions")
    if not isinstance(raw, list) or not raw:
        raise SuiteError("suite.conditions: expected a non-empty list of conditions")
    conditions: list[Condition] = []
    entries: list[dict[str, Any]] = []
    for i, entry in enumerate(raw):
        expanded = _conditions(f"conditions[{i}]", entry)
        conditions += expanded
        entries.append({**entry, "spec": expanded[0].spec} if entry.get("spec") is not None else dict(entry))
    if not any(c.family == "clean" for c in conditions):
        conditions.insert(0, Condition("clean", "clean"))
        entries.insert(0, {"family": "clean", "name": "clean"})
    names = [c.name for c in conditions]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SuiteError(f"condition names must be unique; repeated: {dupes}")
    clean = [c for c in conditions if c.family == "clean"]
    if len(clean) > 1:
        raise SuiteError(f"a suite has one clean condition, this one has {len(clean)}: {[c.name for c in clean]}")
    conditions.remove(clean[0])
    name, description = str(data.get("name") or default_name), str(data.get("description", ""))
    return Suite(name, [clean[0], *conditions], description, entries)


def _conditions(where: str, entry: Any) -> list[Condition]:
    if not isinstance(entry, dict):
        raise SuiteError(f"{where}: expected a mapping with family, name and spec, got {entry!r}")
    unknown = sorted(set(entry) - {"family", "name", "spec", "sweep", "add_effects"})
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {unknown}; allowed: family, name, spec, sweep, add_effects")
    family, name = entry.get("family"), entry.get("name")
    if family not in FAMILIES:
        raise SuiteError(f"{where}.family: {family!r} is not one of {', '.join(FAMILIES)}")
    if not isinstance(name, str) or not name:
        raise SuiteError(f"{where}.name: expected a non-empty string")
    effects = entry.get("add_effects") or []
    if not isinstance(effects, list) or not all(e in ("ground", "drag", "downwash") for e in effects):
        raise SuiteError(f"{where}.add_effects: expected a list of ground, drag, downwash; got {effects!r}")
    if family == "clean":
        if name != "clean":
            raise SuiteError(f"{where}.name: the clean condition is named clean, got {name!r}")
        if entry.get("spec") is not None or entry.get("sweep") is not None or effects:
            raise SuiteError(f"{where}: the clean condition has no spec, sweep or add_effects")
        return [Condition(name, family)]
    if entry.get("spec") is None:
        raise SuiteError(f"{where}.spec: a {family} condition needs a perturbation spec")
    try:
        spec = parse_spec(entry["spec"]).to_dict()
    except SpecError as err:
        raise SuiteError(f"{where}.spec: {err}") from None
    if not spec["perturbations"]:
        raise SuiteError(f"{where}.spec: the spec has no perturbations")
    sweep = entry.get("sweep")
    if sweep is None:
        return [Condition(name, family, spec, add_effects=list(effects))]
    if not isinstance(sweep, dict) or set(sweep) != {"param", "values"}:
        raise SuiteError(f"{where}.sweep: expected {{param: NAME, values: [v1, v2, ...]}}, got {sweep!r}")
    items = spec["perturbations"]
    if len(items) != 1:
        raise SuiteError(f"{where}.sweep: a swept spec has exactly one perturbation, this one has {len(items)}")
    param, values = sweep["param"], sweep["values"]
    if param not in items[0]:
        raise SuiteError(f"{where}.sweep.param: {items[0]['kind']} has no parameter {param!r} in this spec")
    if not isinstance(values, list) or not values:
        raise SuiteError(f"{where}.sweep.values: expected a non-empty list")
    out = []
    for j, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SuiteError(
                f"{where}.sweep.values[{j}]: a sweep varies a number (the budget), got {value!r}; "
                "write one condition per value instead"
            )
        swept = copy.deepcopy(spec)
        swept["perturbations"][0][param] = value
        try:
            swept = parse_spec(swept).to_dict()
        except SpecError as err:
            raise SuiteError(f"{where}.sweep.values[{j}]: {err}") from None
        label = f"{name}-{value:g}"
        out.append(Condition(label, family, swept, sweep=name, budget=float(value), add_effects=list(effects)))
    return out


def family_of(spec: dict[str, Any]) -> str:
    """The family of a spec's first perturbation kind: ``adv.*`` attack, ``agents.*`` malicious, ``timing.*``,
    ``obs.delay`` and ``obs.dropout`` timing, other ``obs.*`` obs_noise, ``dynamics.*`` and ``action.*`` dynamics."""
    kind = spec["perturbations"][0]["kind"]
    if kind in ("obs.delay", "obs.dropout"):
        return "timing"
    prefix = kind.split(".")[0]
    return {"obs": "obs_noise", "adv": "attack", "agents": "malicious", "timing": "timing"}.get(prefix, "dynamics")


def condition_env_kwargs(env_kwargs: dict[str, Any], condition: Condition) -> dict[str, Any]:
    """The policy's env arguments with the condition's extra aerodynamic effects switched on."""
    if not condition.add_effects:
        return dict(env_kwargs)
    from sim2real.envs.drones.forces import parse_effects

    effects = parse_effects(env_kwargs.get("effects")) | set(condition.add_effects)
    return {**env_kwargs, "effects": sorted(effects)}


def condition_needs(policy: LoadedPolicy, condition: Condition) -> dict[str, str]:
    """What each perturbation of ``condition`` needs from the policy's ``AttackTarget`` (name -> attribute)."""
    if condition.spec is None:
        return {}
    from sim2real import perturb

    env = make(policy.env_id, num_envs=1, **condition_env_kwargs(policy.env_kwargs, condition))
    try:
        return perturb.apply(env, condition.spec).target_needs()
    except SpecError as err:
        raise SuiteError(f"condition {condition.name}: {err}") from None
    finally:
        env.close()


def skip_reason(policy: LoadedPolicy, condition: Condition) -> str | None:
    """Why ``policy`` cannot be evaluated under ``condition`` (attacks it has no target for), or None.

    A run whose team critic can be fitted (:mod:`sim2real.train.team_q`) counts as having one.
    """
    for name, need in condition_needs(policy, condition).items():
        if policy.target is None and need == "policy":
            return (
                f"{name} attacks the policy's gradients, which an exported {policy.kind} file does not have: "
                "evaluate the run directory instead (the exported file computes the same actions)"
            )
        if need == "team_critic" and policy.fit_team_critic is not None:
            continue
        if getattr(policy.target, need, None) is None:
            hint = " (evaluate the run directory: a run's team critic is fitted from rollouts)"
            return f"{name} needs an AttackTarget with {need}, which this {policy.kind} policy does not bring" + (
                hint if need == "team_critic" and policy.kind == "onnx" else ""
            )
    return None


def run_suite(
    policy: LoadedPolicy,
    suite: Suite,
    *,
    backends: tuple[str, ...] = ("batched",),
    episodes: int = 32,
    seed: int = 10_000,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``policy`` under every condition of ``suite`` on each backend.

    Every condition uses the same env seeds (the same initial states and targets) and its perturbations are
    seeded with ``seed`` too, so conditions differ only by their perturbation.

    Returns:
        the ``results.json`` record: ``families[family][condition][backend]`` holds the evaluation summary
        (``mean_return``, ``std_return`` over episodes, ``mean_position_error_m``, ``collisions``, ...) and the
        ``robustness_ratio``; ``family_ratio[backend][family]`` is the mean ratio over the family's
        evaluated conditions. Skipped conditions carry ``skipped``: the reason. When adversarial teammates
        needed the run's fitted team critic, ``team_critic`` holds its fit statistics (held-out R^2).
    """
    skips = {c.name: skip_reason(policy, c) for c in suite.conditions}
    target, team_critic_fit = policy.target, None
    wants_team_critic = any(
        skips[c.name] is None and "team_critic" in condition_needs(policy, c).values() for c in suite.conditions
    )
    if wants_team_critic and target.team_critic is None:
        critic, team_critic_fit = policy.fit_team_critic(progress=progress)
        target = replace(target, team_critic=critic)
    families: dict[str, dict[str, Any]] = {f: {} for f in FAMILIES}
    jobs = [(c, b) for c in suite.conditions for b in backends if skips[c.name] is None]
    bar = tqdm(total=len(jobs), desc=f"suite {suite.name}", unit="cond", disable=not progress)
    clean_return: dict[str, float] = {}
    for condition in suite.conditions:
        entry: dict[str, Any] = {"spec": condition.spec, "sweep": condition.sweep, "budget": condition.budget}
        if condition.add_effects:
            entry["add_effects"] = condition.add_effects
        if skips[condition.name] is not None:
            entry["skipped"] = skips[condition.name]
        else:
            for backend in backends:
                bar.set_postfix_str(f"{condition.name} ({backend})")
                result = evaluate(
                    policy.act,
                    policy.env_id,
                    condition_env_kwargs(policy.env_kwargs, condition),
                    episodes=episodes,
                    backend=backend,
                    seed=seed,
                    perturbations=condition.spec,
                    target=target,
                )
                summary = result.summary()
                if condition.family == "clean":
                    clean_return[backend] = summary["mean_return"]
                summary["robustness_ratio"] = ratio(summary["mean_return"], clean_return[backend])
                entry[backend] = summary
                bar.update(1)
        families[condition.family][condition.name] = entry
    bar.close()
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "policy": policy.describe(),
        "suite": suite.to_dict(),
        "backends": list(backends),
        "episodes": episodes,
        "seed": seed,
        "families": families,
        "family_ratio": {b: family_ratios(families, b) for b in backends},
        **({"team_critic": team_critic_fit} if team_critic_fit is not None else {}),
    }


def ratio(value: float, clean: float) -> float | None:
    """Robustness ratio ``value / clean``; None when the clean return is not positive (no meaningful ratio)."""
    return float(value / clean) if clean > 0 else None


def family_ratios(families: dict[str, dict[str, Any]], backend: str) -> dict[str, float]:
    """Mean robustness ratio per family over its evaluated conditions on ``backend`` (families with none left out)."""
    out = {}
    for family, conditions in families.items():
        values = [
            c[backend]["robustness_ratio"]
            for c in conditions.values()
            if backend in c and c[backend]["robustness_ratio"] is not None
        ]
        if values:
            out[family] = float(np.mean(values))
    return out
