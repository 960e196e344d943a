"""`fashionbench study <name>`: rerun one of the seeds' studies as queued DVC experiments.

Each cell of a study's grid is one `dvc exp run --queue -n <study>-<cell> -S ...` that
trains and evaluates only the study's runs; `dvc queue start -j N` runs them (each training
then takes cores / N threads, fixed before it starts: fashionbench.core.runtime); the metrics of every cell are read
through DVC's documented interfaces (`dvc exp show --json`, `dvc.api.read`) into
studies/<name>.json, and the `report` stage turns that file into the study's table and
figure in plots/report.md. A study that runs past its deadline is stopped and fails.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from fashionbench.core.catalogue import CATALOGUE_FILE, Study, load_studies
from fashionbench.core.config import ConfigError
from fashionbench.core.files import write_json
from fashionbench.core.paths import evaluation_path, metrics_path, study_path, train_summary_path
from fashionbench.core.runtime import THREADS_ENV, available_cores, fixed_threads
from fashionbench.lab.dvc_experiments import ExperimentsError, dvc, exp_show, experiments_of
from fashionbench.lab.grid import cell_name, cells, overrides, parse_value
from fashionbench.report.results import run_result

DEFAULT_TIMEOUT_HOURS = 12.0


class StudyError(ExperimentsError):
    pass


def check_cells(name: str, study: Study, grid: dict, seeds, extra: list[str] = ()) -> dict[str, dict]:
    """Every cell applied to today's params.yaml must pass its validation, before anything is
    queued: a run the study names but params.yaml lacks, or a cell params.yaml would reject
    (crop_flip on digits, a width for a model without one, duplicate seeds), fails here in one
    line instead of in every queued experiment. Returns each cell's validated run configs, which
    studies/<name>.json keeps: the report pools a study's seeds with a run's only while they match."""
    import yaml

    from fashionbench.core.config import PARAMS_FILE, validate
    from fashionbench.lab.grid import cell_params

    raw = yaml.safe_load(PARAMS_FILE.read_text())
    missing = [run for run in study.runs if run not in (raw.get("runs") or {})]
    if missing:
        raise StudyError(f"{CATALOGUE_FILE}: {name}.runs: {missing[0]} is not a run of {PARAMS_FILE}")
    configs = {}
    for cell in cells(grid):
        try:
            runs = validate(cell_params(raw, study.runs, cell, seeds, extra))["runs"]
        except ConfigError as exc:
            raise StudyError(f"study {name}, cell {cell_name(name, cell)}: {exc}") from None
        configs[cell_name(name, cell)] = {run: runs[run].as_dict() for run in study.runs}  # as JSON keeps them
    return configs


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def queue_study(name: str, study: Study, grid: dict, seeds, extra: list[str]) -> list[tuple[str, dict]]:
    targets = [f"{stage}@{run}" for run in study.runs for stage in ("train", "evaluate")]
    queued = []
    for cell in cells(grid):
        exp = cell_name(name, cell)
        dvc("exp", "remove", exp, check=False)  # a rerun on the same baseline replaces its cells
        dvc("exp", "run", "--queue", "-n", exp, *sum((["-S", s] for s in overrides(study.runs, cell, seeds, extra)), []),
            *targets)
        queued.append((exp, cell))
        print(f"queued {exp}", flush=True)
    return queued


def shown_experiments(baseline: str) -> dict[str, dict]:
    """Experiment name -> {state, rev, metrics, ...} for the experiments of `baseline`
    (an executor state: queued, running, success or failed)."""
    return {exp["name"]: exp for commit in exp_show("--rev", baseline, "--hide-workspace")
            for exp in experiments_of(commit)}


def wait_for_experiments(names: list[str], baseline: str, deadline: float, jobs: int = 1,
                         poll_seconds: float = 5.0) -> None:
    """Until none of `names` is queued or running; past the deadline, stop them and fail.

    Queued experiments with fewer than `jobs` running get their workers started again: a
    queue worker can go away (one that receives a `dvc queue stop` left in DVC's broker exits
    after its first task), and the queue would then wait for ever.
    """
    while True:
        states = {n: e["state"] for n, e in shown_experiments(baseline).items() if n in names}
        pending = [n for n in names if states.get(n) in ("queued", "running")]
        if not pending:
            return
        running = sum(states[n] == "running" for n in pending)
        if running < jobs and running < len(pending):
            dvc("queue", "start", "--jobs", str(jobs), check=False)  # starts only the missing workers
        if time.monotonic() > deadline:
            dvc("queue", "kill", *[n for n in pending if states[n] == "running"], check=False)
            dvc("queue", "remove", *[n for n in pending if states[n] == "queued"], check=False)
            raise StudyError(f"deadline passed with {len(pending)} experiment(s) unfinished: {', '.join(pending)} "
                             "(stopped; raise --timeout-hours)")
        time.sleep(poll_seconds)


def read_committed_json(path: str, rev: str):
    """A JSON file as committed in an experiment (`dvc.api.read`: git or the DVC cache)."""
    import dvc.api

    try:
        return json.loads(dvc.api.read(path, rev=rev))
    except Exception:  # noqa: BLE001 - a cell that failed has no such file
        return None


def collect(study: Study, queued, baseline: str) -> list[dict]:
    """The queued cells' results, as the cells of studies/<name>.json."""
    shown = shown_experiments(baseline)
    results = []
    for exp, cell in queued:
        found = shown.get(exp) or {"metrics": {}, "rev": None, "state": "missing"}
        row = {"experiment": exp, "params": cell, "runs": {}}
        for run in study.runs:
            ok = found["state"] == "success" and found["metrics"].get(metrics_path(run).as_posix()) is not None
            metrics = read_committed_json(metrics_path(run).as_posix(), found["rev"]) if ok else None
            details = read_committed_json(evaluation_path(run).as_posix(), found["rev"]) if metrics else None
            trained = read_committed_json(train_summary_path(run).as_posix(), found["rev"]) if metrics else None
            row["runs"][run] = {"metrics": run_result(metrics, details),
                                "confusion_matrix": (details or {}).get("confusion_matrix"),
                                "class_names": (details or {}).get("class_names"),
                                "history": (trained or {}).get("history")}
        results.append(row)
    return results


def study_result(name: str, study: Study, grid: dict, seeds, wall_seconds: float, baseline: str, found: list[dict],
                 configs: dict[str, dict]) -> dict:
    """studies/<name>.json: the study, and every cell's results and run configs."""
    cells_out = [{**cell, "configs": configs[cell["experiment"]]} for cell in found]
    return {"study": name, "seed": study.seed, "title": study.title, "runs": list(study.runs), "grid": grid,
            "extra_seeds": study.extra_seeds, "baseline": baseline, "seeds": list(seeds),
            "wall_seconds": round(wall_seconds, 1), "cells": cells_out}


def run_study(name: str, grid_overrides: dict | None = None, seeds=None, jobs: int = 1,
              extra: list[str] | None = None, collect_from: str | None = None,
              timeout_hours: float = DEFAULT_TIMEOUT_HOURS, executor: str = "dvc", address: str | None = None) -> dict:
    """Queue, run and collect a study; with `collect_from` (a baseline commit) only collect
    the results of experiments already run on that commit (e.g. after a commit moved HEAD)."""
    studies = load_studies()
    if name not in studies:
        raise StudyError(f"unknown study {name!r}, expected one of: {', '.join(studies)} (or add it to {CATALOGUE_FILE})")
    study = studies[name]
    grid = dict(study.grid)
    for key, values in (grid_overrides or {}).items():
        if key not in grid:
            raise StudyError(f"--grid {key}: study {name} varies {', '.join(grid) or 'nothing'}")
        grid[key] = values
    seeds = list(seeds or study.seeds)
    configs = check_cells(name, study, grid, seeds, extra or [])
    start = time.perf_counter()
    if executor == "ray":
        from fashionbench.lab.study_ray import run_cells

        baseline = git("rev-parse", "HEAD").strip()
        found = run_cells(name, study, grid, seeds, extra or [], address, cpus_per_cell=1)
        result = study_result(name, study, grid, seeds, time.perf_counter() - start, baseline, found, configs)
        return finish(name, {**result, "executor": "ray"}, "fashionbench study --executor ray's output above")
    if collect_from:
        baseline, queued = git("rev-parse", collect_from).strip(), [(cell_name(name, cell), cell) for cell in cells(grid)]
        previous = study_path(name)
        wall = json.loads(previous.read_text()).get("wall_seconds", 0.0) if previous.is_file() else 0.0
    else:
        # Experiments hang under the commit they were queued on: remember it, HEAD may move.
        baseline = git("rev-parse", "HEAD").strip()
        deadline = time.monotonic() + timeout_hours * 3600
        threads = share_the_cores(jobs)  # first: a bad FASHIONBENCH_THREADS fails before anything is queued
        queued = queue_study(name, study, grid, seeds, extra or [])
        dvc("queue", "start", "--jobs", str(jobs))
        wait_for_experiments([exp for exp, _ in queued], baseline, deadline, jobs)
        wall = time.perf_counter() - start
    found = collect(study, queued, baseline)
    result = study_result(name, study, grid, seeds, wall, baseline, found, configs)
    if not collect_from:
        result["threads"] = threads  # each training's, fixed before the queue's workers started
    return finish(name, result, "`dvc queue logs <name>`")


def share_the_cores(jobs: int) -> int:
    """The threads each of `jobs` parallel trainings takes: FASHIONBENCH_THREADS when the user
    set it, else cores / jobs, set before the queue's workers start (they inherit it). A
    training keeps its count from start to end and records it in train.json; the same count
    gives the same bytes, so `--jobs 2` computes what `FASHIONBENCH_THREADS=1 --jobs 1` would."""
    threads = fixed_threads() or max(1, available_cores() // jobs)
    os.environ[THREADS_ENV] = str(threads)
    return threads


def finish(name: str, result: dict, logs: str) -> dict:
    """Write studies/<name>.json; fail naming the cells that have no result (the others are kept)."""
    failed = [c["experiment"] for c in result["cells"] if any(r["metrics"] is None for r in c["runs"].values())]
    write_json(study_path(name), result)
    if failed:
        raise StudyError(f"{len(failed)} experiment(s) failed: {', '.join(failed)} (see {logs}); "
                         f"the others are in {study_path(name)}")
    return result


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="fashionbench study", description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help=f"a study of {CATALOGUE_FILE}")
    parser.add_argument("--list", action="store_true", help="list the studies and exit")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="replace one axis of the grid, e.g. --grid lr=0.1,0.01")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds per cell (default: the study's)")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="parallel queue workers (default 1)")
    parser.add_argument("--timeout-hours", type=float, default=DEFAULT_TIMEOUT_HOURS,
                        help=f"stop the study's experiments and fail after this long (default {DEFAULT_TIMEOUT_HOURS:g})")
    parser.add_argument("--collect", metavar="REV", dest="collect_from",
                        help="do not run: collect the study's finished experiments queued on commit REV")
    parser.add_argument("--executor", choices=("dvc", "ray"), default="dvc",
                        help="dvc: queued DVC experiments (default); ray: every cell a Ray task")
    parser.add_argument("--address", help="--executor ray: a Ray cluster to join (default: an embedded Ray)")
    parser.add_argument("-S", "--set-param", action="append", default=[], dest="extra",
                        help="extra `dvc exp run -S` for every cell, e.g. -S max_epochs=1")
    args = parser.parse_args(argv)
    if args.list or not args.name:
        try:
            studies = load_studies()
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for key, study in studies.items():
            axes = " x ".join(f"{k} {v}" for k, v in study.grid.items()) or "defaults"
            origin = f"seed {study.seed}" if study.seed else "yours"
            print(f"{key:22s} {origin}: {', '.join(study.runs)}; {axes}; seeds {list(study.seeds)}")
        return 0
    grid = {}
    for item in args.grid:
        key, _, values = item.partition("=")
        if not values:
            print(f"error: --grid {item}: expected KEY=V1,V2", file=sys.stderr)
            return 2
        grid[key] = [parse_value(v) for v in values.split(",")]
    if args.jobs < 1 or args.timeout_hours <= 0:
        print("error: --jobs and --timeout-hours: expected positive numbers", file=sys.stderr)
        return 2
    try:
        result = run_study(args.name, grid, args.seeds, args.jobs, args.extra, args.collect_from, args.timeout_hours,
                           args.executor, args.address)
        dvc("repro", "--single-item", "report")
    except (ExperimentsError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from fashionbench.report.studies import study_markdown

    print(study_markdown(result))
    print(f"{study_path(args.name)} written; the table and figure are in plots/report.md")
    return 0
