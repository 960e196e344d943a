"""A tune trial's checkpoints: the pipeline's own per-epoch training state (core/checkpoint.py:
weights, optimizer, schedule, weight average, random generators, history) handed to Ray Tune with
each epoch's report, kept in the session's storage, and read back when Ray retries the trial.

The engine saves a state after it hands out the epoch's row (a saved epoch is always a logged one),
so when epoch k is reported the newest state is that of epoch k - 1: the checkpoint a report carries
is the state its epoch started from (none for epoch 1: the trial's start). A retried trial loads it,
trains epoch k again (bit for bit on the same kind of node) without reporting it a second time, and
reports on from epoch k + 1: Ray Tune sees every epoch once.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from fashionbench.lab.tune.space import TuneError

STATE_FILE = "state.pt"      # what core.checkpoint.save_state writes
RECORD_FILE = "trial.json"   # which epoch the checkpoint was reported with, by which attempt
DEFAULT_STORAGE = ".ray_results"


def storage_path(value: str | None, address: str | None) -> str:
    """Ray Tune's storage_path for the session: --storage (or FASHIONBENCH_RAY_STORAGE), a URI
    (s3://bucket/prefix) as given, a path made absolute. On a cluster every node must reach it,
    so --address without one is refused: a directory on this machine is not on the others."""
    value = value or os.environ.get("FASHIONBENCH_RAY_STORAGE")
    if not value:
        if address:
            raise TuneError(f"--address {address}: trials checkpoint every epoch to storage every node reaches: "
                            "name it with --storage (a shared directory, or an s3:// URI)")
        value = DEFAULT_STORAGE
    return value if "://" in value else str(Path(value).expanduser().resolve())


def trial_fingerprint(config: dict, data_digest: str) -> str:
    """What a checkpoint's state is valid for: the trial's resolved config and its data."""
    return hashlib.sha256(json.dumps([config, data_digest], sort_keys=True, default=str).encode()).hexdigest()


def write_checkpoint(dest: Path, state_path: Path, epoch: int, fingerprint: str, mlflow_run_id: str) -> Path:
    """The checkpoint reported with epoch `epoch`: the state it started from (a hard link to the
    engine's file, which the engine replaces rather than rewrites; none before epoch 1) and its record."""
    dest.mkdir(parents=True)
    if epoch > 1:
        try:
            os.link(state_path, dest / STATE_FILE)
        except OSError:
            shutil.copyfile(state_path, dest / STATE_FILE)
    record = {"reported_epoch": epoch, "state_epochs": epoch - 1, "fingerprint": fingerprint,
              "mlflow_run_id": mlflow_run_id}
    (dest / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return dest


def restore_checkpoint(saved: Path, state_path: Path, fingerprint: str) -> dict:
    """Copy a checkpoint's state to `state_path`, where the engine resumes from it (epoch 1's has
    none: the trial starts over); returns its record. One made for another config or data is refused."""
    record = json.loads((saved / RECORD_FILE).read_text())
    if record.get("fingerprint") != fingerprint:
        raise TuneError(f"{saved}: a checkpoint of another config or data; not resumed")
    if record["state_epochs"]:
        shutil.copyfile(saved / STATE_FILE, state_path)
    return record


def resumed_at(record: dict | None) -> int | None:
    """The first epoch a resumed attempt trains (the pipeline's `resumed_at_epoch`), None when fresh."""
    return record["state_epochs"] + 1 if record else None


def reported_before(record: dict | None, epoch: int) -> bool:
    """Whether Ray Tune already has this epoch's report: the state's epochs, replayed, and the one
    the checkpoint was reported with, trained again."""
    return record is not None and epoch <= record["reported_epoch"]
