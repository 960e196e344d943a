"""Evaluating a trained run: every seed's checkpoint on the test split (with its test-time
augmentation), the confusion matrix, per-class accuracy and the headline metrics.
"""
from __future__ import annotations

import numpy as np
import torch

from fashionbench.core.engine import predict
from fashionbench.core.files import read_json, read_tensors
from fashionbench.core.idx import CLASS_NAMES, DataError
from fashionbench.core.models import model_from_config
from fashionbench.core.paths import (
    checkpoint_path,
    train_summary_path,
)
from fashionbench.core.recipe import compute_loss
from fashionbench.core.runtime import eval_batch_size, place_model
from fashionbench.core.schema import RunConfig
from fashionbench.core.splits import load_run_data
from fashionbench.core.stats import mean_std


def confusion_matrix(true: np.ndarray, pred: np.ndarray, classes: int = 10) -> np.ndarray:
    """counts[t, p] = how many images of true class t were predicted as p."""
    return np.bincount(true * classes + pred, minlength=classes * classes).reshape(classes, classes)


def per_class_accuracy(matrix: np.ndarray) -> list[float]:
    totals = matrix.sum(axis=1)
    return [float(matrix[c, c] / totals[c]) if totals[c] else float("nan") for c in range(len(matrix))]


def load_checkpoint(cfg: RunConfig, seed: int, device) -> torch.nn.Module:
    model = model_from_config(cfg)
    path = checkpoint_path(cfg.name, seed)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `dvc repro train@{cfg.name}` first")
    model.load_state_dict(read_tensors(path)[0])
    return place_model(model, device, cfg.precision)[0].eval()


def read_trained(run: str) -> dict:
    summary_path = train_summary_path(run)
    if not summary_path.is_file():
        raise DataError(f"{summary_path}: not found; run `dvc repro train@{run}` first")
    return read_json(summary_path)


def evaluate_run(cfg: RunConfig, device, trained: dict) -> dict:
    """Evaluate every seed's checkpoint on the test split; details from the first seed."""
    data = load_run_data(cfg, device)
    images, labels = data["test_images"], data["test_labels"]
    per_seed = []
    for seed in cfg.seeds:
        model = load_checkpoint(cfg, seed, device)
        logits = predict(model, images, eval_batch_size(cfg, device), cfg.precision, cfg.tta).float()
        pred = logits.argmax(1)
        per_seed.append({
            "seed": seed,
            "accuracy": float((pred == labels).float().mean()),
            "loss": float(compute_loss(cfg.loss, logits, labels)),
            "pred": pred.cpu().numpy(),
        })
    first = per_seed[0]
    true = labels.cpu().numpy()
    matrix = confusion_matrix(true, first["pred"])
    wrong = np.flatnonzero(first["pred"] != true)
    accs = [s["accuracy"] for s in per_seed]
    return {"metrics": headline_metrics(trained, accs, [s["loss"] for s in per_seed]),
            "details": {
                "run": cfg.name, "model": cfg.model, "dataset": cfg.dataset,
                "status": trained["status"], "precision": trained.get("precision", "float32"),
                "threads": trained.get("threads"),
                "diverged_epoch": min((s["diverged_epoch"] for s in trained["seeds"] if s["diverged_epoch"]),
                                      default=None),
                "seeds": len(accs), "test_accuracy_per_seed": accs, "parameters": trained["parameters"],
                "class_names": CLASS_NAMES[cfg.dataset], "seed": first["seed"],
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
