"""What the Ray tests share: the tuned run, its search space, the `fashionbench tune` command, and
the session's runs in an MLflow store."""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import yaml

from pipeline_repo import BIN

RUN = "mlp_64-fashion_mnist"


def set_run(root, name: str, **entry) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["runs"][name].update(entry)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def tune_space(root, run: str, **entry) -> None:
    """A search for `run` in the workspace's lab/search_spaces.yaml."""
    (root / "tuning").mkdir(exist_ok=True)
    search = {"trials": 4, "metric": "val_accuracy", "scheduler": "none", "concurrent": 2, "cpus_per_trial": 1,
              "space": {"lr": {"loguniform": [0.001, 0.1]}}, **entry}
    (root / "lab" / "search_spaces.yaml").write_text(yaml.safe_dump({run: search}))


def tune(root, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "python"), "-m", "fashionbench.lab.tune", RUN, *args], cwd=root,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def client_of(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


class SessionStore(str):
    """The URI of an MLflow store, which may hold earlier tests' sessions: those whose parent
    runs were there when this test began (`parents_before`) are not this test's."""
    parents_before: frozenset = frozenset()

    @classmethod
    def of(cls, uri: str) -> "SessionStore":
        store = cls(uri)
        store.parents_before = frozenset(r.info.run_id for r in parent_runs(uri))
        return store


def parent_runs(uri: str) -> list:
    client = client_of(uri)
    exp = client.get_experiment_by_name("fashionbench")
    runs = client.search_runs([exp.experiment_id], max_results=500) if exp else []
    return [r for r in runs if r.info.run_name == f"{RUN} (tune)"]


def session_runs(uri: str) -> tuple:
    """(the tune session's parent run, its child runs) in the store at `uri`: exactly one session
    began since `uri.parents_before` was taken."""
    client = client_of(uri)
    exp = client.get_experiment_by_name("fashionbench")
    runs = client.search_runs([exp.experiment_id], max_results=500)
    before = getattr(uri, "parents_before", frozenset())
    parents = [r for r in runs if r.info.run_name == f"{RUN} (tune)" and r.info.run_id not in before]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


def wait_for_a_trials_first_epoch(uri: str, timeout: float = 300) -> None:
    """Until a trial of a session begun since `uri.parents_before` has logged an epoch."""
    client, deadline = client_of(uri), time.monotonic() + timeout
    before = getattr(uri, "parents_before", frozenset())
    while time.monotonic() < deadline:
        exp = client.get_experiment_by_name("fashionbench")
        runs = client.search_runs([exp.experiment_id], max_results=500) if exp else []
        parents = {r.info.run_id for r in runs if r.info.run_name == f"{RUN} (tune)"} - before
        if any(r.data.tags.get("mlflow.parentRunId") in parents and "val/accuracy" in r.data.metrics for r in runs):
            return
        time.sleep(0.2)


def wait_for_checkpoints(storage: Path, trials: int, epochs: int = 1, timeout: float = 300) -> None:
    """Until `trials` trials of the session storing in `storage` have each checkpointed the state of
    `epochs` trained epochs or more (Ray Tune's <storage>/<session>/<trial>/checkpoint_<n>, the newest
    kept: the one reported with epoch n + 1, which holds n epochs' state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newest = [p for p in storage.glob("*/*/checkpoint_*") if re.fullmatch(r"checkpoint_\d+", p.name)
                  and int(p.name.rpartition("_")[2]) >= epochs]
        if len({p.parent for p in newest}) >= trials:
            return
        time.sleep(0.2)
    raise AssertionError(f"{storage}: fewer than {trials} trials checkpointed {epochs} epochs in {timeout:.0f} s")


def adopt_orphans() -> None:
    """Make this process the reaper of its descendants' orphans (Linux PR_SET_CHILD_SUBREAPER), so
    a process that a session started and left behind stays among our children, apart from the
    processes of any other Ray on the machine (the other half of the Ray tests runs beside us)."""
    import ctypes

    assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # 36: PR_SET_CHILD_SUBREAPER


def our_ray_processes() -> set[str]:
    """Ray's processes (workers, raylet, GCS) among this process's descendants."""
    children: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended while we looked
            continue
        pid, ppid = stat.parent.name, text.rsplit(")", 1)[1].split()[1]
        children.setdefault(ppid, []).append(pid)
        names[pid] = cmdline
    found, todo = set(), [str(os.getpid())]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            if re.search(r"ray::|raylet|gcs_server", names[child]):
                found.add(child)
    return found
