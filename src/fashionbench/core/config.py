"""params.yaml: load, validate, and merge each run's entry over the shared defaults.

`python -m fashionbench.stages.validate` is the pipeline's first stage: it depends on the
whole params.yaml and every other stage depends on its output, so DVC runs it (and stops on
its error) before any stage whose outputs it would delete. Every stage also calls
`load_params()` itself. An error is one line that names the key and what was expected.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from fashionbench.core.idx import known_datasets
from fashionbench.core.schema import TRAIN_KEYS, ConfigError, Preprocess, RunConfig, TrainingSettings, validated

PARAMS_FILE = Path("params.yaml")
FLIPPABLE = ("fashion_mnist",)  # a mirrored garment is a garment; a mirrored digit is not a digit
RUN_ONLY_KEYS = ("model", "dataset")
TOP_SECTIONS = ("datasets", "preprocess", "runs")


def check_model(key: str, value) -> str:
    from fashionbench.core.models import known_models  # models imports torch: only when validating runs

    names = known_models()
    if value not in names:
        raise ConfigError(f"{key}: unknown model {value!r}, expected one of: {', '.join(names)}")
    return value


def _mapping(key, v):
    if not isinstance(v, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(v).__name__}")
    return v


def _check_keys(where: str, given: dict, allowed) -> None:
    for k in given:
        if k not in allowed:
            raise ConfigError(f"{where}{k}: unknown key, expected one of: {', '.join(sorted(allowed))}")


def validate(raw: Any) -> dict:
    """The validated params: {'defaults': TrainingSettings, 'datasets': [...], 'preprocess':
    Preprocess, 'runs': {name: RunConfig}}."""
    raw = _mapping("params.yaml", raw)
    _check_keys("", raw, set(TRAIN_KEYS) | set(TOP_SECTIONS))
    for section in TOP_SECTIONS:
        if section not in raw:
            raise ConfigError(f"{section}: missing (params.yaml needs {', '.join(TOP_SECTIONS)})")
    missing = [k for k in TRAIN_KEYS if k not in raw]
    if missing:
        raise ConfigError(f"{missing[0]}: missing top-level default (every training key needs one)")
    defaults = validated(TrainingSettings, {k: raw[k] for k in TRAIN_KEYS})

    datasets = raw["datasets"]
    if not isinstance(datasets, list) or not datasets:
        raise ConfigError(f"datasets: expected a non-empty list, got {datasets!r}")
    for i, d in enumerate(datasets):
        if d not in known_datasets():
            raise ConfigError(f"datasets[{i}]: expected one of {', '.join(known_datasets())}, got {d!r}")

    pre = _mapping("preprocess", raw["preprocess"])
    _check_keys("preprocess.", pre, Preprocess.model_fields)
    preprocess = validated(Preprocess, pre, "preprocess.")

    runs = _mapping("runs", raw["runs"])
    if not runs:
        raise ConfigError("runs: expected at least one run")
    merged = {}
    for name, entry in runs.items():
        # A run name becomes a directory (models/<run>): '.', '..' or a hidden name would
        # point at models/ itself or hide from `ls`.
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ConfigError(f"runs.{name}: expected a name of letters, digits, '_', '-' and '.' "
                              "that starts with a letter or digit")
        merged[name] = validate_run(name, entry, defaults, datasets, preprocess)
    return {"defaults": defaults, "datasets": list(datasets), "preprocess": preprocess, "runs": merged}


def validate_run(name: str, entry: Any, defaults: TrainingSettings, datasets: list[str],
                 preprocess: Preprocess | None = None) -> RunConfig:
    """The run's entry over the defaults; `preprocess` (when given) adds its split's checks."""
    where = f"runs.{name}."
    entry = _mapping(f"runs.{name}", entry)
    _check_keys(where, entry, set(TRAIN_KEYS) | set(RUN_ONLY_KEYS))
    for k in RUN_ONLY_KEYS:
        if k not in entry:
            raise ConfigError(f"{where}{k}: missing (every run names its model and dataset)")
    own = {k: v for k, v in entry.items() if k in TRAIN_KEYS}
    values = validated(TrainingSettings, {**{k: getattr(defaults, k) for k in TRAIN_KEYS}, **own}, where).model_dump()
    model = check_model(where + "model", entry["model"])
    if entry["dataset"] not in datasets:
        raise ConfigError(f"{where}dataset: expected one of the datasets list ({', '.join(datasets)}), got {entry['dataset']!r}")
    progressive, own_epochs = values.get("progressive_epochs"), values.get("epochs")
    if (all(isinstance(v, int) and not isinstance(v, bool) for v in (progressive, own_epochs))
            and 0 < own_epochs <= progressive):
        origin = where + "progressive_epochs" if "progressive_epochs" in entry else "progressive_epochs"
        raise ConfigError(f"{origin}: expected fewer than epochs ({own_epochs}), so that the last epochs train at "
                          f"the 28 px the model is tested at, got {progressive}")
    if values["max_epochs"] is not None:  # smoke runs: one cap over every run's own epochs
        values["epochs"] = min(values["epochs"], values["max_epochs"])
        if isinstance(progressive, int) and progressive >= values["epochs"]:  # a smoke run still ends at 28 px
            values["progressive_epochs"] = values["epochs"] - 1
    values["seeds"] = values["seeds"] or [values["seed"]]
    # A run's own val_fraction re-splits with the pipeline's split seed.
    cfg = RunConfig(**values, name=name, model=model, dataset=entry["dataset"],
                    split_seed=preprocess.split_seed if preprocess else 0)
    if cfg.nesterov and (cfg.optimizer != "sgd" or cfg.momentum <= 0):
        origin = where + "nesterov" if "nesterov" in entry else "nesterov"
        raise ConfigError(f"{origin}: nesterov needs optimizer sgd with momentum > 0, "
                          f"got optimizer {cfg.optimizer} with momentum {cfg.momentum:g}")

    check_training_options(where, entry, cfg)

    from fashionbench.core.models import RUN_OPTIONS, model_options

    accepted = model_options(cfg.model)
    for k in RUN_OPTIONS:
        if getattr(cfg, k) is not None and k not in accepted:
            origin = where + k if k in entry else k
            raise ConfigError(
                f"{origin}: model {cfg.model} has no '{k}' option "
                f"(it takes: {', '.join(accepted) or 'none'}); set it to null"
            )
    check_feasible(where, entry, cfg, preprocess, defaults.batch_size)
    return cfg


def check_training_options(where: str, entry: dict, cfg: RunConfig) -> None:
    """The options that only make sense together: flips on garments, smoothing on cross-entropy,
    a warm-up within a cosine schedule (a warm-up longer than a smoke run is cut to the run),
    smaller images only for a model that takes them."""
    def origin(key):
        return where + key if key in entry else key

    if cfg.dataset not in FLIPPABLE:
        if cfg.augment == "crop_flip":
            raise ConfigError(f"{origin('augment')}: crop_flip mirrors images, which is wrong for {cfg.dataset} "
                              "(a mirrored digit is another shape); use crop")
        if "flip" in cfg.tta:
            raise ConfigError(f"{origin('tta')}: {cfg.tta} mirrors images, which is wrong for {cfg.dataset} "
                              "(a mirrored digit is another shape); use shift or none")
    if cfg.label_smoothing and cfg.loss != "cross_entropy":
        raise ConfigError(f"{origin('label_smoothing')}: needs loss cross_entropy, got {cfg.loss}")
    if cfg.warmup_epochs and cfg.lr_schedule != "cosine":
        raise ConfigError(f"{origin('warmup_epochs')}: a warm-up is part of lr_schedule cosine, got {cfg.lr_schedule}")
    if cfg.progressive_epochs and cfg.progressive_size is None:
        raise ConfigError(f"{origin('progressive_epochs')}: needs progressive_size (the pixels those epochs train at), "
                          "got null")
    from fashionbench.core.models import ANY_IMAGE_SIZE

    if cfg.progressive_size is not None and cfg.model not in ANY_IMAGE_SIZE:
        raise ConfigError(f"{origin('progressive_size')}: model {cfg.model} takes 28x28 images only "
                          f"(models that train at other sizes: {', '.join(ANY_IMAGE_SIZE)}); set it to null")


def check_feasible(where: str, entry: dict, cfg: RunConfig, preprocess: Preprocess | None,
                   shared_batch_size: int | None = None) -> None:
    """What this machine can train (core.feasibility), the key to blame named as the run has it."""
    from fashionbench.core.feasibility import Infeasible, check_run

    try:
        check_run(cfg, preprocess, shared_batch_size if "batch_size" in entry else None)
    except Infeasible as exc:
        key = exc.key if exc.key.startswith("preprocess.") or exc.key not in entry else where + exc.key
        raise ConfigError(f"{key}: {exc}") from None


def load_params(path: Path | str = PARAMS_FILE) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}") from None
    return validate(raw)


def run_config(name: str, path: Path | str = PARAMS_FILE) -> RunConfig:
    params = load_params(path)
    if name not in params["runs"]:
        raise ConfigError(f"runs.{name}: no such run, expected one of: {', '.join(params['runs'])}")
    return params["runs"][name]
