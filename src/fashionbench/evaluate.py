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

from fashionbench.config import ConfigError, run_config
from fashionbench.datasets import CLASS_NAMES, DataError
from fashionbench.models import model_from_config
from fashionbench.outputs import (checkpoint_path, confusion_path, evaluation_path, figures_dir, metrics_path,
                                  read_json, read_tensors, train_summary_path, write_csv, write_json)
from fashionbench.stopping import Stopped, stop_signals_raise
from fashionbench.preprocess import load_run_data
from fashionbench.stats import mean_std
from fashionbench.training import compute_loss, eval_batch_size, place_model, predict, resolve_device

GALLERY_SIZE = 32


def confusion_matrix(true: np.ndarray, pred: np.ndarray, classes: int = 10) -> np.ndarray:
    """counts[t, p] = how many images of true class t were predicted as p."""
    return np.bincount(true * classes + pred, minlength=classes * classes).reshape(classes, classes)


def per_class_accuracy(matrix: np.ndarray) -> list[float]:
    totals = matrix.sum(axis=1)
    return [float(matrix[c, c] / totals[c]) if totals[c] else float("nan") for c in range(len(matrix))]


def load_checkpoint(cfg: dict, seed: int, device) -> torch.nn.Module:
    model = model_from_config(cfg)
    path = checkpoint_path(cfg["name"], seed)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `dvc repro train@{cfg['name']}` first")
    model.load_state_dict(read_tensors(path)[0])
    return place_model(model, device, cfg["precision"])[0].eval()


def read_trained(run: str) -> dict:
    summary_path = train_summary_path(run)
    if not summary_path.is_file():
        raise DataError(f"{summary_path}: not found; run `dvc repro train@{run}` first")
    return read_json(summary_path)


def evaluate_run(cfg: dict, device, trained: dict) -> dict:
    """Evaluate every seed's checkpoint on the test split; details from the first seed."""
    data = load_run_data(cfg, device)
    images, labels = data["test_images"], data["test_labels"]
    per_seed = []
    for seed in cfg["seeds"]:
        model = load_checkpoint(cfg, seed, device)
        logits = predict(model, images, eval_batch_size(cfg, device), cfg["precision"], cfg.get("tta", "none")).float()
        pred = logits.argmax(1)
        per_seed.append({
            "seed": seed,
            "accuracy": float((pred == labels).float().mean()),
            "loss": float(compute_loss(cfg["loss"], logits, labels)),
            "pred": pred.cpu().numpy(),
        })
    first = per_seed[0]
    true = labels.cpu().numpy()
    matrix = confusion_matrix(true, first["pred"])
    wrong = np.flatnonzero(first["pred"] != true)
    accs = [s["accuracy"] for s in per_seed]
    return {"metrics": headline_metrics(trained, accs, [s["loss"] for s in per_seed]),
            "details": {
                "run": cfg["name"], "model": cfg["model"], "dataset": cfg["dataset"],
                "status": trained["status"],
                "diverged_epoch": min((s["diverged_epoch"] for s in trained["seeds"] if s["diverged_epoch"]),
                                      default=None),
                "seeds": len(accs), "test_accuracy_per_seed": accs, "parameters": trained["parameters"],
                "class_names": CLASS_NAMES[cfg["dataset"]], "seed": first["seed"],
                "confusion_matrix": matrix.tolist(), "per_class_accuracy": per_class_accuracy(matrix),
                "misclassified_ids": wrong.tolist(),
                "misclassified_predictions": first["pred"][wrong].tolist(),
            },
            "trained": trained, "true": true, "pred": first["pred"], "images": images.cpu().numpy()}


def headline_metrics(trained: dict, test_accuracies: list[float], test_losses: list[float]) -> dict:
    """metrics/<run>.json: only what answers "which variant is better", so `dvc exp show` and
    `fashionbench compare` stay readable; everything else goes to plots/eval/<run>.json."""
    mean, std = mean_std(test_accuracies)
    metrics = {"test_accuracy": mean}
    if len(test_accuracies) > 1:
        metrics["test_accuracy_std"] = std
    metrics["test_loss"] = float(np.mean(test_losses))
    val = [s["final"]["val_accuracy"] for s in trained["seeds"] if "val_accuracy" in s["final"]]
    if val:  # none when the run trains on every image (val_fraction 0)
        metrics["val_accuracy"] = mean_std(val)[0]
    # The last epoch's running accuracy on the training images (seed 001 reports its train accuracy).
    metrics["train_accuracy"] = mean_std([s["final"]["train_accuracy"] for s in trained["seeds"]])[0]
    metrics["epochs_run"] = trained["seeds"][0]["epochs_run"]
    metrics["train_seconds"] = trained["train_seconds"]
    return metrics


def write_outputs(cfg: dict, result: dict) -> list:
    """Write metrics, details, confusion rows and the run's figures; return the figure paths."""
    from fashionbench import figures

    name, names = cfg["name"], result["details"]["class_names"]
    write_json(metrics_path(name), result["metrics"])
    write_json(evaluation_path(name), result["details"])
    write_csv(confusion_path(name), [{"actual": names[t], "predicted": names[p]}
                                      for t, p in zip(result["true"], result["pred"])])
    out = figures_dir(name)
    history = result["trained"]["history"][str(cfg["seeds"][0])]
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
    from fashionbench.tracking import RunTracker, ended_on_failure

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
    tracker.log_artifact_as(metrics_path(cfg["name"]), "metrics.json")
    tracker.log_artifact_as(evaluation_path(cfg["name"]), "evaluation.json")
    version, champion = tracker.register_model(cfg["name"], cfg["dataset"], m["test_accuracy"])
    print(f"{cfg['name']}: registered as fashionbench-{cfg['name']} version {version}"
          + (" (@champion)" if champion else ""))
    tracker.end()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    args = parser.parse_args(argv)
    from fashionbench.cpu import configure_process
    from fashionbench.tracking import TrackingError

    try:
        run_config(args.run)  # the run must still be in params.yaml
        cfg = read_trained(args.run)["config"]  # but it is evaluated as it was trained
        device = resolve_device(cfg["device"])
        configure_process(device)
        with stop_signals_raise():
            result = evaluate_run(cfg, device, read_trained(args.run))
            figure_paths = write_outputs(cfg, result)
            log_to_mlflow(cfg, result, figure_paths)
    except (ConfigError, DataError, TrackingError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Stopped as stop:
        print(f"{args.run}: evaluation stopped by {stop}", file=sys.stderr)
        return stop.exit_code
    m, details = result["metrics"], result["details"]
    print(f"{cfg['name']}: test accuracy {100 * m['test_accuracy']:.2f}% "
          f"(± {100 * m.get('test_accuracy_std', 0.0):.2f}, {details['seeds']} seed(s)), "
          f"loss {m['test_loss']:.4f}, {details['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
