"""One Ray Tune trial: the run trained with the sampled keys, reporting its validation metric every
epoch with a checkpoint, as one MLflow run nested under the session's; the trials' rows and the best one.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

from fashionbench.core.config import ConfigError
from fashionbench.core.schema import RunConfig
from fashionbench.lab.tune.checkpoints import (
    STATE_FILE,
    reported_before,
    restore_checkpoint,
    resumed_at,
    trial_fingerprint,
    write_checkpoint,
)
from fashionbench.lab.tune.space import Search, plain, with_keys


def train_trial(config: dict, run: str, raw_params: dict, data: dict, parent_run_id: str | None,
                tracking_uri: str, threads: int) -> None:
    """One trial, in a Ray worker: the run's config with the sampled keys, its first seed, the
    prepared data from the object store; a nested MLflow run; the metric reported every epoch with
    a checkpoint of the training state (checkpoints.py). A retried trial resumes its last one."""
    import torch
    from ray import tune

    from fashionbench.core.engine import train_seed
    from fashionbench.core.runtime import configure_process, resolve_device
    from fashionbench.tracking.runs import RunTracker, display_name

    torch.set_num_threads(threads)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # the session's store, whatever this node was started with
    sampled = {k: plain(v) for k, v in config.items()}
    trial_name = tune.get_context().get_trial_name()
    try:
        cfg = with_keys(raw_params, run, sampled)
    except ConfigError as exc:  # a combination the space allows but params.yaml refuses: this trial fails
        if parent_run_id:
            failed = RunTracker.start({**with_keys(raw_params, run, {}).as_dict(), **sampled}, parent_run_id=parent_run_id,
                                      name=display_name(run, "tune", trial_name))
            failed.set_tags({"error": str(exc)})
            failed.end("FAILED")
        raise
    device = resolve_device(cfg.device)
    configure_process(device)  # as the train stage does: the same arithmetic (flushed denormals)
    tensors = {k: (torch.from_numpy(v.copy()) if hasattr(v, "dtype") else v) for k, v in data.items()}
    tensors = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}
    fingerprint = trial_fingerprint(cfg.as_dict(), data["digest"])
    with tempfile.TemporaryDirectory(prefix="fashionbench-trial-") as scratch:  # on this node; storage has the copies
        state_path = Path(scratch) / STATE_FILE
        loaded = tune.get_checkpoint()  # the last one reported, where Ray retries the trial
        resumed = None
        if loaded is not None:
            with loaded.as_directory() as saved:
                resumed = restore_checkpoint(Path(saved), state_path, fingerprint)
        tracker = None
        if parent_run_id:
            tracker = RunTracker.start(cfg, parent_run_id=parent_run_id, name=display_name(run, "tune", trial_name))
            if resumed:
                tracker.set_tags({"resumed_at_epoch": resumed_at(resumed), "resumed_from_run": resumed["mlflow_run_id"]})
        epochs_done = [0]

        def report(row: dict) -> None:
            epochs_done[0] = row["epoch"]
            if tracker:
                tracker.log_epoch(row)  # every epoch, the restored ones too: the run has the whole curve
            if reported_before(resumed, row["epoch"]):
                return
            metrics = {"epoch": row["epoch"], "val_accuracy": row["val_accuracy"], "val_loss": row["val_loss"],
                       "test_accuracy": row["test_accuracy"], "train_seconds": row["seconds"],
                       "resumed_at_epoch": resumed_at(resumed), "mlflow_run_id": tracker.run_id if tracker else ""}
            dest = write_checkpoint(Path(scratch) / f"epoch{row['epoch']}", state_path, row["epoch"], fingerprint,
                                    metrics["mlflow_run_id"])
            try:
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(dest))  # copied to storage here
            finally:
                shutil.rmtree(dest, ignore_errors=True)

        try:
            result = train_seed(cfg, tensors, cfg.seeds[0], device, on_epoch=report, progress=False,
                                state_path=state_path)
        except SystemExit:  # Ray Tune stops a trial by sys.exit in its report: ASHA, not a failure
            if tracker:
                if epochs_done[0] < cfg.epochs:
                    tracker.set_tags({"stopped_early": "true"})
                tracker.end()
            raise
        except BaseException:
            if tracker:
                tracker.end("FAILED")
            raise
    if tracker:
        tracker.set_tags({"status": result["status"]})
        tracker.end()


def mlflow_callback(epochs: int):
    """A Ray Tune callback on the driver that ends the MLflow run of a trial that did not end it
    itself: stopped early by ASHA (FINISHED, tagged), failed in a way the trial could not catch
    (its process or node died: FAILED), or retried (the failed attempt's run: KILLED)."""
    from ray.tune import Callback

    from fashionbench.tracking.runs import RunTracker

    def end(trial, status: str, **tags) -> None:
        run_id = (trial.last_result or {}).get("mlflow_run_id")
        if not run_id:
            return
        try:
            tracker = RunTracker(run_id)
            if tracker.client.get_run(run_id).info.status == "RUNNING":
                if tags:
                    tracker.set_tags(tags)
                tracker.end(status)
        except Exception as exc:  # noqa: BLE001 - a store hiccup must not stop the search
            print(f"warning: could not end MLflow run {run_id} of {trial}: {exc}", file=sys.stderr)

    class EndTrialRuns(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            early = (trial.last_result or {}).get("epoch", epochs) < epochs  # ASHA also stops a trial at max_t
            end(trial, "FINISHED", **({"stopped_early": "true"} if early else {}))

        def on_trial_error(self, iteration, trials, trial, **info):
            end(trial, "FAILED")

        def on_trial_recover(self, iteration, trials, trial, **info):
            end(trial, "KILLED", retried="true")

    return EndTrialRuns()


def prepared_arrays(cfg: RunConfig) -> dict:
    """The run's split of the prepared data as numpy arrays: Ray puts them in the object store once and every
    node reads them from there (zero-copy on the node), never preprocessing again."""
    import torch

    from fashionbench.core.splits import load_run_data

    data = load_run_data(cfg, torch.device("cpu"))
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in data.items()}


def trial_rows(results, search: Search) -> list[dict]:
    rows = []
    for result in results:
        history = result.metrics_dataframe
        last = result.metrics or {}
        rows.append({
            "trial": Path(result.path).name if result.path else None,
            "config": {k: plain(v) for k, v in (result.config or {}).items()},
            "status": "FAILED" if result.error else "TERMINATED",
            "error": str(result.error).strip().splitlines()[-1] if result.error else None,  # the exception, not Ray's header
            "epochs_run": int(last.get("epoch", 0)),
            "resumed_at_epoch": last.get("resumed_at_epoch"),  # retried from a checkpoint: its first epoch trained again
            "val_accuracy": last.get("val_accuracy"),
            "val_loss": last.get("val_loss"),
            "test_accuracy": last.get("test_accuracy"),
            "train_seconds": last.get("train_seconds"),
            "best_val_accuracy": float(history["val_accuracy"].max()) if history is not None and len(history) else None,
        })
    return rows


def best_trial(rows: list[dict], search: Search, max_epochs: int) -> dict | None:
    """The best trial by the search's metric at its last epoch, among those that trained every
    epoch (a trial ASHA stopped was measured at a shorter horizon than the pipeline trains)."""
    full = [r for r in rows if r["status"] != "FAILED" and r["epochs_run"] == max_epochs
            and r[search.metric] is not None and math.isfinite(r[search.metric])]
    if not full:
        return None
    sign = 1 if search.mode == "max" else -1
    return max(full, key=lambda r: sign * r[search.metric])


def end_trial_runs(parent_run_id: str, status: str = "KILLED") -> None:
    """End every child run of the session still RUNNING (best effort: the store may be down)."""
    from fashionbench.tracking.runs import RunTracker

    try:
        tracker = RunTracker(parent_run_id)
        exp = tracker.client.get_run(parent_run_id).info.experiment_id
        for child in tracker.client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_run_id}'"
                                                       " and attributes.status = 'RUNNING'", max_results=10000):
            RunTracker(child.info.run_id).end(status)
    except Exception as exc:  # noqa: BLE001 - never hide the session's own outcome
        print(f"warning: could not end the trials' MLflow runs: {exc}", file=sys.stderr)


def end_session_runs(parent_run_id: str) -> None:
    """End the session's run KILLED, and its trials' runs, where they are still RUNNING."""
    from fashionbench.tracking.runs import RunTracker

    end_trial_runs(parent_run_id)
    try:
        parent = RunTracker(parent_run_id)
        if parent.client.get_run(parent_run_id).info.status == "RUNNING":
            parent.end("KILLED")
    except Exception as exc:  # noqa: BLE001 - the store may be down; exit all the same
        print(f"warning: could not end MLflow run {parent_run_id}: {exc}", file=sys.stderr)
