"""Where every stage reads and writes, and the writers: one place that knows the layout.

Every file goes through `atomic_path` (temp file beside it, renamed on success), so a crash
or Ctrl-C never leaves a half-written file where the next stage looks, and every file gets
the permissions the user's umask asks for (tempfile's 0600 would hide results from colleagues).
Tensors are written as safetensors: the same tensors give the same bytes, so re-running a
stage on the same inputs leaves DVC's hashes (and every downstream stage) unchanged.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import tempfile
from pathlib import Path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: Path):
    """Yield a temp path beside `dest`; renamed onto it, with umask permissions, only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite_or_none(obj):
    """NaN/inf -> null, so every JSON we write is strict JSON (a diverged run's loss is NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def write_json(dest: Path, obj) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(finite_or_none(obj), indent=2, allow_nan=False) + "\n")


def write_csv(dest: Path, rows: list[dict]) -> None:
    with atomic_path(dest) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def write_text(dest: Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def write_tensors(dest: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Tensors as safetensors: byte-identical for identical tensors (no archive names or
    serialization ids, as torch.save has), so DVC sees an unchanged output as unchanged."""
    from safetensors.torch import save_file

    # safetensors stores dense row-major data: channels_last weights are made contiguous.
    dense = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(dest) as tmp:
        save_file(dense, str(tmp), metadata=metadata)


def read_tensors(path: Path) -> tuple[dict, dict[str, str]]:
    """(tensors on the CPU, metadata) of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
