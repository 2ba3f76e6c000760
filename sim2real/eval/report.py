"""Robustness reports: markdown with plots for one policy's suite results, and the cross table of methods.

:func:`write_report` turns one ``results.json`` record (:func:`sim2real.eval.suite.run_suite`) into
``report.md`` with a table per family and two plots: the robustness ratio of every condition (one bar per
backend, so the sim-to-sim gap shows under every perturbation) and return-versus-budget curves of the sweeps.

:func:`compare` groups several runs' records by method (seeds of one method together) and writes
``compare.json``, ``compare.md`` and plots: the methods-by-conditions heat map of the robustness ratio (mean over
seeds, like ATSA's Table 1), the per-family table with the clean return, and return-versus-budget curves with
the spread over seeds. Plots need matplotlib (the ``plot`` extra); without it the markdown says so.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.eval.suite import FAMILIES


def new_figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any] | None:
    """A matplotlib ``Figure`` with ``ncols`` axes (no pyplot, no global backend change); None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def conditions(record: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(family, name, entry)`` of every condition of a record, in suite order."""
    return [(f, name, entry) for f in FAMILIES for name, entry in record["families"].get(f, {}).items()]


def write_report(record: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``report.md`` (and plots) for one policy's suite record into ``out_dir``; returns the markdown path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backends = record["backends"]
    pol = record["policy"]
    lines = [
        f"# Robustness report: {pol['source']}",
        "",
        f"- policy: {pol['kind']} {pol.get('checkpoint', pol.get('version'))}, env `{pol['env']}`",
        f"- suite: `{record['suite']['name']}`, {record['episodes']} episodes per condition and backend, "
        f"env seed {record['seed']} (every condition flies the same initial states and targets)",
        f"- backends: {', '.join(backends)}; created {record['created']}",
        "- robustness ratio = mean return under the condition / clean mean return on the same backend",
        "",
        "## Mean robustness ratio per family",
        "",
        "| family | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    for family in FAMILIES:
        if any(family in record["family_ratio"][b] for b in backends):
            cells = [_fmt(record["family_ratio"][b].get(family, float("nan"))) for b in backends]
            lines.append(f"| {family} | " + " | ".join(cells) + " |")
    plots = _report_plots(record, out_dir)
    if plots is None:
        lines += ["", "_(plots need matplotlib: `pip install sim2real[plot]`)_"]
    else:
        lines += ["", *[f"![{name}]({name})" for name in plots]]
    for family in FAMILIES:
        rows = [(name, entry) for f, name, entry in conditions(record) if f == family]
        if not rows:
            continue
        lines += ["", f"## {family}", ""]
        header = "| condition |"
        for b in backends:
            header += f" return ({b}) | ratio ({b}) | pos err [m] ({b}) | collisions ({b}) |"
        lines += [header, "|---|" + "---|---|---|---|" * len(backends)]
        for name, entry in rows:
            if "skipped" in entry:
                lines.append(f"| {name} | skipped: {entry['skipped']} |")
                continue
            row = f"| {name} |"
            for b in backends:
                r = entry[b]
                row += (
                    f" {r['mean_return']:.1f} ± {r['std_return']:.1f} | {_fmt(r['robustness_ratio'])} |"
                    f" {r['mean_position_error_m']:.3f} | {r['collisions']} |"
                )
            lines.append(row)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _report_plots(record: dict[str, Any], out_dir: Path) -> list[str] | None:
    """``ratios.png`` and ``sweeps.png``; None when matplotlib is missing."""
    backends = record["backends"]
    evaluated = [(f, n, e) for f, n, e in conditions(record) if "skipped" not in e and f != "clean"]
    made = new_figure(max(6.0, 0.35 * len(evaluated) * len(backends)), 4.0)
    if made is None:
        return None
    if not evaluated:
        return []
    fig, (ax,) = made
    width = 0.8 / len(backends)
    x = np.arange(len(evaluated))
    for i, b in enumerate(backends):
        ratios = [e[b]["robustness_ratio"] for _, _, e in evaluated]
        ax.bar(x + i * width, [np.nan if r is None else r for r in ratios], width, label=b)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(x + 0.4 - width / 2, [n for _, n, _ in evaluated], rotation=75, fontsize=7)
    ax.set_ylabel("return / clean return")
    ax.set_title("robustness ratio per condition")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "ratios.png", dpi=110)
    names = ["ratios.png"]
    sweeps = _sweeps(record)
    if sweeps:
        fig, axes = new_figure(3.2 * len(sweeps), 3.0, len(sweeps))
        for ax, (sweep, points) in zip(axes, sweeps.items(), strict=True):
            for b in backends:
                xs = [p[0] for p in points if b in p[1]]
                ax.plot(xs, [p[1][b]["mean_return"] for p in points if b in p[1]], "o-", label=b)
            ax.set(title=sweep, xlabel="budget")
        _save_curves(fig, axes, out_dir / "sweeps.png")
        names.append("sweeps.png")
    return names


def _save_curves(fig: Any, axes: Any, path: Path) -> None:
    """Label the return-versus-budget panels and write the figure."""
    axes[0].set_ylabel("mean return")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _sweeps(record: dict[str, Any]) -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """``{sweep: [(budget, entry), ...]}`` of the evaluated sweep conditions."""
    out: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    for _, _, entry in conditions(record):
        if entry.get("sweep") and "skipped" not in entry:
            out[entry["sweep"]].append((entry["budget"], entry))
    return dict(out)


def method_label(record: dict[str, Any]) -> str:
    """The method a record belongs to: ``robust.method`` (``mappo`` for none; prefixed by the algo unless MAPPO),
    or the policy file's source for exported files."""
    training = record["policy"].get("training")
    if training is None:
        return str(record["policy"]["source"])
    method = training["robust"]["method"]
    label = "mappo" if method == "none" else method
    return label if training["algo"] == "mappo" else f"{training['algo']}-{label}"


def _method_params(record: dict[str, Any]) -> Any:
    """The robust-training parameters that define a method (its own config section)."""
    training = record["policy"].get("training")
    if training is None:
        return None
    robust = training["robust"]
    section = {"ernie-st": "ernie", "adv-pgd": "adv"}.get(robust["method"], robust["method"])
    return robust.get(section)


def compare(records: list[dict[str, Any]], out_dir: str | Path, backend: str | None = None) -> dict[str, Any]:
    """Cross table of methods (runs grouped by :func:`method_label`, seeds together) by conditions.

    Every record must come from the same suite, env, episodes and seed, and the runs of one method must share
    its parameters (else they are not seeds of one method). Writes ``compare.json``, ``compare.md`` and plots
    into ``out_dir``; returns the comparison record. ValueError names what does not match.
    """
    if not records:
        raise ValueError("compare needs at least one results record")
    first = records[0]
    for r in records[1:]:
        for key, what in (("suite", "suite"), ("episodes", "--episodes"), ("seed", "--seed")):
            if r[key] != first[key]:
                raise ValueError(
                    f"{r['policy']['source']} and {first['policy']['source']} were evaluated with different "
                    f"{what}: evaluate every run with the same --suite, --episodes and --seed"
                )
        if (r["policy"]["env"], r["policy"]["env_kwargs"]) != (first["policy"]["env"], first["policy"]["env_kwargs"]):
            raise ValueError(f"{r['policy']['source']} was trained for another env than {first['policy']['source']}")
    backend = backend or first["backends"][0]
    missing = [r["policy"]["source"] for r in records if backend not in r["backends"]]
    if missing:
        raise ValueError(f"no results on the {backend} backend for {missing}")
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        label = method_label(r)
        if groups[label] and _method_params(r) != _method_params(groups[label][0]):
            raise ValueError(
                f"{r['policy']['source']} and {groups[label][0]['policy']['source']} are both {label} runs with "
                "different parameters; compare runs of one setting per method (they are treated as seeds)"
            )
        groups[label].append(r)
    names = [(f, n) for f, n, _ in conditions(first)]
    methods: dict[str, Any] = {}
    for label, recs in groups.items():
        per_cond = {}
        for family, name in names:
            entries = [r["families"][family][name] for r in recs]
            values = [e[backend] for e in entries if backend in e]
            info = {"family": family, "budget": entries[0].get("budget"), "sweep": entries[0].get("sweep")}
            ratios = np.array([v["robustness_ratio"] for v in values if v["robustness_ratio"] is not None])
            if not values:
                per_cond[name] = {**info, "skipped": next(e["skipped"] for e in entries if "skipped" in e)}
                continue
            returns = np.array([v["mean_return"] for v in values])
            per_cond[name] = {
                **info,
                "seeds": len(values),
                "return_mean": float(returns.mean()),
                "return_std": float(returns.std()),
                "ratio_mean": float(ratios.mean()) if len(ratios) else None,
                "ratio_std": float(ratios.std()) if len(ratios) else None,
            }
        fam = {}
        for family in FAMILIES:
            seed_means = [r["family_ratio"][backend][family] for r in recs if family in r["family_ratio"][backend]]
            if seed_means:
                fam[family] = {"ratio_mean": float(np.mean(seed_means)), "ratio_std": float(np.std(seed_means))}
        methods[label] = {"runs": [r["policy"]["source"] for r in recs], "conditions": per_cond, "families": fam}
    result = {"suite": first["suite"]["name"], "backend": backend, "episodes": first["episodes"], "methods": methods}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    _compare_markdown(result, names, out_dir)
    return result


def _or_nan(value: float | None) -> float:
    return np.nan if value is None else value


def _mean_std(entry: dict[str, Any], key: str, digits: int = 2) -> str:
    mean, std = entry.get(f"{key}_mean"), entry.get(f"{key}_std")
    return "n/a" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _compare_markdown(result: dict[str, Any], names: list[tuple[str, str]], out_dir: Path) -> None:
    methods = result["methods"]
    shown = [f for f in FAMILIES if f != "clean" and any(f in m["families"] for m in methods.values())]
    lines = [
        f"# Robustness comparison: suite `{result['suite']}` on {result['backend']}",
        "",
        f"{result['episodes']} episodes per condition and run; mean ± std over seeds (runs) of each method.",
        "",
        "| method | seeds | clean return | " + " | ".join(f"{f} ratio" for f in shown) + " |",
        "|---|---|---|" + "---|" * len(shown),
    ]
    for label, m in methods.items():
        clean = m["conditions"]["clean"]
        cells = [_mean_std(m["families"][f], "ratio") if f in m["families"] else "" for f in shown]
        lines.append(f"| {label} | {clean['seeds']} | {_mean_std(clean, 'return', 1)} | " + " | ".join(cells) + " |")
    plots = _compare_plots(result, names, out_dir)
    if plots is None:
        lines += ["", "_(plots need matplotlib: `pip install sim2real[plot]`)_"]
    else:
        lines += ["", *[f"![{p}]({p})" for p in plots]]
    labels = list(methods)
    lines += ["", "## Robustness ratio by condition", ""]
    lines += ["| condition | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for _, name in names:
        cells = []
        for label in labels:
            c = methods[label]["conditions"][name]
            cells.append(f"skipped: {c['skipped']}" if "skipped" in c else _mean_std(c, "ratio"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out_dir / "compare.md").write_text("\n".join(lines) + "\n")


def _compare_plots(result: dict[str, Any], names: list[tuple[str, str]], out_dir: Path) -> list[str] | None:
    """``heatmap.png`` and ``budget_curves.png``; None when matplotlib is missing."""
    methods = result["methods"]
    labels = list(methods)
    cols = [n for f, n in names if f != "clean" and any("skipped" not in methods[m]["conditions"][n] for m in labels)]
    made = new_figure(max(6.0, 0.42 * len(cols)), 0.5 * len(labels) + 2.2)
    if made is None:
        return None
    fig, (ax,) = made
    grid = np.array(
        [[_or_nan(methods[m]["conditions"][n].get("ratio_mean")) for n in cols] for m in labels], dtype=float
    )
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=75, fontsize=7)
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(cols)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(image, ax=ax, label="return / clean return")
    ax.set_title(f"robustness ratio, mean over seeds ({result['backend']})")
    fig.tight_layout()
    fig.savefig(out_dir / "heatmap.png", dpi=110)
    out = ["heatmap.png"]
    sweeps: dict[str, list[str]] = defaultdict(list)
    for _, n in names:
        sweep = methods[labels[0]]["conditions"][n].get("sweep")
        if sweep:
            sweeps[sweep].append(n)
    if sweeps:
        fig, axes = new_figure(3.2 * len(sweeps), 3.0, len(sweeps))
        for ax, (sweep, conds) in zip(axes, sweeps.items(), strict=True):
            for m in labels:
                pts = [methods[m]["conditions"][n] for n in conds if "skipped" not in methods[m]["conditions"][n]]
                if pts:
                    ax.errorbar(
                        [p["budget"] for p in pts],
                        [p["return_mean"] for p in pts],
                        yerr=[p["return_std"] for p in pts],
                        marker="o",
                        capsize=2,
                        label=m,
                    )
            ax.set(title=sweep, xlabel="budget")
        _save_curves(fig, axes, out_dir / "budget_curves.png")
        out.append("budget_curves.png")
    return out
