"""A run's results read back: metrics/<run>.json and plots/eval/<run>.json merged into one record,
its per-epoch history.
"""
from __future__ import annotations

import csv
from pathlib import Path

from fashionbench.core.files import read_json
from fashionbench.core.paths import history_path


def run_result(metrics: dict | None, details: dict | None) -> dict | None:
    """One run's headline metrics and evaluation details as one record (None: not evaluated)."""
    if not metrics:
        return None
    result = {k: v for k, v in (details or {}).items()
              if k not in ("confusion_matrix", "misclassified_ids", "misclassified_predictions", "per_class_accuracy")}
    result = {**result, "test_accuracy_std": 0.0, **metrics}
    if details:  # a metrics file of the old layout carries its own per-class dict
        result["per_class_accuracy"] = dict(zip(details.get("class_names") or [], details.get("per_class_accuracy") or []))
    return result


def plain_configs(params: dict) -> dict[str, dict]:
    """The validated params' runs as plain values: the report reads them beside configs stored
    in JSON by trainings and studies, which are plain too."""
    return {run: cfg.as_dict() if hasattr(cfg, "as_dict") else cfg for run, cfg in params["runs"].items()}


def read_optional_json(path: Path):
    return read_json(path) if path.is_file() else None


def read_history(run: str) -> list[dict]:
    path = history_path(run)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items()} for row in csv.DictReader(handle)]
