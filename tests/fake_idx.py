"""Small, learnable IDX datasets written by the tests (no real data needed)."""
from __future__ import annotations

import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each class lights a different 7x7 block of a 4x4 grid (noise elsewhere): easy to learn."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, col = divmod(int(c), 4)
        images[i, r * 7:(r + 1) * 7, col * 7:(col + 1) * 7] = 255
    return images


def write_dataset(root: Path, dataset: str, n_train: int = 200, n_test: int = 100, seed: int = 0,
                  compress: bool = True) -> dict[str, str]:
    """Write the four files under root/<dataset>/; return {file: md5 of the extracted IDX}."""
    rng = np.random.default_rng(seed)
    out = root / dataset
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        arrays[f"{prefix}-images-idx3-ubyte"] = make_images(labels, rng)
        arrays[f"{prefix}-labels-idx1-ubyte"] = labels
    md5s = {}
    for name, array in arrays.items():
        data = idx_bytes(array)
        md5s[name] = hashlib.md5(data).hexdigest()
        if compress:
            (out / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (out / name).write_bytes(data)
    return md5s


def write_mirror(root: Path, datasets=("fashion_mnist", "mnist"), **kwargs) -> Path:
    """A mirror of fake datasets plus the checksum file (FASHIONBENCH_EXPECTED_MD5) for them."""
    table = {d: write_dataset(root, d, seed=i, **kwargs) for i, d in enumerate(datasets)}
    md5_file = root / "md5.json"
    md5_file.write_text(json.dumps(table))
    return md5_file
