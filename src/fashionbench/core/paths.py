"""Where every input and output lives, relative to the repository root.
"""
from __future__ import annotations

from pathlib import Path

RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
VALIDATED_PARAMS = Path("data/params.validated")  # written by validate; what download, preprocess, report wait on
RUN_CONFIG_DIR = Path("data/config")  # each run's resolved config, what its train and evaluate depend on
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
STUDIES_DIR = Path("studies")  # results of `fashionbench study`

# What users edit: the studies' catalogue and the tuning search spaces (inputs, apart from results).
LAB_DIR = Path("lab")
CATALOGUE_FILE = LAB_DIR / "studies.yaml"
SPACES_FILE = LAB_DIR / "search_spaces.yaml"


# Resumable training state: not a DVC output, so DVC never deletes it before `train` runs.
RESUME_DIR = Path("resume")


def raw_dir(dataset: str) -> Path:
    """data/raw/<dataset>/: the four verified IDX .gz files."""
    return RAW_DIR / dataset


def prepared_path(dataset: str) -> Path:
    """data/prepared/<dataset>.safetensors: uint8 images and int64 labels of train, val and test."""
    return PREPARED_DIR / f"{dataset}.safetensors"


def run_config_path(run: str) -> Path:
    """data/config/<run>.json: the run's entry merged over the defaults, as its stages train it."""
    return RUN_CONFIG_DIR / f"{run}.json"


def run_dir(run: str) -> Path:
    """models/<run>/: one state dict per seed (seed<k>.safetensors) and train.json."""
    return MODELS_DIR / run


def checkpoint_path(run: str, seed: int) -> Path:
    return run_dir(run) / f"seed{seed}.safetensors"


def train_summary_path(run: str) -> Path:
    return run_dir(run) / "train.json"


def resume_dir(run: str) -> Path:
    """resume/<run>/: the state of an unfinished training, deleted when the stage succeeds."""
    return RESUME_DIR / run


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


def study_path(name: str) -> Path:
    return STUDIES_DIR / f"{name}.json"


TUNING_DIR = Path("tuning")  # `fashionbench tune` writes <run>.json here (a dependency of the report, like studies/)
