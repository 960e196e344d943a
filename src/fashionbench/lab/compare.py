"""`fashionbench compare`: which variant is better, one row per run, one column per DVC experiment.

Reads DVC's documented JSON output (`dvc exp show --json`): the baseline commit (HEAD by
default), the workspace when its results differ from the baseline's, and the experiments
run on that baseline. Each cell is the run's test accuracy in % (± std over seeds where it has
several) and its difference from the baseline; the seed write-up's number stands beside.
`--metric` picks another headline number of metrics/<run>.json.
"""
from __future__ import annotations

import argparse
import sys

from fashionbench.lab.dvc_experiments import ExperimentsError, exp_show, experiments_of, shown_metrics, shown_params
from fashionbench.report.writeups import SEED_RESULTS

METRICS = ("test_accuracy", "val_accuracy", "test_loss", "epochs_run", "train_seconds")


PERCENT = ("test_accuracy", "val_accuracy")


WIDTH = 120  # more experiments than fit go to further blocks of the table, each with the run column


def run_metrics(metrics_files: dict) -> dict[str, dict]:
    """run -> its headline metrics, from the `metrics/<run>.json` entries of one column."""
    return {path[len("metrics/"):-len(".json")]: data for path, data in metrics_files.items()
            if path.startswith("metrics/") and path.endswith(".json") and data}


def columns_from(shown: list[dict], names: list[str] | None = None) -> tuple[list[dict], dict]:
    """[{name, runs}] (baseline, workspace if it differs, experiments oldest first) and the
    baseline's params, from `dvc exp show --json`."""
    workspace = next((c for c in shown if c.get("rev") == "workspace"), None)
    commits = [c for c in shown if c.get("rev") != "workspace"]
    if not commits:
        raise ExperimentsError("dvc exp show: no commit to compare against (commit the pipeline's results first)")
    baseline = commits[0]
    columns = [{"name": f"baseline {baseline['rev'][:7]}", "runs": run_metrics(shown_metrics(baseline))}]
    found = sorted(experiments_of(baseline), key=lambda e: e["timestamp"])
    if workspace is not None and not names:
        # After `dvc exp run` the workspace holds that experiment's results: shown once, as the experiment.
        runs = run_metrics(shown_metrics(workspace))
        if runs and all(runs != other for other in [columns[0]["runs"], *(run_metrics(e["metrics"]) for e in found)]):
            columns.append({"name": "workspace", "runs": runs})
    if names:
        unknown = [n for n in names if n not in {e["name"] for e in found}]
        if unknown:
            raise ExperimentsError(f"{unknown[0]}: no such experiment on {baseline['rev'][:7]}, expected one of: "
                                   f"{', '.join(e['name'] for e in found) or 'none (dvc exp run -n NAME ...)'}")
        found = [e for n in names for e in found if e["name"] == n]
    for exp in found:
        columns.append({"name": exp["name"], "runs": run_metrics(exp["metrics"]), "state": exp["state"]})
    return columns, shown_params(baseline)


def cell(metrics: dict | None, metric: str, base: float | None) -> str:
    if not metrics or metrics.get(metric) is None:
        return "-"
    scale = 100 if metric in PERCENT else 1
    value = scale * metrics[metric]
    text = f"{value:.2f}" if metric != "epochs_run" else f"{value:g}"
    std = metrics.get(f"{metric}_std")
    if std:
        text += f"±{scale * std:.2f}"
    if base is not None:
        text += f" ({value - base:+g})" if metric == "epochs_run" else f" ({value - base:+.2f})"
    return text


def seed_number(run: str, params: dict, metric: str) -> str:
    cfg = (params.get("runs") or {}).get(run) or {}
    ref = SEED_RESULTS.get((cfg.get("model"), cfg.get("dataset")))
    if not ref or metric != "test_accuracy":
        return "-"
    return f"{ref['accuracy']:.2f}" + (f"±{ref['pm']}" if ref["pm"] else "")


def table(columns: list[dict], params: dict, metric: str = "test_accuracy", width: int = WIDTH) -> list[str]:
    """The comparison as aligned text lines: run, seed write-up, baseline, then every other column
    with its difference from the baseline; in blocks of at most `width` characters."""
    runs = list(dict.fromkeys([*(params.get("runs") or {}), *(r for c in columns for r in c["runs"])]))
    scale = 100 if metric in PERCENT else 1
    header = ["run", "seed write-up", *(c["name"] + (f" [{c['state']}]" if c.get("state") not in (None, "success") else "")
                                        for c in columns)]
    rows = []
    for run in runs:
        base_metrics = columns[0]["runs"].get(run)
        base = scale * base_metrics[metric] if base_metrics and base_metrics.get(metric) is not None else None
        rows.append([run, seed_number(run, params, metric), cell(base_metrics, metric, None),
                     *(cell(c["runs"].get(run), metric, base) for c in columns[1:])])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    blocks, block = [], [0, 1, 2]  # run, seed write-up and baseline lead every block
    for i in range(3, len(header)):
        if len(block) > 3 and sum(widths[j] + 2 for j in block) + widths[i] > width:
            blocks.append(block)
            block = [0, 1, 2]
        block.append(i)
    blocks.append(block)
    lines = [f"{metric}" + (" (%)" if metric in PERCENT else "") + "; in brackets: the difference from the baseline"]
    for k, block in enumerate(blocks):
        if k:
            lines.append("")
        for r in [header, *rows]:
            lines.append("  ".join(r[j].ljust(widths[j]) if j == 0 else r[j].rjust(widths[j]) for j in block).rstrip())
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fashionbench compare", description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", help="experiments to show (default: all of the baseline's)")
    parser.add_argument("--metric", default="test_accuracy", choices=METRICS)
    parser.add_argument("--rev", default="HEAD", help="the baseline commit (default HEAD)")
    args = parser.parse_args(argv)
    try:
        columns, params = columns_from(exp_show("--rev", args.rev), args.experiments)
    except ExperimentsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(table(columns, params, args.metric)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
