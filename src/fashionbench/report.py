"""DVC stage `report`: every run side by side, the seeds' numbers beside ours, and the studies.

Reads metrics/*.json, plots/history/*.csv, plots/eval/*.json and studies/*.json; writes
plots/report.md, plots/comparison.png, plots/summary.csv and plots/studies/*.png. Nothing
here is edited by hand, and nothing in report.md depends on timing, so the same params and
seeds rebuild the same report.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import yaml

from fashionbench.config import BEFORE_KEY_EXISTED, PARAMS_FILE, ConfigError, load_params
from fashionbench.experiments import run_result
from fashionbench.models import BEYOND_SEEDS
from fashionbench.outputs import (PLOTS_DIR, STUDIES_DIR, evaluation_path, history_path, metrics_path, read_json, write_csv,
                                  write_text)
from fashionbench.reference import (OPTIMIZER_LABELS, SEED003_OPTIMIZER_LR, SEED_CELLS, SEED_RESULTS, STUDY_CLAIMS,
                                    verdict)
from fashionbench.stats import mean_std  # the same mean ± sample std as the metrics
from fashionbench.tune import TUNING_DIR  # tuning/<run>.json is tune's format


def read_optional_json(path: Path):
    return read_json(path) if path.is_file() else None


def read_history(run: str) -> list[dict]:
    path = history_path(run)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items()} for row in csv.DictReader(handle)]


def pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std else "")


def setup_text(cfg: dict) -> str:
    return f"{cfg['optimizer']} {cfg['lr']:g}, {cfg['epochs']} epochs, batch {cfg['batch_size']}, {cfg['loss']}"


def status_text(m: dict) -> str:
    return "" if m.get("status") == "completed" else f" ({m.get('status')} at epoch {m.get('diverged_epoch')})"


def smoke_settings(params: dict, raw: dict | None = None) -> list[str]:
    """The settings that cut training short, as set: `preprocess.max_train`/`max_test`, and
    `max_epochs` where it is below a run's own epochs (read from the raw params.yaml `raw`:
    the validated runs hold the epochs after the cap)."""
    found = [f"preprocess.{k}={params['preprocess'][k]}" for k in ("max_train", "max_test")
             if params["preprocess"].get(k) is not None]
    entries = (raw or {}).get("runs") or {}
    capped = sorted({cfg["max_epochs"] for run, cfg in params["runs"].items() if cfg.get("max_epochs") is not None
                     and (entries.get(run) or {}).get("epochs", (raw or {}).get("epochs", cfg["epochs"] + 1))
                     > cfg["max_epochs"]})
    if capped:
        found.insert(0, "max_epochs=" + "/".join(str(c) for c in capped))
    return found


SAME_RUN_IGNORES = ("seed", "seeds", "eval_batch_size")  # keys that do not change what a seed trains


def pooled_seeds(configs: dict[str, dict], evals: dict[str, dict | None], studies_dir: Path) -> dict[str, dict]:
    """run -> {seed: test accuracy} over the run's own seeds and those of every extra-seeds study
    (catalogue `extra_seeds: true`) whose cell trained the run as params.yaml has it now; a study
    that trained it otherwise is named in "stale" instead."""
    studies = [read_json(p) for p in sorted(studies_dir.glob("*.json"))]
    studies = [s for s in studies if s.get("extra_seeds")]
    pooled = {}
    for run, cfg in configs.items():
        ev = evals.get(run) or {}
        found = dict(zip(cfg["seeds"], ev.get("test_accuracy_per_seed") or []))
        stale = []
        for study in studies:
            for cell in study["cells"]:
                trained = (cell.get("configs") or {}).get(run)
                m = (cell["runs"].get(run) or {}).get("metrics") if trained else None
                if not m:
                    continue
                if any(trained.get(k, BEFORE_KEY_EXISTED.get(k)) != cfg.get(k)
                       for k in set(trained) | set(cfg) if k not in SAME_RUN_IGNORES):
                    stale.append(study["study"])
                    continue
                for seed, acc in zip(study["seeds"], m.get("test_accuracy_per_seed") or []):
                    found.setdefault(seed, acc)
        pooled[run] = {"accuracy": found, "stale": stale}
    return pooled


def explained_by(name: str, studies: dict, studies_dir: Path) -> list[str]:
    """Lines naming the studies that test `name`'s gap (catalogue `explains`) and what they found."""
    return [f"  tested by `fashionbench study {key}` ({study.title}): "
            + (study.finding if study.finding and (studies_dir / f"{key}.json").is_file() else "not run yet.")
            for key, study in studies.items() if name in study.explains]


def best_epoch_line(history: list[dict], seed: int) -> list[str]:
    """Where the test curve of the run's first seed peaks: a seed that reported its best epoch
    rather than its last would be that far above ours (chosen on test: an explanation, not a result)."""
    rows = [r for r in history if r.get("test_accuracy") is not None]
    if not rows:
        return []
    best = max(rows, key=lambda r: r["test_accuracy"])
    return [f"  the best epoch of our seed {seed}'s test curve: {100 * best['test_accuracy']:.2f}% at epoch "
            f"{int(best['epoch'])} of {int(rows[-1]['epoch'])} (the last: {100 * rows[-1]['test_accuracy']:.2f}%)."]


def zoo_table(metrics: dict[str, dict | None], configs: dict[str, dict], smoke: bool = False,
              pooled: dict[str, dict] | None = None, studies: dict | None = None,
              studies_dir: Path = STUDIES_DIR, histories: dict[str, list[dict]] | None = None) -> list[str]:
    lines = ["| run | seed | seed's setup | seed's accuracy | our setup | ours (mean ± std) | seeds | difference | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for run, cfg in configs.items():
        if cfg["model"] in BEYOND_SEEDS:
            continue  # their own section
        m = metrics.get(run)
        ref = SEED_RESULTS.get((cfg["model"], cfg["dataset"]))
        seed_cols = (f"{ref['seed']} | {ref['setup']} | {ref['accuracy']:.2f}" + (f" ± {ref['pm']}" if ref["pm"] else "")
                     if ref else "- | - | -")
        if m is None:
            lines.append(f"| {run} | {seed_cols} | {setup_text(cfg)} | not run yet | | | |")
            continue
        accuracies = (pooled or {}).get(run, {}).get("accuracy") or {}
        if accuracies and m.get("status") == "completed":
            ours, std = mean_std(list(accuracies.values()))
            n = len(accuracies)
        else:
            ours, std, n = m.get("test_accuracy"), m.get("test_accuracy_std") or 0.0, m.get("seeds", 1)
        for study in (pooled or {}).get(run, {}).get("stale", []):
            notes.append(f"- {run}: `fashionbench study {study}` trained it with other settings than params.yaml's; "
                         "its seeds are left out until the study is run again.")
        ours_text = pct(ours, std) + status_text(m)
        if ref and ours is not None:
            diff = f"{100 * ours - ref['accuracy']:+.2f}"
            word = verdict(100 * ours, ref["accuracy"], ref["pm"], 100 * std, n)
            word += " (smoke settings)" if smoke else ""
        else:
            diff, word = "n/a", ("no result" if ref else "no seed number")
        lines.append(f"| {run} | {seed_cols} | {setup_text(cfg)} | {ours_text} | {n} | {diff} | {word} |")
        if word.startswith(("higher", "lower")) and not smoke:
            why = explained_by(run, studies or {}, studies_dir)
            notes += [f"- {run}, {word}:", *(why or ["  no study in studies/catalogue.yaml explains it yet."]),
                      *best_epoch_line((histories or {}).get(run) or [], cfg["seeds"][0])]
    return lines + ([""] + notes if notes else [])


# The options a fast run turns on, as the report names them (each is off by default).
FAST_OPTIONS = (("width", "width {}"), ("blocks", "blocks {}"), ("normalize", "inputs {}"), ("augment", "augment {}"),
                ("random_erasing", "erasing {}"), ("label_smoothing", "label smoothing {}"),
                ("lr_schedule", "{} schedule"), ("warmup_epochs", "{} warm-up epochs"), ("ema", "EMA {}"),
                ("tta", "{} TTA"), ("weight_decay", "wd {}"))
OFF = (None, False, 0, 0.0, "none", "constant")


def fast_setup_text(cfg: dict) -> str:
    optimizer = cfg["optimizer"] + (" nesterov" if cfg["nesterov"] else "")
    options = [text.format(cfg[key]) for key, text in FAST_OPTIONS if cfg.get(key) not in OFF]
    return ", ".join([f"{optimizer} {cfg['lr']:g}, {cfg['epochs']} epochs, batch {cfg['batch_size']}", *options])


def beyond_seeds_section(metrics: dict[str, dict | None], configs: dict[str, dict]) -> list[str]:
    """fashionbench's own fast models beside the best seed number on their dataset."""
    runs = [run for run, cfg in configs.items() if cfg["model"] in BEYOND_SEEDS]
    if not runs:
        return []
    lines = ["## Beyond the seeds", "",
             "fashionbench's own models (hyperparameters chosen on the validation split), beside the best number "
             "any seed reports on the dataset. Training times: `metrics/<run>.json` and "
             "`benchmarks/TIME_TO_ACCURACY.md` (this report holds no timings).", "",
             "| run | setup | seeds | ours | validation | best seed number | difference |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        cfg, m = configs[run], metrics.get(run)
        best = max((ref for (_, dataset), ref in SEED_RESULTS.items() if dataset == cfg["dataset"]),
                   key=lambda ref: ref["accuracy"], default=None)
        best_text = f"{best['accuracy']:.2f} (seed {best['seed']})" if best else "-"
        if m is None:
            lines.append(f"| {run} | {fast_setup_text(cfg)} | {len(cfg['seeds'])} | not run yet | | {best_text} | |")
            continue
        ours = m.get("test_accuracy")
        diff = f"{100 * ours - best['accuracy']:+.2f}" if best and ours is not None else "n/a"
        lines.append(f"| {run} | {fast_setup_text(cfg)} | {m.get('seeds', 1)} | "
                     f"{pct(ours, m.get('test_accuracy_std'))}{status_text(m)} | {pct(m.get('val_accuracy'))} | "
                     f"{best_text} | {diff} |")
    return lines + [""]


def history_at(history: list[dict], epoch: int, key: str = "test_accuracy") -> float | None:
    row = next((r for r in history if int(r["epoch"]) == epoch), None)
    return None if row is None or row.get(key) is None else row[key]


def extra_claims(metrics: dict, histories: dict, evals: dict) -> list[str]:
    """The seeds' other numbers that the default runs can answer (curves, losses, classes)."""
    claims = []

    def add(claim, seed_value, ours, unit="%", tolerance=1.0):
        if ours is None:
            claims.append(f"| {claim} | {seed_value}{unit} | not run yet | | |")
            return
        diff = ours - seed_value
        word = (f"reproduced (within {tolerance:g}{unit or ''})" if abs(diff) <= tolerance
                else ("higher" if diff > 0 else "lower"))
        claims.append(f"| {claim} | {seed_value}{unit} | {ours:.2f}{unit} | {diff:+.2f} | {word} |")

    def scaled(value):
        return None if value is None else 100 * value

    add("seed 000: mlp_512 after epoch 1", 83.0, scaled(history_at(histories.get("mlp_512-fashion_mnist", []), 1)))
    add("seed 000: cnn_small after 5 epochs", 88.5, scaled(history_at(histories.get("cnn_small-fashion_mnist", []), 5)))
    patch = histories.get("patch_mlp-fashion_mnist") or []
    add("seed 001: patch_mlp train accuracy", 94.1, scaled(patch[-1]["train_accuracy"]) if patch else None)
    for run, seed_loss in (("cnn_baseline-fashion_mnist", 0.8203), ("cnn_dropout-fashion_mnist", 0.25)):
        m = metrics.get(run)
        add(f"seed 004: {run.split('-')[0]} test loss", seed_loss, m and m.get("test_loss"), unit="", tolerance=0.05)
    for run in ("cnn_baseline-fashion_mnist", "cnn_dropout-fashion_mnist"):
        ev = evals.get(run)
        if ev:
            per_class = ev["per_class_accuracy"]
            worst = min(range(len(per_class)), key=lambda c: per_class[c])
            name = ev["class_names"][worst]
            word = "reproduced" if name == "Shirt" else "not reproduced"
            claims.append(f"| seed 004: {run.split('-')[0]} worst class | Shirt | {name} ({100 * per_class[worst]:.1f}%) | | {word} |")
    return ["| claim | seed | ours | difference | verdict |", "|---|---|---|---|---|", *claims]


# ---- studies -------------------------------------------------------------------------

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
    """The seed's (mean, ±) for the cell (row value, column value) of a 2-D study, if it gave one."""
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
            lines += ["", f"Seed {result['seed']}:", "", *seed, "", "Ours minus the seed's:", "", *diffs]
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
        lines += ["", f"The seed's claim: {STUDY_CLAIMS[name]}."]
    lines += ["", f"![{name}](studies/{name}.png)", ""]
    return "\n".join(lines)


def study_figure(result: dict, dest: Path) -> None:
    import numpy as np

    from fashionbench import figures

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


def studies_section(studies_dir: Path, plots_dir: Path, tuning_dir: Path = TUNING_DIR) -> list[str]:
    from fashionbench.catalogue import load_studies

    lines = ["## Studies", ""]
    index = ["# Study figures", "", "Written by the `report` stage; see ../report.md.", ""]
    noted: set[str] = set()
    studies = load_studies(studies_dir / "catalogue.yaml")
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
        lines += ["Its gaps to the seed:", *why, ""] if why else []
        tuned = [run for run in study.runs if (tuning_dir / f"{run}.json").is_file() and run not in noted]
        lines += [*(tuned_line(read_json(tuning_dir / f"{run}.json")) for run in tuned), ""] if tuned else []
        noted.update(tuned)  # under the first study of a tuned run only
    write_text(plots_dir / "studies" / "index.md", "\n".join(index) + "\n")
    return lines


# ---- tuning ------------------------------------------------------------------------------

def config_text(config: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(config.items()))


def metric_text(metric: str, value: float) -> str:
    return pct(value) if metric == "val_accuracy" else f"{value:.4f}"


def tuned_line(tuned: dict) -> str:
    """One sentence under a study of the tuned run: what the search found (see ## Tuning)."""
    best, head = tuned.get("best"), f"**Tuned** (`fashionbench tune {tuned['run']}`, {len(tuned['trials'])} trials"
    if best is None:
        return head + "): no trial trained every epoch."
    return (head + f", chosen on validation; see *Tuning*): {tuned['metric'].replace('_', ' ')} "
            f"{metric_text(tuned['metric'], best[tuned['metric']])}, test {pct(best['test_accuracy'])}, "
            f"with {config_text(best['config'])}.")


def tuning_section(tuning_dir: Path, metrics: dict[str, dict | None], configs: dict[str, dict]) -> list[str]:
    """Each tuning/<run>.json (`fashionbench tune`): the best configuration found on the
    validation split, its test accuracy, beside the seed's number and the default run's."""
    results = sorted(tuning_dir.glob("*.json")) if tuning_dir.is_dir() else []
    if not results:
        return []
    lines = ["## Tuning", "",
             "`fashionbench tune <run>` (Ray Tune, search spaces in `tuning/spaces.yaml`): the best trial by "
             "validation accuracy, then its test accuracy, measured once. Reproduce it with the command given.", "",
             "| run | seed's number | default (ours) | trials | best validation metric | its test accuracy | best configuration |",
             "|---|---|---|---|---|---|---|"]
    commands = []
    for path in results:
        tuned = read_json(path)
        run = tuned["run"]
        cfg, m = configs.get(run), metrics.get(run)
        ref = SEED_RESULTS.get((cfg["model"], cfg["dataset"])) if cfg else None
        seed_text = f"{ref['accuracy']:.2f}" + (f" ± {ref['pm']}" if ref["pm"] else "") + f" ({ref['seed']})" if ref else "-"
        best = tuned.get("best")
        stopped = sum(r["status"] != "FAILED" and r["epochs_run"] < tuned["epochs"] for r in tuned["trials"])
        trials = f"{len(tuned['trials'])} ({stopped} stopped early)"
        if best is None:
            lines.append(f"| {run} | {seed_text} | {pct(m and m.get('test_accuracy'))} | {trials} | none finished | | |")
            continue
        lines.append(f"| {run} | {seed_text} | {pct(m and m.get('test_accuracy'))} | {trials} | "
                     f"{metric_text(tuned['metric'], best[tuned['metric']])} | {pct(best['test_accuracy'])} | "
                     f"{config_text(best['config'])} |")
        commands.append(f"- {run}: `{best['command']}`")
    return lines + ["", *commands, ""]


# ---- the whole report ------------------------------------------------------------------

def report_markdown(metrics: dict, params: dict, histories: dict, evals: dict, raw: dict | None = None,
                    pooled: dict | None = None, studies: dict | None = None, studies_dir: Path = STUDIES_DIR) -> list[str]:
    configs = params["runs"]
    smoke = smoke_settings(params, raw)
    lines = [
        "# fashionbench report", "",
        "Generated by the `report` stage from `metrics/`, `plots/history/`, `plots/eval/` and `studies/`;",
        "do not edit by hand. Test accuracy in %; ours is mean ± sample std over seeds where a run has several.",
        "Verdicts weigh the gap against both spreads (n: our seeds, s: their sample std, t: Student's 95% quantile at",
        "n - 1 degrees of freedom). A seed's number without a ± is one run, taken to vary as ours do: *reproduced* when",
        "it lies in our 95% prediction interval for one more run, ± t s √(1 + 1/n). With a ± (the seed's std): within",
        "√((2 ±)² + (t s / √n)²). Otherwise *higher* or *lower than the seed*. With one seed of ours and no ± from the",
        "seed there is no spread to judge by: a rough 1 point, and the verdict says so.",
        "",
    ]
    if smoke:
        lines += [f"**Smoke settings are on ({', '.join(smoke)}): these runs trained less than their seeds did, "
                  "so the verdicts below say nothing about the seeds.**", ""]
    lines += [
        "![every run beside its seed, and accuracy against training time](comparison.png)", "",
        "## The model zoo", "",
        "Ours pools each run's own seeds with those that an extra-seeds study (`fashionbench study zoo_seeds`) trained",
        "with the same settings; the seeds column counts them.", "",
        *zoo_table(metrics, configs, bool(smoke), pooled, studies, studies_dir, histories), "",
        "## The seeds' other numbers", "",
        *extra_claims(metrics, histories, evals), "",
        *beyond_seeds_section(metrics, configs),
    ]
    lines += ["## Per run", ""]
    for run in configs:
        m = metrics.get(run)
        if m:
            size = f"{m['parameters']:,} parameters, " if "parameters" in m else ""
            lines.append(f"- **{run}**: {size}{m['epochs_run']} epochs run; "
                         f"[curves](runs/{run}/curves.png), [confusion matrix](runs/{run}/confusion.png), "
                         f"[misclassified](runs/{run}/misclassified.png)")
    return lines + [""]


def chart_rows(results: list[dict]) -> list[dict]:
    """comparison.png's rows: accuracies in %, training time per seed, the seed's number where it gave one."""
    rows = []
    for m in results:
        ref = SEED_RESULTS.get((m["model"], m["dataset"])) or {}
        rows.append({"run": m["run"], "dataset": m["dataset"], "test_accuracy": 100 * m["test_accuracy"],
                     "test_accuracy_std": 100 * (m.get("test_accuracy_std") or 0.0),
                     "train_seconds": m["train_seconds"] / max(1, m.get("seeds", 1)),
                     "seed_accuracy": ref.get("accuracy"), "seed_pm": ref.get("pm")})
    return rows


def build_report(params: dict, plots_dir: Path = PLOTS_DIR, studies_dir: Path = STUDIES_DIR,
                 raw: dict | None = None, tuning_dir: Path = TUNING_DIR) -> None:
    """The report of `params` (validated); `raw`, the params.yaml as written, tells smoke caps apart."""
    from fashionbench import figures

    configs = params["runs"]
    evals = {run: read_optional_json(evaluation_path(run)) for run in configs}
    metrics = {}
    for run, cfg in configs.items():
        result = run_result(read_optional_json(metrics_path(run)), evals[run])
        # A metrics file without its details (deleted by hand): named from params.yaml.
        metrics[run] = result and {"run": run, "model": cfg["model"], "dataset": cfg["dataset"], **result}
    histories = {run: read_history(run) for run in configs}
    done = [m for m in metrics.values() if m]
    write_csv(plots_dir / "summary.csv", [
        {k: m.get(k) for k in ("run", "model", "dataset", "status", "test_accuracy", "test_accuracy_std",
                               "seeds", "test_loss", "val_accuracy", "epochs_run", "parameters", "train_seconds")}
        for m in done])
    figures.comparison_chart(chart_rows(done), plots_dir / "comparison.png")
    from fashionbench.catalogue import load_studies

    pooled = pooled_seeds(configs, evals, studies_dir)
    studies = load_studies(studies_dir / "catalogue.yaml")
    lines = (report_markdown(metrics, params, histories, evals, raw, pooled, studies, studies_dir)
             + tuning_section(tuning_dir, metrics, configs)
             + studies_section(studies_dir, plots_dir))
    write_text(plots_dir / "report.md", "\n".join(lines).rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    try:
        build_report(load_params(), raw=yaml.safe_load(PARAMS_FILE.read_text()))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"report: {PLOTS_DIR / 'report.md'}, figures under {PLOTS_DIR}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
