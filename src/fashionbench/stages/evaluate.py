"""DVC stage `evaluate@<run>`: test metrics, confusion matrix, misclassified images, figures.

Writes metrics/<run>.json (DVC metrics: the headline numbers only), plots/eval/<run>.json
(status, per-seed accuracies, confusion matrix, per-class accuracy, misclassified test ids), plots/confusion/<run>.csv (DVC confusion
plot), plots/runs/<run>/*.png; and logs all of it into the run's MLflow run.
The model is rebuilt from the config that train.json records (what was trained),
not from today's params.yaml.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from fashionbench.core.config import ConfigError, run_config
from fashionbench.core.evaluation import evaluate_run, read_trained
from fashionbench.core.files import write_csv, write_json
from fashionbench.core.idx import DataError
from fashionbench.core.paths import (
    confusion_path,
    evaluation_path,
    figures_dir,
    metrics_path,
)
from fashionbench.core.runtime import resolve_device
from fashionbench.core.schema import RunConfig
from fashionbench.core.signals import Stopped, stop_signals_raise

GALLERY_SIZE = 32


def write_outputs(cfg: dict, result: dict) -> list:
    """Write metrics, details, confusion rows and the run's figures; return the figure paths."""
    from fashionbench.report import figures

    name, names = cfg.name, result["details"]["class_names"]
    write_json(metrics_path(name), result["metrics"])
    write_json(evaluation_path(name), result["details"])
    write_csv(confusion_path(name), [{"actual": names[t], "predicted": names[p]}
                                      for t, p in zip(result["true"], result["pred"])])
    out = figures_dir(name)
    history = result["trained"]["history"][str(cfg.seeds[0])]
    acc = 100 * result["metrics"]["test_accuracy"]
    paths = [out / "curves.png", out / "confusion.png", out / "misclassified.png"]
    figures.learning_curves(history, f"{name} ({result['details']['status']})", paths[0])
    figures.confusion_figure(np.array(result["details"]["confusion_matrix"]), names,
                             f"{name}: test accuracy {acc:.2f}%", paths[1])
    ids = result["details"]["misclassified_ids"][:GALLERY_SIZE]
    figures.misclassified_gallery(result["images"][ids], result["true"][ids].tolist(),
                                  result["pred"][ids].tolist(), ids, names,
                                  f"{name}: misclassified test images", paths[2])
    return paths


def log_to_mlflow(cfg: dict, result: dict, figure_paths: list) -> None:
    """Into the MLflow run that training opened (its id travels in train.json)."""
    run_id = result["trained"].get("mlflow_run_id")
    if not run_id:
        return
    from fashionbench.tracking.runs import RunTracker, ended_on_failure
    from fashionbench.tracking.store import tracking_uri

    if not RunTracker.exists(run_id):
        print(f"{cfg.name}: its training's MLflow run {run_id} (models/{cfg.name}/train.json) is not in "
              f"{tracking_uri()}: it was trained and logged elsewhere (restored from DVC's cache), so this "
              "evaluation is in metrics/ only; set MLFLOW_TRACKING_URI to that store (a team server) to log it",
              file=sys.stderr)
        return
    with ended_on_failure(RunTracker.resume(run_id)) as tracker:
        log_evaluation(tracker, cfg, result, figure_paths)


def log_evaluation(tracker, cfg: dict, result: dict, figure_paths: list) -> None:
    """The evaluation's part of the run: summary metrics (only where training logged no curve),
    the per-class accuracy as one table, the figures and files; then the model's registration."""
    m, details = result["metrics"], result["details"]
    # The parent of the seeds' runs has no per-epoch curve of its own: the summary, once (a re-run
    # of evaluate would log a second point at the same step).
    if details["seeds"] > 1 and not tracker.has_metric("test/accuracy"):
        summary = {"test/accuracy": m["test_accuracy"], "test/accuracy_std": m["test_accuracy_std"],
                   "test/loss": m["test_loss"]}
        if "val_accuracy" in m:
            summary["val/accuracy"] = m["val_accuracy"]
        tracker.log_metrics(summary, step=m["epochs_run"])
    # At the artifact root under the same names in every run: the UI's compare view shows only
    # the root files that all compared runs have, side by side.
    tracker.log_table({"class": details["class_names"],
                       "test accuracy": [round(a, 4) for a in details["per_class_accuracy"]]},
                      "per_class_accuracy.json")
    for path in figure_paths:
        tracker.log_artifact(path)
    tracker.log_artifact_as(metrics_path(cfg.name), "metrics.json")
    tracker.log_artifact_as(evaluation_path(cfg.name), "evaluation.json")
    version, champion = tracker.register_model(cfg.name, cfg.dataset, m["test_accuracy"])
    print(f"{cfg.name}: registered as fashionbench-{cfg.name} version {version}"
          + (" (@champion)" if champion else ""))
    tracker.end()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    args = parser.parse_args(argv)
    from fashionbench.core.runtime import configure_process, training_threads
    from fashionbench.tracking.store import TrackingError

    try:
        run_config(args.run)  # the run must still be in params.yaml
        trained = read_trained(args.run)
        cfg = RunConfig.stored(trained["config"])  # but it is evaluated as it was trained
        device = resolve_device(cfg.device)
        # With the training's thread count: its own test evaluation summed in the same order.
        torch.set_num_threads(trained.get("threads") or training_threads())
        configure_process(device)
        with stop_signals_raise():
            result = evaluate_run(cfg, device, trained)
            figure_paths = write_outputs(cfg, result)
            log_to_mlflow(cfg, result, figure_paths)
    except (ConfigError, DataError, TrackingError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Stopped as stop:
        print(f"{args.run}: evaluation stopped by {stop}", file=sys.stderr)
        return stop.exit_code
    m, details = result["metrics"], result["details"]
    print(f"{cfg.name}: test accuracy {100 * m['test_accuracy']:.2f}% "
          f"(± {100 * m.get('test_accuracy_std', 0.0):.2f}, {details['seeds']} seed(s)), "
          f"loss {m['test_loss']:.4f}, {details['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
