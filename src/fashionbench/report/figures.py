"""Matplotlib figures for people (PNG); DVC's own plots read the CSV/JSON files instead.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fashionbench.core.files import atomic_path

matplotlib.use("Agg")  # files only, no display needed (CI, servers)


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
    """Write-up 000's figure: misclassified test images with true and predicted labels."""
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
    """Every run, one row per dataset: test accuracy beside the write-up's number (left), and test
    accuracy against training time, the accuracy/cost trade-off (right).

    Each row is a dict with run, dataset, test_accuracy, test_accuracy_std, train_seconds and,
    where the write-up reported one, seed_accuracy and seed_pm (all accuracies in %). Dots, not
    bars: the accuracy axis need not start at zero, so it spans the values themselves.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    datasets = list(dict.fromkeys(r["dataset"] for r in rows)) or ["none"]
    counts = [max(2, sum(r["dataset"] == d for r in rows)) for d in datasets]
    fig, axes = plt.subplots(len(datasets), 2, figsize=(13, 0.42 * sum(counts) + 1.6 * len(datasets)),
                             gridspec_kw={"height_ratios": counts, "width_ratios": [1.15, 1]}, squeeze=False)
    seconds = [r["train_seconds"] for r in rows if r["train_seconds"] > 0]
    for row, ((ax_acc, ax_time), dataset) in enumerate(zip(axes, datasets)):
        own = [r for r in rows if r["dataset"] == dataset]
        y = np.arange(len(own))[::-1]
        ours = [r["test_accuracy"] for r in own]
        ax_acc.errorbar(ours, y, xerr=[r.get("test_accuracy_std") or 0 for r in own], fmt="o", color="tab:blue",
                        capsize=3, label="ours (± std over seeds)")
        seeds = [(yy, r["seed_accuracy"], r.get("seed_pm") or 0) for yy, r in zip(y, own)
                 if r.get("seed_accuracy") is not None]
        if seeds:
            ax_acc.errorbar([s[1] for s in seeds], [s[0] - 0.22 for s in seeds], xerr=[s[2] for s in seeds],
                            fmt="D", color="tab:orange", capsize=3, label="the write-up's number (± its own)")
        ax_acc.set_yticks(y, [r["run"] for r in own])
        values = [v for v in ours + [s[1] for s in seeds] if v == v]
        if values:
            ax_acc.set_xlim(min(values) - 2, min(100, max(values) + 1.5))
        ax_acc.set(xlabel="test accuracy (%)", title=dataset)
        ax_acc.grid(axis="x", alpha=0.3)
        if row == 0:
            ax_acc.legend(loc="best", fontsize=8)
        ax_time.scatter([r["train_seconds"] for r in own], ours, color="tab:blue")
        for r, acc in zip(own, ours):
            ax_time.annotate(r["run"].rsplit("-", 1)[0], (r["train_seconds"], acc), fontsize=7,
                             xytext=(4, 3), textcoords="offset points")
        ax_time.set_xscale("log")
        if seconds:  # one time axis for every dataset, at least a decade wide
            ax_time.set_xlim(min(seconds) / 1.6, max(max(seconds) * 1.6, min(seconds) * 10))
        # Major ticks only, labelled in plain seconds: minor labels on a log axis overlap.
        ax_time.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_time.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax_time.xaxis.set_minor_formatter(NullFormatter())
        ax_time.set(xlabel="training time (s, log scale)", ylabel="test accuracy (%)",
                    title=f"{dataset}: accuracy against training time")
        ax_time.grid(alpha=0.3)
        ax_time.margins(y=0.3)  # room for the labels of a row of two runs
    fig.suptitle("fashionbench: every run beside its seed")
    fig.tight_layout()
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
