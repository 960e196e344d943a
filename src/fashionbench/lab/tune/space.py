"""A tuning session's search space: the run's entry in lab/search_spaces.yaml, validated like params.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from fashionbench.core.config import PARAMS_FILE, ConfigError, validate
from fashionbench.core.paths import SPACES_FILE
from fashionbench.core.schema import TRAIN_KEYS
from fashionbench.lab.grid import override_value

METRICS = {"val_accuracy": "max", "val_loss": "min"}  # validation only: test numbers never steer a search


SCHEDULERS = ("asha", "none")


DISTRIBUTIONS = ("loguniform", "uniform", "integer", "choice")


ENTRY_KEYS = {"trials", "metric", "scheduler", "grace_epochs", "reduction_factor", "concurrent",
              "cpus_per_trial", "search_seed", "space"}


FIXED_KEYS = ("seed", "seeds", "device", "max_epochs")  # what a trial is, not what it searches


class TuneError(ConfigError):
    """A bad search space or tuning request; one line naming the file and key."""


@dataclass(frozen=True)
class Search:
    run: str
    space: dict          # training key -> (distribution, arguments)
    trials: int = 16
    metric: str = "val_accuracy"
    scheduler: str = "asha"
    grace_epochs: int = 1
    reduction_factor: int = 3
    concurrent: int = 1
    cpus_per_trial: int = 1
    search_seed: int = 0  # the sampler's RNG: the same file draws the same configurations

    @property
    def mode(self) -> str:
        return METRICS[self.metric]


def read_yaml(path: Path, what: str):
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise TuneError(f"{path}: not found ({what}; run from the repository root)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TuneError(f"{path}: not valid YAML" + (f" at line {mark.line + 1}" if mark else "")) from None


def positive_int(where: str, value, least: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise TuneError(f"{where}: expected an integer >= {least}, got {value!r}")
    return value


def with_keys(raw_params: dict, run: str, keys: dict) -> dict:
    """params.yaml (raw) with `keys` set in the run's entry, validated: the run's config."""
    params = dict(raw_params, runs={run: {**raw_params["runs"][run], **keys}})
    return validate(params)["runs"][run]


def check_value(where: str, raw_params: dict, run: str, key: str, value) -> None:
    """A value the space can produce must be one params.yaml accepts for the run (lr > 0, a
    known optimizer, crop_flip only on Fashion-MNIST, ...)."""
    try:
        with_keys(raw_params, run, {key: value})
    except ConfigError as exc:
        raise TuneError(f"{where}: {str(exc).split(': ', 1)[-1]}") from None


def space_entry(where: str, key: str, spec, raw_params: dict, run: str) -> tuple[str, list]:
    if key not in TRAIN_KEYS or key in FIXED_KEYS:
        searchable = sorted(set(TRAIN_KEYS) - set(FIXED_KEYS))
        raise TuneError(f"{where}: not a training key to search, expected one of: {', '.join(searchable)}")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise TuneError(f"{where}: expected one distribution, e.g. {{loguniform: [0.0001, 0.1]}}; "
                        f"one of: {', '.join(DISTRIBUTIONS)}")
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise TuneError(f"{where}.choice: expected a non-empty list of values")
    else:
        numeric = all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args or [])
        if not isinstance(args, list) or len(args) != 2 or not numeric or not args[0] < args[1]:
            raise TuneError(f"{where}.{kind}: expected [low, high] with low < high, got {args!r}")
        if kind == "loguniform" and args[0] <= 0:
            raise TuneError(f"{where}.loguniform: expected low > 0 (a log scale), got {args[0]!r}")
        if kind == "integer" and not all(isinstance(a, int) for a in args):
            raise TuneError(f"{where}.integer: expected integer bounds, got {args!r}")
    for i, value in enumerate(args):  # every choice, both ends of a range (ranges are convex)
        check_value(f"{where}.{kind}[{i}]", raw_params, run, key, value)
    return kind, list(args)


def load_search(run: str, path: Path = SPACES_FILE, params_path: Path = PARAMS_FILE) -> Search:
    raw_params = read_yaml(params_path, "params.yaml")
    runs = validate(raw_params)["runs"]  # a broken params.yaml is named as such, not as a space error
    spaces = read_yaml(path, "the search spaces")
    if not isinstance(spaces, dict):
        raise TuneError(f"{path}: expected a mapping of run names to searches")
    if run not in spaces:
        raise TuneError(f"{path}: no search for {run!r}; add an entry (searches: {', '.join(spaces) or 'none'})")
    if run not in raw_params["runs"]:
        raise TuneError(f"{path}: {run}: not a run of {params_path}")
    entry, where = spaces[run], f"{path}: {run}"
    if not isinstance(entry, dict):
        raise TuneError(f"{where}: expected a mapping with trials, metric and space")
    for key in entry:
        if key not in ENTRY_KEYS:
            raise TuneError(f"{where}.{key}: unknown key, expected one of: {', '.join(sorted(ENTRY_KEYS))}")
    space = entry.get("space")
    if not isinstance(space, dict) or not space:
        raise TuneError(f"{where}.space: expected a mapping of training keys to distributions")
    least = {"trials": 1, "grace_epochs": 1, "reduction_factor": 2, "concurrent": 1, "cpus_per_trial": 1, "search_seed": 0}
    fields = {k: positive_int(f"{where}.{k}", entry[k], least[k]) for k in least if k in entry}
    metric = entry.get("metric", "val_accuracy")
    if metric not in METRICS:
        raise TuneError(f"{where}.metric: expected one of: {', '.join(METRICS)} (validation only), got {metric!r}")
    scheduler = entry.get("scheduler", "asha")
    if scheduler not in SCHEDULERS:
        raise TuneError(f"{where}.scheduler: expected one of: {', '.join(SCHEDULERS)}, got {scheduler!r}")
    cfg = runs[run]
    if cfg.val_fraction == 0 or (cfg.val_fraction is None and raw_params["preprocess"].get("val_fraction") == 0):
        key = f"runs.{run}.val_fraction" if cfg.val_fraction == 0 else "preprocess.val_fraction"
        raise TuneError(f"{params_path}: {key}: 0 leaves no validation split to tune on")
    checked = {key: space_entry(f"{where}.space.{key}", key, spec, raw_params, run) for key, spec in space.items()}
    return Search(run=run, space=checked, metric=metric, scheduler=scheduler, **fields)


def ray_space(search: Search) -> dict:
    from ray import tune

    make = {"loguniform": lambda a: tune.loguniform(*a), "uniform": lambda a: tune.uniform(*a),
            "integer": lambda a: tune.randint(a[0], a[1] + 1), "choice": tune.choice}
    return {key: make[kind](args) for key, (kind, args) in search.space.items()}


def search_algorithm(search: Search):
    """Random sampling from the space, seeded: the same entry draws the same configurations."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=search.search_seed)


def plain(value):
    """A sampled value as params.yaml would hold it (numpy scalars to Python numbers)."""
    return value.item() if hasattr(value, "item") else value


def reproduce_command(run: str, config: dict) -> str:
    sets = " ".join(f"-S '++runs.{run}.{k}={override_value(v)}'" for k, v in sorted(config.items()))
    return f"dvc exp run {sets} train@{run} evaluate@{run}"
