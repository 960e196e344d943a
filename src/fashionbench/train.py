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
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from fashionbench.config import ConfigError, run_config
from fashionbench.datasets import DataError
from fashionbench.models import parameter_count
from fashionbench.outputs import (checkpoint_path, history_path, prepared_path, read_json, remove_tree, resume_dir,
                                  train_summary_path, write_csv, write_json, write_tensors)
from fashionbench.preprocess import load_run_data
from fashionbench.stats import mean_std
from fashionbench.stopping import Stopped, stop_signals_raise
from fashionbench.training import resolve_device, set_determinism, train_seed

PACKAGE_DIR = Path(__file__).parent


def seed_summary(seed: int, result: dict) -> dict:
    last = result["history"][-1] if result["history"] else {}
    return {
        "seed": seed,
        "status": result["status"],
        "diverged_epoch": result["diverged_epoch"],
        "epochs_run": len(result["history"]),
        "resumed_at_epoch": result["resumed_at_epoch"],
        "train_seconds": round(result["seconds"], 3),
        "final": {k: v for k, v in last.items() if k not in ("epoch", "seconds")},
    }


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resume_fingerprint(cfg: dict, device: torch.device) -> str:
    """What a saved state is only valid for: this config, these prepared data, this code and torch."""
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    digest.update(f"{device}|{torch.__version__}|{file_md5(prepared_path(cfg['dataset']))}".encode())
    for source in sorted(PACKAGE_DIR.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def open_resume_state(run: str, fingerprint: str) -> dict | None:
    """The previous attempt's record ({fingerprint, mlflow_run_id}) when its state can be resumed;
    a state made for another config, data or code is deleted."""
    record_path = resume_dir(run) / "attempt.json"
    if not record_path.is_file():
        remove_tree(resume_dir(run))
        return None
    try:
        record = read_json(record_path)
    except ValueError:
        record = {}
    if record.get("fingerprint") != fingerprint:
        print(f"{run}: discarding the saved state in {resume_dir(run)} (config, data or code changed)", file=sys.stderr)
        remove_tree(resume_dir(run))
        return None
    return record


def train_run(cfg: dict, device: torch.device, tracker=None, progress: bool = True,
              on_epoch_start=None, resume: bool = True) -> dict:
    """Train every seed of the run (resuming a saved state); save each state dict; return the summary."""
    set_determinism(cfg["deterministic"], device)
    data = load_run_data(cfg, device)
    state_dir = resume_dir(cfg["name"])
    seeds, histories, models = [], {}, {}
    for seed in cfg["seeds"]:
        # With several seeds each seed is a child MLflow run; with one, the run itself.
        seed_tracker = tracker.child(seed) if tracker and len(cfg["seeds"]) > 1 else tracker
        on_epoch = seed_tracker.log_epoch if seed_tracker else None
        result = train_seed(cfg, data, seed, device, on_epoch=on_epoch, progress=progress,
                            state_path=state_dir / f"seed{seed}.pt" if resume else None,
                            on_epoch_start=on_epoch_start)
        write_tensors(checkpoint_path(cfg["name"], seed), result["model"].state_dict())
        if seed_tracker and result["resumed_at_epoch"]:
            seed_tracker.set_tags({"resumed_at_epoch": result["resumed_at_epoch"]})
        summary = seed_summary(seed, result)
        if seed_tracker is not tracker:
            seed_tracker.finish(summary)
        seeds.append(summary)
        histories[str(seed)] = result["history"]
        models[seed] = result["model"]
    first = cfg["seeds"][0]
    return {
        "run": cfg["name"],
        "config": cfg,
        "device": str(device),
        "precision": result["precision"],  # what precision 'auto' became on this device
        "torch": torch.__version__,
        "parameters": parameter_count(models[first]),
        "train_seconds": round(sum(s["train_seconds"] for s in seeds), 3),
        "status": "diverged" if any(s["status"] == "diverged" for s in seeds) else "completed",
        "seeds": seeds,
        "history": histories,
        "digest": data["digest"],
        "_model": models[first],
    }


def write_outputs(cfg: dict, summary: dict) -> None:
    write_csv(history_path(cfg["name"]), summary["history"][str(cfg["seeds"][0])])
    write_json(train_summary_path(cfg["name"]), summary)


def start_tracker(cfg: dict, previous: dict | None):
    """A new MLflow run for this attempt; a resumed attempt names the run it continues."""
    from fashionbench.tracking import RunTracker, end_stale_runs

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

    from fashionbench.cpu import CoreShare, configure_process, fixed_threads
    from fashionbench.tracking import TrackingError, check_reachable, ended_on_failure

    try:
        fixed_threads()
        cfg = run_config(args.run)
        device = resolve_device(cfg["device"])
        if not args.no_mlflow:
            check_reachable()  # fail now, not after an hour of training
        if args.no_resume:
            remove_tree(resume_dir(cfg["name"]))
        fingerprint = resume_fingerprint(cfg, device)
    except (ConfigError, TrackingError, DataError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"error: {exc.filename}: not found; run `dvc repro preprocess` first", file=sys.stderr)
        return 1

    configure_process(device)
    with stop_signals_raise():
        try:
            previous = open_resume_state(cfg["name"], fingerprint)
            tracker = None if args.no_mlflow else start_tracker(cfg, previous)
            with ended_on_failure(tracker), CoreShare() as share:
                write_json(resume_dir(cfg["name"]) / "attempt.json",
                           {"fingerprint": fingerprint, "mlflow_run_id": tracker.run_id if tracker else None,
                            "pid": os.getpid()})
                summary = train_run(cfg, device, tracker, on_epoch_start=share.update if device.type == "cpu" else None)
                model = summary.pop("_model")
                summary["mlflow_run_id"] = tracker.run_id if tracker else None
                write_outputs(cfg, summary)
                if tracker:
                    tracker.finish_training(summary, model)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except Stopped as stop:
            print(f"{cfg['name']}: stopped by {stop}; the state is kept in {resume_dir(cfg['name'])}/, "
                  f"`dvc repro` resumes it", file=sys.stderr)
            return stop.exit_code
    remove_tree(resume_dir(cfg["name"]))  # every output is written: nothing left to resume
    accs = [s["final"].get("test_accuracy", float("nan")) for s in summary["seeds"]]
    mean, std = mean_std(accs)
    resumed = [s["resumed_at_epoch"] for s in summary["seeds"] if s["resumed_at_epoch"]]
    print(f"{cfg['name']}: {summary['status']}, test accuracy {mean:.4f} ± {std:.4f} over {len(accs)} seed(s), "
          f"{summary['train_seconds']:.1f}s on {device}" + (f", resumed at epoch {resumed[0]}" if resumed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
