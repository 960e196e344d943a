"""The study catalogue, lab/studies.yaml: which studies exist, read by `fashionbench study`
and by the report. Data, not code: a user adds a study by adding an entry to the file.

Every entry is validated like params.yaml: an error is one line naming the file, the study and
the key. Grid keys are training keys (core.schema.TRAIN_KEYS), each value checked as params.yaml
would check it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fashionbench.core.paths import CATALOGUE_FILE
from fashionbench.core.schema import TRAIN_KEYS, ConfigError, check_setting

ENTRY_KEYS = {"title", "runs", "grid", "seeds", "seed", "extra_seeds", "explains", "finding"}


class CatalogueError(ConfigError):
    """lab/studies.yaml is wrong; one line naming the study and key."""


@dataclass(frozen=True)
class Study:
    title: str
    runs: tuple[str, ...]          # params.yaml runs the study trains
    grid: dict = field(default_factory=dict)  # training key -> values, crossed
    seeds: tuple[int, ...] = (0,)  # repeated seeds per cell (mean ± std)
    seed: str | None = None        # which write-up (000..004), for the seeds' own studies
    extra_seeds: bool = False      # no grid: more seeds of the runs, pooled with theirs in the model zoo table
    explains: tuple[str, ...] = ()  # the zoo runs or studies whose gap to the seed this study tests
    finding: str | None = None     # one sentence: what the study shows, written from its results


def load_studies(path: Path = CATALOGUE_FILE) -> dict[str, Study]:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise CatalogueError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise CatalogueError(f"{path}: not valid YAML" + (f" at line {mark.line + 1}" if mark else "")) from None
    if not isinstance(raw, dict) or not raw:
        raise CatalogueError(f"{path}: expected a mapping of study names to studies")
    return {name: study_entry(f"{path}: {name}.", name, entry) for name, entry in raw.items()}


def study_entry(where: str, name, entry) -> Study:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise CatalogueError(f"{where[:-1]}: expected a name of letters, digits, '_' and '-' (it names experiments)")
    if not isinstance(entry, dict):
        raise CatalogueError(f"{where[:-1]}: expected a mapping with title, runs and grid")
    for key in entry:
        if key not in ENTRY_KEYS:
            raise CatalogueError(f"{where}{key}: unknown key, expected one of: {', '.join(sorted(ENTRY_KEYS))}")
    title = entry.get("title")
    if not isinstance(title, str) or not title:
        raise CatalogueError(f"{where}title: expected a non-empty string")
    runs = entry.get("runs")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, str) for r in runs):
        raise CatalogueError(f"{where}runs: expected a non-empty list of params.yaml run names")
    grid = entry.get("grid") or {}
    if not isinstance(grid, dict):
        raise CatalogueError(f"{where}grid: expected a mapping of training keys to lists of values")
    for key, values in grid.items():
        if key not in TRAIN_KEYS or key in ("seed", "seeds"):
            raise CatalogueError(f"{where}grid.{key}: not a training key, expected one of: "
                                 f"{', '.join(sorted(set(TRAIN_KEYS) - {'seed', 'seeds'}))}")
        if not isinstance(values, list) or not values:
            raise CatalogueError(f"{where}grid.{key}: expected a non-empty list of values")
        for i, value in enumerate(values):
            check_setting(f"{where}grid.{key}[{i}]", key, value)
    seeds = entry.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise CatalogueError(f"{where}seeds: expected a non-empty list of integers")
    seed = entry.get("seed")
    if seed is not None and not (isinstance(seed, str) and re.fullmatch(r"\d{3}", seed)):
        raise CatalogueError(f"{where}seed: expected a write-up number as a quoted string, e.g. \"003\"")
    extra_seeds = entry.get("extra_seeds", False)
    if not isinstance(extra_seeds, bool):
        raise CatalogueError(f"{where}extra_seeds: expected true or false")
    if extra_seeds and grid:
        raise CatalogueError(f"{where}extra_seeds: a study of extra seeds trains the runs as params.yaml has them: "
                             "expected no grid")
    explains = entry.get("explains", [])
    if not isinstance(explains, list) or not all(isinstance(e, str) and e for e in explains):
        raise CatalogueError(f"{where}explains: expected a list of run or study names")
    finding = entry.get("finding")
    if finding is not None and (not isinstance(finding, str) or not finding.strip() or "\n" in finding.strip()):
        raise CatalogueError(f"{where}finding: expected one sentence on one line")
    return Study(title, tuple(runs), dict(grid), tuple(seeds), seed, extra_seeds, tuple(explains),
                 finding.strip() if finding else None)
