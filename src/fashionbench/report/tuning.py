"""The report's tuning section: each tuning session's best config beside the pipeline's run.
"""
from __future__ import annotations

from pathlib import Path

from fashionbench.core.files import read_json
from fashionbench.report.writeups import SEED_RESULTS
from fashionbench.report.zoo import pct


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
    validation split, its test accuracy, beside the write-up's number and the default run's."""
    results = sorted(tuning_dir.glob("*.json")) if tuning_dir.is_dir() else []
    if not results:
        return []
    lines = ["## Tuning", "",
             "`fashionbench tune <run>` (Ray Tune, search spaces in `lab/search_spaces.yaml`): the best trial by "
             "validation accuracy, then its test accuracy, measured once. Reproduce it with the command given.", "",
             "| run | write-up's number | default (ours) | trials | best validation metric | its test accuracy | best configuration |",
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
