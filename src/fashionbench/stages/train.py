"""DVC stage `train@<run>`: train one run (model x dataset) over its seeds, log it to MLflow.

Writes models/<run>/seed<k>.safetensors (state dicts), models/<run>/train.json (config,
status, per-seed results and histories, the MLflow run id that evaluate logs into) and
plots/history/<run>.csv (per-epoch curves of the first seed, a DVC plot).

Resumable: after every epoch the state of the seed in progress is saved in resume/<run>/,
which DVC does not delete (it is not an output). A training killed in epoch k resumes at
epoch k on the next `dvc repro`, unless its config, data, code or torch changed; the state
is deleted once the stage has written its outputs.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from fashionbench.core.checkpoint import open_resume_state, resume_fingerprint
from fashionbench.core.config import ConfigError, run_config
from fashionbench.core.engine import train_run
from fashionbench.core.files import remove_tree, write_csv, write_json
from fashionbench.core.idx import DataError
from fashionbench.core.paths import history_path, resume_dir, train_summary_path
from fashionbench.core.runtime import resolve_device
from fashionbench.core.signals import Stopped, stop_signals_raise
from fashionbench.core.stats import mean_std


def write_outputs(cfg: dict, summary: dict) -> None:
    write_csv(history_path(cfg.name), summary["history"][str(cfg.seeds[0])])
    write_json(train_summary_path(cfg.name), summary)


def start_tracker(cfg: dict, previous: dict | None):
    """A new MLflow run for this attempt; a resumed attempt names the run it continues."""
    from fashionbench.tracking.runs import RunTracker, end_stale_runs

    end_stale_runs(cfg)  # a previous attempt killed by SIGKILL left its run RUNNING
    tracker = RunTracker.start(cfg)
    if previous and previous.get("mlflow_run_id"):
        tracker.set_tags({"resumed_from_run": previous["mlflow_run_id"]})
    return tracker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run name from params.yaml `runs`")
    parser.add_argument("--no-mlflow", action="store_true", help="train without logging to MLflow")
    parser.add_argument("--no-resume", action="store_true", help="discard any saved state and start at epoch 1")
    args = parser.parse_args(argv)

    from fashionbench.core.runtime import configure_process, training_threads
    from fashionbench.tracking.runs import ended_on_failure
    from fashionbench.tracking.store import TrackingError, check_reachable

    try:
        threads = training_threads()  # fixed for the whole run, recorded in train.json
        cfg = run_config(args.run)
        device = resolve_device(cfg.device)
        if not args.no_mlflow:
            check_reachable()  # fail now, not after an hour of training
        if args.no_resume:
            remove_tree(resume_dir(cfg.name))
        fingerprint = resume_fingerprint(cfg, device, threads)
    except (ConfigError, TrackingError, DataError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"error: {exc.filename}: not found; run `dvc repro preprocess` first", file=sys.stderr)
        return 1

    torch.set_num_threads(threads)
    configure_process(device)
    with stop_signals_raise():
        try:
            previous = open_resume_state(cfg.name, fingerprint)
            tracker = None if args.no_mlflow else start_tracker(cfg, previous)
            with ended_on_failure(tracker):
                write_json(resume_dir(cfg.name) / "attempt.json",
                           {"fingerprint": fingerprint, "mlflow_run_id": tracker.run_id if tracker else None,
                            "pid": os.getpid()})
                summary, model = train_run(cfg, device, tracker)
                summary["mlflow_run_id"] = tracker.run_id if tracker else None
                write_outputs(cfg, summary)
                if tracker:
                    tracker.finish_training(summary, model)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except Stopped as stop:
            print(f"{cfg.name}: stopped by {stop}; the state is kept in {resume_dir(cfg.name)}/, "
                  f"`dvc repro` resumes it", file=sys.stderr)
            return stop.exit_code
    remove_tree(resume_dir(cfg.name))  # every output is written: nothing left to resume
    accs = [s["final"].get("test_accuracy", float("nan")) for s in summary["seeds"]]
    mean, std = mean_std(accs)
    resumed = [s["resumed_at_epoch"] for s in summary["seeds"] if s["resumed_at_epoch"]]
    print(f"{cfg.name}: {summary['status']}, test accuracy {mean:.4f} ± {std:.4f} over {len(accs)} seed(s), "
          f"{summary['train_seconds']:.1f}s on {device}" + (f", resumed at epoch {resumed[0]}" if resumed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
