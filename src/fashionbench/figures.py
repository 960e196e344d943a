"""Matplotlib figures for people (PNG); DVC's own plots read the CSV/JSON files instead."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed (CI, servers)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fashionbench.outputs import atomic_path  # noqa: E402


def save(fig, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def learning_curves(history: list[dict], title: str, dest: Path) -> None:
    """Loss and accuracy of train, validation (when the run has a validation split) and test, against epoch."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, label in (("train", "train"), ("val", "validation"), ("test", "test")):
        if history and f"{split}_loss" in history[0]:
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], marker=".", label=label)
            ax_acc.plot(epochs, [100 * r[f"{split}_accuracy"] for r in history], marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    save(fig, dest)


def confusion_figure(matrix: np.ndarray, class_names: list[str], title: str, dest: Path, ax=None) -> None:
    """Counts, rows = true class, columns = predicted class."""
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    high = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > high else "black")
    if own:
        save(fig, dest)


def misclassified_gallery(images: np.ndarray, true: list[int], pred: list[int], ids: list[int],
                          class_names: list[str], title: str, dest: Path, columns: int = 8) -> None:
    """Seed 000's figure: misclassified test images with true and predicted labels."""
    n = max(len(images), 1)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t, p, i in zip(axes.flat, images, true, pred, ids):
        ax.imshow(img, cmap="gray_r")
        ax.set_title(f"#{i}\ntrue {class_names[t]}\npred {class_names[p]}", fontsize=7)
    fig.suptitle(title)
    save(fig, dest)


def comparison_chart(rows: list[dict], dest: Path) -> None:
    """All runs side by side: test accuracy, parameter count, training time."""
    names = [r["run"] for r in rows]
    y = np.arange(len(rows))
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.45 * len(rows) + 1.5), sharey=True)
    panels = (
        ("test accuracy (%)", [100 * r["test_accuracy"] for r in rows], [100 * r.get("test_accuracy_std", 0) for r in rows]),
        ("parameters", [r["parameters"] for r in rows], None),
        ("training time (s)", [r["train_seconds"] for r in rows], None),
    )
    for ax, (label, values, err) in zip(axes, panels):
        ax.barh(y, values, xerr=err, color="tab:blue", alpha=0.8)
        ax.set(xlabel=label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names)
    accs = panels[0][1]
    finite = [a for a in accs if a == a]
    if finite:
        axes[0].set_xlim(max(0, min(finite) - 5), 100)
    axes[1].set_xscale("log")
    fig.suptitle("fashionbench: all runs")
    save(fig, dest)


def heatmap(table: list[list[float | None]], rows: list[str], columns: list[str], title: str, dest: Path) -> None:
    """Mean test accuracy (%) per cell, annotated; None = no result."""
    data = np.array([[np.nan if v is None else v for v in row] for row in table], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 * len(columns) + 2, 0.9 * len(rows) + 1.5))
    ax.imshow(data, cmap="viridis", vmin=0, vmax=100)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(columns)):
            text = "n/a" if np.isnan(data[i, j]) else f"{data[i, j]:.1f}"
            ax.text(j, i, text, ha="center", va="center", color="white" if data[i, j] < 60 else "black")
    ax.set_title(title)
    save(fig, dest)


def bars_with_errors(labels: list[str], means: list[float], stds: list[float], title: str, dest: Path,
                     ylabel: str = "test accuracy (%)") -> None:
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) + 2, 3.8))
    ax.bar(labels, means, yerr=stds, capsize=6, color="tab:blue", alpha=0.8)
    finite = [m for m in means if m == m]
    if finite:
        ax.set_ylim(max(0, min(finite) - 10), 100)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    save(fig, dest)


def lines(x: list, series: dict[str, list[float | None]], xlabel: str, title: str, dest: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, ys in series.items():
        ax.plot(x, [np.nan if y is None else y for y in ys], marker="o", label=label)
    ax.set(xlabel=xlabel, ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, dest)


def confusion_pair(matrices: list[np.ndarray], titles: list[str], class_names: list[str], dest: Path) -> None:
    fig, axes = plt.subplots(1, len(matrices), figsize=(7 * len(matrices), 6))
    for ax, matrix, title in zip(np.atleast_1d(axes), matrices, titles):
        confusion_figure(matrix, class_names, title, dest, ax=ax)
    save(fig, dest)
