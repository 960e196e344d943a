"""Where each stage writes, and small atomic writers: one place that knows the layout."""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from pathlib import Path

MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")


def run_dir(run: str) -> Path:
    """models/<run>/: one state dict per seed (seed<k>.pt) and train.json."""
    return MODELS_DIR / run


def checkpoint_path(run: str, seed: int) -> Path:
    return run_dir(run) / f"seed{seed}.pt"


def train_summary_path(run: str) -> Path:
    return run_dir(run) / "train.json"


def history_path(run: str) -> Path:
    """Per-epoch curves of the run's first seed, a DVC plot (x: epoch)."""
    return PLOTS_DIR / "history" / f"{run}.csv"


def metrics_path(run: str) -> Path:
    return METRICS_DIR / f"{run}.json"


def evaluation_path(run: str) -> Path:
    """Confusion matrix, per-class accuracy and misclassified test ids (too big for `dvc metrics`)."""
    return PLOTS_DIR / "eval" / f"{run}.json"


def confusion_path(run: str) -> Path:
    """actual,predicted per test image: DVC's confusion template reads it."""
    return PLOTS_DIR / "confusion" / f"{run}.csv"


def figures_dir(run: str) -> Path:
    return PLOTS_DIR / "runs" / run


@contextlib.contextmanager
def atomic_path(dest: Path):
    """Yield a temp path beside `dest`; renamed onto it only if the block succeeds.

    So a crash or Ctrl-C never leaves a half-written file where the next stage looks.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite_or_none(obj):
    """NaN/inf -> null, so every JSON we write is strict JSON (a diverged run's loss is NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def write_json(dest: Path, obj) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(finite_or_none(obj), indent=2, allow_nan=False) + "\n")


def write_csv(dest: Path, rows: list[dict]) -> None:
    with atomic_path(dest) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def write_text(dest: Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def read_json(path: Path):
    return json.loads(Path(path).read_text())
