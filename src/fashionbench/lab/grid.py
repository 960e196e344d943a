"""A study's grid: its cells (one value per key), their names, and the params each cell sets.
"""
from __future__ import annotations

import copy
import itertools
import json
import re

import yaml


def parse_value(text: str):
    """A grid value from the command line: int, float or string, as YAML would read it."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def cells(grid: dict) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def cell_name(study: str, cell: dict) -> str:
    """A git-ref-safe experiment name, e.g. optimizer_lr-optimizer_sgd-lr_0p1."""
    parts = [f"{k}_{v}" for k, v in cell.items()] or ["defaults"]
    return re.sub(r"[^A-Za-z0-9_-]", "", f"{study}-" + "-".join(parts).replace(".", "p"))


def overrides(runs, cell: dict, seeds, extra: list[str]) -> list[str]:
    """`-S` values for one cell: `++` adds the key to a run's entry or replaces it."""
    sets = []
    for run in runs:
        sets += [f"++runs.{run}.{k}={override_value(v)}" for k, v in cell.items()]
        sets.append(f"++runs.{run}.seeds=[{','.join(str(s) for s in seeds)}]")
    return sets + list(extra)


def apply_override(params: dict, override: str) -> None:
    """One `dvc exp run -S` value (`key=value`, `++runs.<run>.<key>=value`) applied to raw params."""
    path, _, text = override.lstrip("+").partition("=")
    keys = path.split(".")
    target = params
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = yaml.safe_load(text)


def cell_params(raw: dict, runs, cell: dict, seeds, extra: list[str]) -> dict:
    params = copy.deepcopy(raw)
    for run in runs:
        params["runs"][run].update(cell, seeds=list(seeds))
    for override in extra:
        apply_override(params, override)
    return params


def override_value(value) -> str:
    """How `dvc exp run -S` (Hydra's grammar) must read the value back exactly: repr of floats."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)
