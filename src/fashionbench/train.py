"""DVC stage `train@<run>`: train one run (model x dataset) over its seeds, log it to MLflow.

Writes models/<run>/seed<k>.pt (state dicts), models/<run>/train.json (config, status,
per-seed results and histories, the MLflow run id that evaluate logs into) and
plots/history/<run>.csv (per-epoch curves of the first seed, a DVC plot).
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from fashionbench.config import ConfigError, run_config
from fashionbench.datasets import DataError
from fashionbench.models import parameter_count
from fashionbench.outputs import atomic_path, checkpoint_path, history_path, train_summary_path, write_csv, write_json
from fashionbench.preprocess import load_prepared
from fashionbench.training import resolve_device, set_determinism, train_seed


def seed_summary(seed: int, result: dict) -> dict:
    last = result["history"][-1] if result["history"] else {}
    return {
        "seed": seed,
        "status": result["status"],
        "diverged_epoch": result["diverged_epoch"],
        "epochs_run": len(result["history"]),
        "train_seconds": round(result["seconds"], 3),
        "final": {k: v for k, v in last.items() if k not in ("epoch", "seconds")},
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def train_run(cfg: dict, device: torch.device, tracker=None, progress: bool = True) -> dict:
    """Train every seed of the run; save each state dict; return the train summary."""
    set_determinism(cfg["deterministic"], device)
    data = load_prepared(cfg["dataset"], device)
    seeds, histories, models = [], {}, {}
    for seed in cfg["seeds"]:
        # With several seeds each seed is a child MLflow run; with one, the run itself.
        seed_tracker = tracker.child(seed) if tracker and len(cfg["seeds"]) > 1 else tracker
        on_epoch = (lambda row, t=seed_tracker: t.log_metrics(
            {k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])) if seed_tracker else None
        result = train_seed(cfg, data, seed, device, on_epoch=on_epoch, progress=progress)
        with atomic_path(checkpoint_path(cfg["name"], seed)) as tmp:
            torch.save(result["model"].state_dict(), tmp)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run name from params.yaml `runs`")
    parser.add_argument("--no-mlflow", action="store_true", help="train without logging to MLflow")
    args = parser.parse_args(argv)

    from fashionbench.tracking import TrackingError, check_reachable

    try:
        cfg = run_config(args.run)
        device = resolve_device(cfg["device"])
        if not args.no_mlflow:
            check_reachable()  # fail now, not after an hour of training
    except (ConfigError, TrackingError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    tracker = None
    if not args.no_mlflow:
        from fashionbench.tracking import RunTracker

        tracker = RunTracker.start(cfg)
    try:
        summary = train_run(cfg, device, tracker)
    except DataError as exc:
        if tracker:
            tracker.fail()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BaseException:
        if tracker:
            tracker.fail()
        raise
    model = summary.pop("_model")
    summary["mlflow_run_id"] = tracker.run_id if tracker else None
    first = summary["history"][str(cfg["seeds"][0])]
    write_csv(history_path(cfg["name"]), first)
    write_json(train_summary_path(cfg["name"]), summary)
    if tracker:
        tracker.finish_training(summary, model)
    accs = [s["final"].get("test_accuracy", float("nan")) for s in summary["seeds"]]
    mean, std = mean_std(accs)
    print(f"{cfg['name']}: {summary['status']}, test accuracy {mean:.4f} ± {std:.4f} over {len(accs)} seed(s), "
          f"{summary['train_seconds']:.1f}s on {device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
