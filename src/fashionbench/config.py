"""params.yaml: load, validate, and merge each run's entry over the shared defaults.

`python -m fashionbench.config` is the pipeline's first stage, `validate`: it depends on the
whole params.yaml and every other stage depends on its output, so DVC runs it (and stops on
its error) before any stage whose outputs it would delete. Every stage also calls
`load_params()` itself. An error is one line that names the key and what was expected.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from fashionbench.datasets import known_datasets

PARAMS_FILE = Path("params.yaml")

OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw")
LOSSES = ("cross_entropy", "nll", "mse", "bce")
INITS = ("default", "normal", "xavier_uniform", "kaiming")
PRECISIONS = ("auto", "float32", "bf16")
ACTIVATIONS = ("relu", "sigmoid", "tanh", "leaky_relu")
NORMALIZATIONS = ("none", "standard")
AUGMENTATIONS = ("none", "crop", "crop_flip")
TTA_MODES = ("none", "flip", "shift", "flip_shift")  # the views test-time augmentation averages (models.tta_views)
LR_SCHEDULES = ("constant", "onecycle", "cosine")
FLIPPABLE = ("fashion_mnist",)  # a mirrored garment is a garment; a mirrored digit is not a digit


class ConfigError(Exception):
    """params.yaml is wrong; the message is one line naming the key."""


def _num(key, v, *, lo=None, lo_open=False, hi=None, hi_open=False, integer=False, nullable=False):
    if v is None and nullable:
        return None
    kind = "an integer" if integer else "a number"
    if isinstance(v, bool):
        raise ConfigError(f"{key}: expected {kind}, got {v!r}")
    if integer:
        if not isinstance(v, int):
            raise ConfigError(f"{key}: expected {kind}, got {v!r}")
    else:
        # YAML 1.1 (PyYAML) reads `1e-3` as a string; YAML 1.2 (DVC's -S) as a float: accept both.
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise ConfigError(f"{key}: expected {kind}, got {v!r}") from None
        if not isinstance(v, (int, float)):
            raise ConfigError(f"{key}: expected {kind}, got {v!r}")
        v = float(v)
        if v != v or v in (float("inf"), float("-inf")):
            raise ConfigError(f"{key}: expected a finite number, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ConfigError(f"{key}: expected {'>' if lo_open else '>='} {lo}, got {v!r}")
    if hi is not None and (v >= hi if hi_open else v > hi):
        raise ConfigError(f"{key}: expected {'<' if hi_open else '<='} {hi}, got {v!r}")
    return v


def _choice(key, v, choices, nullable=False):
    if v is None and nullable:
        return None
    if v not in choices:
        raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {v!r}")
    return v


def _bool(key, v):
    if not isinstance(v, bool):
        raise ConfigError(f"{key}: expected true or false, got {v!r}")
    return v


def _device(key, v):
    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
        raise ConfigError(f"{key}: expected auto, cpu, cuda, cuda:N or mps, got {v!r}")
    return v


def _seeds(key, v):
    if v is None:
        return None
    if not isinstance(v, list) or not v or any(isinstance(s, bool) or not isinstance(s, int) for s in v):
        raise ConfigError(f"{key}: expected a non-empty list of integers, got {v!r}")
    if len(set(v)) != len(v):
        raise ConfigError(f"{key}: expected distinct seeds, got {v!r}")
    return list(v)


MAX_STAGES = 5  # 28, 14, 7, 4, 2 pixels: a sixth stride-2 stage would leave one pixel


def _blocks(key, v):
    if v is None:
        return None
    if (not isinstance(v, list) or not 1 <= len(v) <= MAX_STAGES
            or any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in v)):
        raise ConfigError(f"{key}: expected null or a list of 1 to {MAX_STAGES} integers >= 0 "
                          f"(residual blocks per stage), got {v!r}")
    return list(v)


def _model(key, v):
    from fashionbench.models import known_models  # models imports torch: only when validating runs

    names = known_models()
    if v not in names:
        raise ConfigError(f"{key}: unknown model {v!r}, expected one of: {', '.join(names)}")
    return v


# Training settings: valid at the top level (the shared defaults) and in any run entry.
TRAIN_KEYS = {
    "lr": lambda k, v: _num(k, v, lo=0, lo_open=True),
    "epochs": lambda k, v: _num(k, v, lo=1, integer=True),
    "max_epochs": lambda k, v: _num(k, v, lo=1, integer=True, nullable=True),
    "batch_size": lambda k, v: _num(k, v, lo=1, integer=True),
    "eval_batch_size": lambda k, v: _num(k, v, lo=1, integer=True, nullable=True),
    "optimizer": lambda k, v: _choice(k, v, OPTIMIZERS),
    "momentum": lambda k, v: _num(k, v, lo=0, hi=1, hi_open=True),
    "nesterov": _bool,
    "weight_decay": lambda k, v: _num(k, v, lo=0),
    "l1": lambda k, v: _num(k, v, lo=0),
    "loss": lambda k, v: _choice(k, v, LOSSES),
    "init": lambda k, v: _choice(k, v, INITS),
    "seed": lambda k, v: _num(k, v, integer=True),
    "seeds": _seeds,
    "device": _device,
    "deterministic": _bool,
    "precision": lambda k, v: _choice(k, v, PRECISIONS),
    # Model options; null means "as the zoo entry defines it".
    "depth": lambda k, v: _num(k, v, lo=1, integer=True, nullable=True),
    "width": lambda k, v: _num(k, v, lo=1, integer=True, nullable=True),
    "activation": lambda k, v: _choice(k, v, ACTIVATIONS, nullable=True),
    "dropout": lambda k, v: _num(k, v, lo=0, hi=1, hi_open=True, nullable=True),
    "patch_stride": lambda k, v: _num(k, v, lo=1, hi=7, integer=True, nullable=True),  # patch_mlp's 7x7: < 7 overlaps
    "blocks": _blocks,  # resnet_fast: residual blocks per stage
    # Beyond the seeds (fast training); each off by default, so the seeds' runs do not move.
    "normalize": lambda k, v: _choice(k, v, NORMALIZATIONS),
    "augment": lambda k, v: _choice(k, v, AUGMENTATIONS),
    "random_erasing": lambda k, v: _num(k, v, lo=0, hi=1),
    "label_smoothing": lambda k, v: _num(k, v, lo=0, hi=1, hi_open=True),
    "lr_schedule": lambda k, v: _choice(k, v, LR_SCHEDULES),
    "warmup_epochs": lambda k, v: _num(k, v, lo=0, integer=True),
    "ema": lambda k, v: _num(k, v, lo=0, lo_open=True, hi=1, hi_open=True, nullable=True),
    "tta": lambda k, v: _choice(k, v, TTA_MODES),
    # The training set: null trains on the prepared split (preprocess.val_fraction held out);
    # a number re-splits every training image, 0 trains on all of them (as seeds 000-002 and 004).
    "val_fraction": lambda k, v: _num(k, v, lo=0, hi=1, hi_open=True, nullable=True),
    # true: a new order every epoch; false: the training images in their prepared order every
    # epoch, as the PyTorch quickstart's DataLoader (no shuffle=True) that seed 000 followed.
    "shuffle": _bool,
}
# Keys added after results were stored: a stored config without one trained as this value.
BEFORE_KEY_EXISTED = {"shuffle": True}
RUN_ONLY_KEYS = {"model": _model, "dataset": None}  # dataset checked against `datasets`
PREPROCESS_KEYS = {
    "val_fraction": lambda k, v: _num(k, v, lo=0, hi=1, hi_open=True),
    "split_seed": lambda k, v: _num(k, v, lo=0, integer=True),
    "max_train": lambda k, v: _num(k, v, lo=1, integer=True, nullable=True),
    "max_test": lambda k, v: _num(k, v, lo=1, integer=True, nullable=True),
}
TOP_SECTIONS = ("datasets", "preprocess", "runs")


def _mapping(key, v):
    if not isinstance(v, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(v).__name__}")
    return v


def _check_keys(where: str, given: dict, allowed) -> None:
    for k in given:
        if k not in allowed:
            raise ConfigError(f"{where}{k}: unknown key, expected one of: {', '.join(sorted(allowed))}")


def validate(raw: Any) -> dict:
    """The validated params: {'defaults', 'datasets', 'preprocess', 'runs': {name: merged}}."""
    raw = _mapping("params.yaml", raw)
    _check_keys("", raw, set(TRAIN_KEYS) | set(TOP_SECTIONS))
    for section in TOP_SECTIONS:
        if section not in raw:
            raise ConfigError(f"{section}: missing (params.yaml needs {', '.join(TOP_SECTIONS)})")
    missing = [k for k in TRAIN_KEYS if k not in raw]
    if missing:
        raise ConfigError(f"{missing[0]}: missing top-level default (every training key needs one)")
    defaults = {k: check(k, raw[k]) for k, check in TRAIN_KEYS.items()}

    datasets = raw["datasets"]
    if not isinstance(datasets, list) or not datasets:
        raise ConfigError(f"datasets: expected a non-empty list, got {datasets!r}")
    for i, d in enumerate(datasets):
        _choice(f"datasets[{i}]", d, known_datasets())

    pre = _mapping("preprocess", raw["preprocess"])
    _check_keys("preprocess.", pre, PREPROCESS_KEYS)
    preprocess = {k: check(f"preprocess.{k}", pre.get(k)) for k, check in PREPROCESS_KEYS.items()
                  if k in pre or k in ("max_train", "max_test")}
    preprocess.setdefault("val_fraction", 0.1)
    preprocess.setdefault("split_seed", 0)

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
        merged[name] = validate_run(name, entry, defaults, datasets, preprocess["split_seed"])
    return {"defaults": defaults, "datasets": list(datasets), "preprocess": preprocess, "runs": merged}


def validate_run(name: str, entry: Any, defaults: dict, datasets: list[str], split_seed: int = 0) -> dict:
    where = f"runs.{name}."
    entry = _mapping(f"runs.{name}", entry)
    _check_keys(where, entry, set(TRAIN_KEYS) | set(RUN_ONLY_KEYS))
    for k in RUN_ONLY_KEYS:
        if k not in entry:
            raise ConfigError(f"{where}{k}: missing (every run names its model and dataset)")
    cfg = dict(defaults)
    cfg.update({k: TRAIN_KEYS[k](where + k, v) for k, v in entry.items() if k in TRAIN_KEYS})
    cfg["model"] = _model(where + "model", entry["model"])
    if entry["dataset"] not in datasets:
        raise ConfigError(f"{where}dataset: expected one of the datasets list ({', '.join(datasets)}), got {entry['dataset']!r}")
    cfg["dataset"] = entry["dataset"]
    cfg["name"] = name
    cfg["split_seed"] = split_seed  # a run's own val_fraction re-splits with the pipeline's seed
    if cfg["max_epochs"] is not None:  # smoke runs: one cap over every run's own epochs
        cfg["epochs"] = min(cfg["epochs"], cfg["max_epochs"])
    if cfg["seeds"] is None:
        cfg["seeds"] = [cfg["seed"]]
    if cfg["nesterov"] and (cfg["optimizer"] != "sgd" or cfg["momentum"] <= 0):
        origin = where + "nesterov" if "nesterov" in entry else "nesterov"
        raise ConfigError(f"{origin}: nesterov needs optimizer sgd with momentum > 0, "
                          f"got optimizer {cfg['optimizer']} with momentum {cfg['momentum']:g}")

    check_training_options(where, entry, cfg)

    from fashionbench.models import RUN_OPTIONS, model_options

    accepted = model_options(cfg["model"])
    for k in RUN_OPTIONS:
        if cfg[k] is not None and k not in accepted:
            origin = where + k if k in entry else k
            raise ConfigError(
                f"{origin}: model {cfg['model']} has no '{k}' option "
                f"(it takes: {', '.join(accepted) or 'none'}); set it to null"
            )
    return cfg


def check_training_options(where: str, entry: dict, cfg: dict) -> None:
    """The options that only make sense together: flips on garments, smoothing on cross-entropy,
    a warm-up within a cosine schedule (a warm-up longer than a smoke run is cut to the run)."""
    def origin(key):
        return where + key if key in entry else key

    if cfg["dataset"] not in FLIPPABLE:
        if cfg["augment"] == "crop_flip":
            raise ConfigError(f"{origin('augment')}: crop_flip mirrors images, which is wrong for {cfg['dataset']} "
                              "(a mirrored digit is another shape); use crop")
        if "flip" in cfg["tta"]:
            raise ConfigError(f"{origin('tta')}: {cfg['tta']} mirrors images, which is wrong for {cfg['dataset']} "
                              "(a mirrored digit is another shape); use shift or none")
    if cfg["label_smoothing"] and cfg["loss"] != "cross_entropy":
        raise ConfigError(f"{origin('label_smoothing')}: needs loss cross_entropy, got {cfg['loss']}")
    if cfg["warmup_epochs"] and cfg["lr_schedule"] != "cosine":
        raise ConfigError(f"{origin('warmup_epochs')}: a warm-up is part of lr_schedule cosine, got {cfg['lr_schedule']}")


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


def run_config(name: str, path: Path | str = PARAMS_FILE) -> dict:
    params = load_params(path)
    if name not in params["runs"]:
        raise ConfigError(f"runs.{name}: no such run, expected one of: {', '.join(params['runs'])}")
    return params["runs"][name]


def main(argv: list[str] | None = None) -> int:
    """DVC stage `validate`: check all of params.yaml, then write a file that every stage depends on.

    The file's content is the same for every valid params.yaml, so a params change re-runs
    only the stages whose own params changed, never all of them.
    """
    import argparse
    import sys

    from fashionbench.outputs import VALIDATED_PARAMS, write_text

    parser = argparse.ArgumentParser(description="Validate params.yaml (the pipeline's first stage).")
    parser.add_argument("params", nargs="?", default=str(PARAMS_FILE))
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_text(VALIDATED_PARAMS, "params.yaml is valid\n")
    print(f"{args.params}: valid ({len(params['runs'])} runs on {', '.join(params['datasets'])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
