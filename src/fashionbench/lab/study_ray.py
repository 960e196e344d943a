"""`fashionbench study <name> --executor ray`: a study's grid cells as Ray tasks.

Each cell's run is one task: the run with the cell's keys (and seeds) set in params.yaml,
trained and evaluated as the pipeline's train and evaluate stages do, in a scratch directory of
its own whose data/ is the repository's (the prepared data are read, never prepared again; on a
cluster the repository must be at the same path on every node). The result is the same
studies/<name>.json as through the DVC queue, with "executor": "ray". The trainings are not
DVC experiments and are not logged to MLflow: the queue (the default) is the way to keep them.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from fashionbench.core.config import PARAMS_FILE, validate
from fashionbench.lab.grid import cell_params


def train_and_evaluate_cell(params: dict, runs: list[str], repo: str, threads: int) -> dict:
    """One cell, in a Ray worker: train and evaluate each run; the rows `collect` would read."""
    import torch

    from fashionbench.core.engine import train_run
    from fashionbench.core.evaluation import evaluate_run
    from fashionbench.core.runtime import configure_process, resolve_device
    from fashionbench.report.results import run_result

    torch.set_num_threads(threads)
    configs = validate(params)["runs"]
    rows = {}
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="fashionbench-cell-") as scratch:
        os.symlink(Path(repo) / "data", Path(scratch) / "data")
        os.chdir(scratch)  # models/ and resume/ of this cell only; restored for the worker's next task
        try:
            for run in runs:
                cfg = configs[run]
                device = resolve_device(cfg.device)
                configure_process(device)  # as the train stage does: the same arithmetic (flushed denormals)
                trained, _ = train_run(cfg, device, tracker=None, progress=False, resume=False)
                result = evaluate_run(cfg, device, trained)
                rows[run] = {"metrics": run_result(result["metrics"], result["details"]),
                             "confusion_matrix": result["details"]["confusion_matrix"],
                             "class_names": result["details"]["class_names"],
                             "history": trained["history"]}
        finally:
            os.chdir(previous)
    return rows


def run_cells(name: str, study, grid: dict, seeds, extra: list[str], address: str | None,
              cpus_per_cell: int = 1) -> list[dict]:
    """Every cell as a Ray task (at most cores / cpus_per_cell at once); the cells of studies/<name>.json."""
    import ray

    from fashionbench.lab.grid import cell_name, cells

    raw = yaml.safe_load(PARAMS_FILE.read_text())
    repo = str(Path.cwd().resolve())
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(num_cpus=cpus_per_cell, max_retries=2)(train_and_evaluate_cell)
        grid_cells = cells(grid)
        # One task per cell and run: a study of many runs (zoo_seeds) spreads over the cores too.
        pending = {(cell_name(name, cell), run): task.remote(cell_params(raw, study.runs, cell, seeds, extra), [run],
                                                             repo, cpus_per_cell)
                   for cell in grid_cells for run in study.runs}
        done: dict[str, dict] = {}
        for (exp, run), ref in pending.items():
            try:
                done.setdefault(exp, {}).update(ray.get(ref))
            except ray.exceptions.RayError as exc:  # a run that raised: recorded failed, the others go on
                print(f"{exp}, {run}: failed: {str(exc).splitlines()[-1]}")
                done.setdefault(exp, {})[run] = {"metrics": None, "confusion_matrix": None, "class_names": None}
    finally:
        ray.shutdown()
    return [{"experiment": cell_name(name, cell), "params": cell,
             "runs": {run: done[cell_name(name, cell)][run] for run in study.runs}} for cell in grid_cells]
