"""What the pipeline knows about its datasets: files, checksums, class names, IDX reading.

Checksums are of the *extracted* IDX bytes (docs/pipeline.md), so the official gz, a
re-compressed gz and an uncompressed copy are all accepted and any altered byte is not.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


IDX_MD5 = {
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
}


CLASS_NAMES = {
    "fashion_mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    "mnist": [str(d) for d in range(10)],
}


# Set only by tests (or for a private re-labelled copy): a JSON file
# {"<dataset>": {"<file>": "<md5 of extracted IDX>"}} that *replaces* the expected
# checksums. Verification itself is never switched off.
MD5_OVERRIDE_ENV = "FASHIONBENCH_EXPECTED_MD5"


TRAINING_IMAGES = {"fashion_mnist": 60_000, "mnist": 60_000}  # the train-images file of each, before any split


class DataError(Exception):
    """A dataset file is missing, corrupt or malformed (message is one line for the user)."""


def known_datasets() -> list[str]:
    return sorted(IDX_MD5)


def expected_md5(dataset: str, name: str) -> str:
    override = os.environ.get(MD5_OVERRIDE_ENV)
    if override:
        try:
            table = json.loads(Path(override).read_text())
            return table[dataset][name]
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(
                f"{MD5_OVERRIDE_ENV}={override}: expected a JSON file with an md5 for "
                f"{dataset}/{name} ({type(exc).__name__}: {exc})"
            ) from None
    return IDX_MD5[dataset][name]


def read_idx_bytes(path: Path) -> bytes:
    """The extracted IDX bytes of `path`, gzipped or not (gzip is told by its magic number)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a valid gzip file ({exc})") from None
    return raw


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


_IDX_DTYPES = {0x08: np.uint8}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes (big-endian header: 0, 0, dtype, ndim, then ndim uint32 sizes)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: not an IDX file (bad magic number)")
    dtype = _IDX_DTYPES.get(data[2])
    if dtype is None:
        raise DataError(f"{source}: unsupported IDX element type 0x{data[2]:02x} (expected 0x08, uint8)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape)) if shape else 0
    if len(data) - header != count:
        raise DataError(f"{source}: IDX header promises {count} values for shape {shape}, file holds {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)


def load_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array."""
    return parse_idx(read_idx_bytes(Path(path)), str(path))
