"""Prepared data: the train/validation/test split of a dataset, saved once by the preprocess
stage and loaded onto the device by every training; a run's own training set (val_fraction).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fashionbench.core.files import read_tensors, write_tensors
from fashionbench.core.idx import DataError, load_idx, md5_hex, read_idx_bytes
from fashionbench.core.paths import RAW_DIR, prepared_path
from fashionbench.core.schema import RunConfig

SPLITS = ("train", "val", "test")


def load_pair(raw: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images = load_idx(raw / f"{prefix}-images-idx3-ubyte.gz")
    labels = load_idx(raw / f"{prefix}-labels-idx1-ubyte.gz")
    where = f"{raw}/{prefix}"
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{where}-images: expected shape (N, 28, 28), got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{where}-labels: expected {len(images)} labels, got shape {labels.shape}")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{where}-labels: expected labels 0..9, found {int(labels.max())}")
    return images, labels


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and validation parts: a seeded permutation, each part kept in file order."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def prepare(dataset: str, val_fraction: float, split_seed: int, max_train: int | None = None,
            max_test: int | None = None, raw_dir: Path = RAW_DIR) -> dict[str, torch.Tensor]:
    raw = raw_dir / dataset
    train_x, train_y = load_pair(raw, "train")
    test_x, test_y = load_pair(raw, "t10k")
    # Smoke size: keep only the first N images, before the split, so it stays seeded.
    train_x, train_y = train_x[:max_train], train_y[:max_train]
    test_x, test_y = test_x[:max_test], test_y[:max_test]
    tr, va = split_train_val(len(train_x), val_fraction, split_seed)
    arrays = {"train": (train_x[tr], train_y[tr]), "val": (train_x[va], train_y[va]), "test": (test_x, test_y)}
    # The dataset's identity for MLflow: md5 over the four raw IDX files' md5s.
    digests = "".join(md5_hex(read_idx_bytes(p)) for p in sorted(raw.glob("*-ubyte*")))
    out = {"digest": md5_hex(digests.encode())[:16]}
    for split, (x, y) in arrays.items():
        out[f"{split}_images"] = torch.from_numpy(np.array(x, dtype=np.uint8))  # uint8, own copy
        out[f"{split}_labels"] = torch.from_numpy(y.astype(np.int64))
    return out


def save_prepared(data: dict, dest: Path) -> None:
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    write_tensors(dest, tensors, metadata={"digest": data["digest"]})


def load_prepared(dataset: str, device: str | torch.device = "cpu", path: Path | None = None) -> dict:
    """The prepared splits on `device`, and the raw files' `digest`."""
    path = Path(path or prepared_path(dataset))
    if not path.is_file():
        raise DataError(f"{path}: not found; run `dvc repro preprocess@{dataset}` first")
    tensors, metadata = read_tensors(path)
    return {"digest": metadata.get("digest", ""), **{k: v.to(device) for k, v in tensors.items()}}


def run_splits(data: dict, val_fraction: float | None, split_seed: int) -> dict:
    """The prepared splits as one run trains on them. `val_fraction` null (or the prepared
    fraction) keeps the prepared split; any other fraction re-splits every training image (the
    prepared train then val images, in that order) with `split_seed`: 0 trains on all of them
    and leaves no validation split, as seeds 000-002 and 004 did."""
    n_val, n_all = len(data["val_labels"]), len(data["train_labels"]) + len(data["val_labels"])
    if val_fraction is None or int(round(n_all * val_fraction)) == n_val:
        return data
    images = torch.cat([data["train_images"], data["val_images"]])
    labels = torch.cat([data["train_labels"], data["val_labels"]])
    tr, va = (torch.from_numpy(i).to(images.device) for i in split_train_val(n_all, val_fraction, split_seed))
    return {**data, "train_images": images[tr], "train_labels": labels[tr],
            "val_images": images[va], "val_labels": labels[va]}


def load_run_data(cfg: RunConfig, device: str | torch.device = "cpu") -> dict:
    """The prepared data of `cfg`'s dataset on `device`, split as the run trains on it."""
    return run_splits(load_prepared(cfg.dataset, device), cfg.val_fraction, cfg.split_seed)
