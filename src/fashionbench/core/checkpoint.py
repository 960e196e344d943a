"""Resumable training: the state of the seed in progress saved after every epoch, and the
fingerprint that says which config, data, code and torch a saved state is valid for.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from fashionbench.core.files import read_json, remove_tree
from fashionbench.core.paths import prepared_path, resume_dir
from fashionbench.core.schema import RunConfig


def save_state(path: Path, model, optimizer, shuffle: torch.Generator, progress: dict, extras: dict | None = None) -> None:
    """Everything the next epoch depends on, so a resumed run continues bit for bit:
    weights, optimizer moments and step counts, the random generators (batch order;
    dropout; augmentation), the schedule and weight average where the run has them, and
    the history so far. Written atomically: a kill mid-write keeps the old one."""
    from fashionbench.core.files import atomic_path

    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "shuffle_rng": shuffle.get_state(), "torch_rng": torch.get_rng_state(), **progress}
    for name, obj in (extras or {}).items():
        if obj is not None:
            state[name] = obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, model, optimizer, shuffle: torch.Generator, extras: dict | None = None) -> dict:
    """Restore what save_state wrote; returns its progress (history, status, seconds, finished)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state.pop("model"))
    optimizer.load_state_dict(state.pop("optimizer"))
    shuffle.set_state(state.pop("shuffle_rng"))
    for name, obj in (extras or {}).items():
        if obj is not None:
            saved = state.pop(name)
            obj.set_state(saved) if isinstance(obj, torch.Generator) else obj.load_state_dict(saved)
    torch.set_rng_state(state.pop("torch_rng"))
    cuda_rng = state.pop("cuda_rng", None)
    if cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_rng)
    return state


PACKAGE_DIR = Path(__file__).parent.parent  # src/fashionbench: every module of the package


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resume_fingerprint(cfg: RunConfig, device: torch.device, threads: int) -> str:
    """What a saved state is only valid for: this config, these prepared data, this code and
    torch, and on the CPU this many threads (another count sums in another order)."""
    digest = hashlib.sha256(json.dumps(cfg.as_dict(), sort_keys=True).encode())
    threads_part = f"|threads={threads}" if device.type == "cpu" else ""
    digest.update(f"{device}|{torch.__version__}|{file_md5(prepared_path(cfg.dataset))}{threads_part}".encode())
    for source in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def open_resume_state(run: str, fingerprint: str) -> dict | None:
    """The previous attempt's record ({fingerprint, mlflow_run_id}) when its state can be resumed;
    a state made for another config, data or code is deleted."""
    record_path = resume_dir(run) / "attempt.json"
    if not record_path.is_file():
        remove_tree(resume_dir(run))
        return None
    try:
        record = read_json(record_path)
    except ValueError:
        record = {}
    if record.get("fingerprint") != fingerprint:
        print(f"{run}: discarding the saved state in {resume_dir(run)} (config, data or code changed)", file=sys.stderr)
        remove_tree(resume_dir(run))
        return None
    return record
