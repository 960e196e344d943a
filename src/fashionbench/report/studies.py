"""A study's result as markdown and a figure: its layout (one axis, a 2-D grid, seeds), its cells,
the write-up's claim beside it.
"""
from __future__ import annotations

from pathlib import Path

from fashionbench.core.files import read_json, write_text
from fashionbench.core.paths import CATALOGUE_FILE, PLOTS_DIR, TUNING_DIR
from fashionbench.report.tuning import tuned_line
from fashionbench.report.verdicts import verdict
from fashionbench.report.writeups import OPTIMIZER_LABELS, SEED003_OPTIMIZER_LR, SEED_CELLS, STUDY_CLAIMS
from fashionbench.report.zoo import explained_by


def cell_result(cell: dict, run: str) -> dict | None:
    m = (cell["runs"].get(run) or {}).get("metrics")
    if not m or m.get("test_accuracy") is None:
        return None
    return {"mean": 100 * m["test_accuracy"], "std": 100 * (m.get("test_accuracy_std") or 0.0),
            "n": m.get("seeds", 1), "status": m.get("status"), "diverged_epoch": m.get("diverged_epoch")}


def cell_text(r: dict | None) -> str:
    if r is None:
        return "failed"
    text = f"{r['mean']:.1f} ± {r['std']:.1f}" if r["n"] > 1 else f"{r['mean']:.1f}"
    return text + (" (diverged)" if r["status"] == "diverged" else "")


def result_at(result: dict, run: str, **params) -> dict | None:
    """`run`'s result in the study cell with these params (None: no such cell or it failed)."""
    cell = next((c for c in result["cells"] if all(c["params"].get(k) == v for k, v in params.items())), None)
    return cell_result(cell, run) if cell else None


def study_figure_path(name: str) -> Path:
    return PLOTS_DIR / "studies" / f"{name}.png"


def layout(result: dict) -> str:
    """How a study is drawn, from the shape of its grid: "table2d" (two keys, seed 003's lr x
    optimizer table), "per_run" (one key over several runs), "per_class" (no grid: the runs side
    by side per class), "bars" (one key, one run) or "cells" (anything else: a row per cell)."""
    keys, runs = list(result["grid"]), result["runs"]
    if len(keys) == 2 and len(runs) == 1:
        return "table2d"
    if len(keys) == 1:
        return "per_run" if len(runs) > 1 else "bars"
    return "per_class" if not keys else "cells"


def grid_2d(result: dict) -> tuple[list, list, str, str]:
    """(row values, column values, row key, column key): lr in the rows where it is a key, as seed 003."""
    keys = list(result["grid"])
    rk = "lr" if "lr" in keys else keys[0]
    ck = next(k for k in keys if k != rk)
    return result["grid"][rk], result["grid"][ck], rk, ck


def label(key: str, value) -> str:
    if key == "optimizer":
        return OPTIMIZER_LABELS.get(value, value)
    return str(value)


def seed_cell(name: str, rv, cv) -> tuple[float | None, float | None] | None:
    """The write-up's (mean, ±) for the cell (row value, column value) of a 2-D study, if it gave one."""
    if name == "optimizer_lr":
        return SEED003_OPTIMIZER_LR.get((rv, cv))
    value = SEED_CELLS.get(name, {}).get((cv, rv))
    return (value, None) if value is not None else None


def study_markdown(result: dict) -> str:
    name, run = result["study"], result["runs"][0]
    seeds = result["seeds"]
    lines = [f"### {result['title']}", "",
             f"`fashionbench study {name}`: {len(result['cells'])} experiments, seeds {seeds}, "
             f"test accuracy in % (mean ± sample std over seeds where more than one).", ""]
    shape = layout(result)
    if shape == "table2d":
        rows, cols, rk, ck = grid_2d(result)
        header = f"| {rk} | " + " | ".join(label(ck, c) for c in cols) + " |"
        rule = "|---" * (len(cols) + 1) + "|"
        ours, seed, diffs = [header, rule], [header, rule], [header, rule]
        for rv in rows:
            cells = [result_at(result, run, **{rk: rv, ck: cv}) for cv in cols]
            refs = [seed_cell(name, rv, cv) for cv in cols]
            ours.append(f"| {label(rk, rv)} | " + " | ".join(cell_text(c) for c in cells) + " |")
            seed.append(f"| {label(rk, rv)} | " + " | ".join(
                "-" if not r or r[0] is None else (f"{r[0]} ± {r[1]}" if r[1] else f"{r[0]}") for r in refs) + " |")
            diffs.append(f"| {label(rk, rv)} | " + " | ".join(
                "-" if c is None or not r or r[0] is None
                else f"{c['mean'] - r[0]:+.1f}: {verdict(c['mean'], r[0], r[1], c['std'], c['n'])}"
                for c, r in zip(cells, refs)) + " |")
        lines += ["Ours:", "", *ours]
        if any(seed_cell(name, rv, cv) for rv in rows for cv in cols):
            lines += ["", f"Write-up {result['seed']}:", "", *seed, "", "Ours minus the write-up's:", "", *diffs]
    elif shape == "per_run":
        key = next(iter(result["grid"]))
        lines += [f"| {key} | " + " | ".join(result["runs"]) + " |", "|---" * (len(result["runs"]) + 1) + "|"]
        for value in result["grid"][key]:
            row = []
            for r in result["runs"]:
                c = result_at(result, r, **{key: value})
                ref = SEED_CELLS.get(name, {}).get((r, value))
                row.append(cell_text(c) + (f" (seed {ref})" if ref is not None else ""))
            lines.append(f"| {label(key, value)} | " + " | ".join(row) + " |")
    elif shape == "per_class":
        cell = result["cells"][0]
        names = next((v["class_names"] for v in cell["runs"].values() if v.get("class_names")), None) or []
        lines += ["| class | " + " | ".join(result["runs"]) + " |", "|---" * (len(result["runs"]) + 1) + "|"]
        lines.append("| all | " + " | ".join(cell_text(cell_result(cell, r)) for r in result["runs"]) + " |")
        for i, cname in enumerate(names):
            vals = []
            for r in result["runs"]:
                m = cell["runs"][r].get("metrics") or {}
                v = (m.get("per_class_accuracy") or {}).get(cname)
                vals.append("n/a" if v is None else f"{100 * v:.1f}")
            lines.append(f"| {cname} | " + " | ".join(vals) + " |")
    elif shape == "bars":
        key = next(iter(result["grid"]))
        lines += [f"| {key} | {run} |", "|---|---|"]
        for value in result["grid"][key]:
            lines.append(f"| {label(key, value)} | {cell_text(result_at(result, run, **{key: value}))} |")
    else:
        lines += ["| cell | " + " | ".join(result["runs"]) + " |", "|---" * (len(result["runs"]) + 1) + "|"]
        for cell in result["cells"]:
            params = ", ".join(f"{k} {label(k, v)}" for k, v in cell["params"].items())
            lines.append(f"| {params} | " + " | ".join(cell_text(cell_result(cell, r)) for r in result["runs"]) + " |")
    if name in STUDY_CLAIMS:
        lines += ["", f"The write-up's claim: {STUDY_CLAIMS[name]}."]
    lines += ["", f"![{name}](studies/{name}.png)", ""]
    return "\n".join(lines)


def study_figure(result: dict, dest: Path) -> None:
    import numpy as np

    from fashionbench.report import figures

    run = result["runs"][0]
    shape = layout(result)
    if shape == "table2d":
        rows, cols, rk, ck = grid_2d(result)
        table = [[(result_at(result, run, **{rk: rv, ck: cv}) or {}).get("mean") for cv in cols] for rv in rows]
        figures.heatmap(table, [f"{rk} {label(rk, rv)}" for rv in rows], [label(ck, cv) for cv in cols],
                        result["title"], dest)
    elif shape == "per_run":
        key = next(iter(result["grid"]))
        values = result["grid"][key]
        series = {r: [(result_at(result, r, **{key: v}) or {}).get("mean") for v in values] for r in result["runs"]}
        figures.lines(values, series, key, result["title"], dest)
    elif shape == "per_class":
        cell = result["cells"][0]
        parts = [(r, v) for r, v in cell["runs"].items() if v.get("confusion_matrix")]
        if parts:
            figures.confusion_pair([np.array(v["confusion_matrix"]) for _, v in parts],
                                   [f"{r}: {cell_text(cell_result(cell, r))}%" for r, _ in parts],
                                   parts[0][1]["class_names"], dest)
    else:  # bars, one per value (or per cell)
        found = [cell_result(cell, run) for cell in result["cells"]]
        labels = [", ".join(label(k, v) for k, v in cell["params"].items()) for cell in result["cells"]]
        figures.bars_with_errors(labels, [f["mean"] if f else float("nan") for f in found],
                                 [f["std"] if f else 0.0 for f in found], result["title"], dest)


def studies_section(studies_dir: Path, plots_dir: Path, tuning_dir: Path = TUNING_DIR,
                    catalogue: Path = CATALOGUE_FILE) -> list[str]:
    from fashionbench.core.catalogue import load_studies

    lines = ["## Studies", ""]
    index = ["# Study figures", "", "Written by the `report` stage; see ../report.md.", ""]
    noted: set[str] = set()
    studies = load_studies(catalogue)
    for name, study in studies.items():
        path = studies_dir / f"{name}.json"
        if not path.is_file():
            lines += [f"### {study.title}", "", f"Not run yet: `fashionbench study {name}`.", ""]
            index.append(f"- {name}: not run yet")
            continue
        index.append(f"- [{name}]({name}.png)")
        result = read_json(path)
        study_figure(result, plots_dir / "studies" / f"{name}.png")
        lines.append(study_markdown(result))
        if study.finding:
            lines += [f"**Finding.** {study.finding}", ""]
        why = explained_by(name, studies, studies_dir)
        lines += ["Its gaps to the write-up:", *why, ""] if why else []
        tuned = [run for run in study.runs if (tuning_dir / f"{run}.json").is_file() and run not in noted]
        lines += [*(tuned_line(read_json(tuning_dir / f"{run}.json")) for run in tuned), ""] if tuned else []
        noted.update(tuned)  # under the first study of a tuned run only
    write_text(plots_dir / "studies" / "index.md", "\n".join(index) + "\n")
    return lines
