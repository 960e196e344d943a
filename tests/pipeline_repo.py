"""A throwaway git + DVC repository holding this project's pipeline, for end-to-end tests."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's dvc and mlflow


def generated_data_env(base: Path):
    """A MonkeyPatch (undo it when done) pointing the download stage at generated data in
    base/mirror, with no tracking URI or DVC variables inherited from outside."""
    import pytest

    from fake_idx import write_mirror

    md5_file = write_mirror(base / "mirror")
    mp = pytest.MonkeyPatch()
    mp.setenv("FASHIONBENCH_DATA_MIRROR", str(base / "mirror"))
    mp.setenv("FASHIONBENCH_EXPECTED_MD5", str(md5_file))
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE"):
        mp.delenv(name, raising=False)
    return mp


def tiny_params(runs: dict | None = None) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(epochs=1, batch_size=32)
    params["runs"] = runs or {
        "mlp_64-fashion_mnist": {"model": "mlp_64", "dataset": "fashion_mnist"},
        "lenet5_modern-mnist": {"model": "lenet5_modern", "dataset": "mnist"},
    }
    return params


def make_repo(root: Path, params: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "lab", root / "lab")  # the studies' catalogue and the search spaces
    for results in ("studies", "tuning"):  # the report depends on both folders
        (root / results).mkdir()
        shutil.copy(REPO / results / "README.md", root / results / "README.md")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(root, "init", "-q")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "test")
    run(root, "dvc", "init", "-q")
    run(root, "dvc", "config", "core.analytics", "false")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")  # the plot templates dvc.yaml names
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "pipeline")
    return root


def fcn_400_study_repo(root: Path) -> Path:
    """A repository whose fcn_400-fashion_mnist run is reproduced and committed: a study's baseline."""
    make_repo(root, tiny_params({"fcn_400-fashion_mnist": {
        "model": "fcn_400", "dataset": "fashion_mnist", "optimizer": "sgd", "lr": 0.03}}))
    run(root, "dvc", "repro")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "baseline")
    return root


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def venv_env() -> dict:
    """The environment with the venv's dvc, mlflow and python first on PATH (as stages need)."""
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")


def run(root: Path, *cmd: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=root, env=venv_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def mlflow_runs(root: Path, **filters) -> list:
    """Top-level MLflow runs in the repo's default store, optionally filtered by tag."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fashionbench")
    found = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in found if all(r.data.tags.get(k) == v for k, v in filters.items())]


# ---- `dvc queue` ----

def queue_status(root: Path) -> dict[str, str]:
    """{experiment name: Queued | Running | Success | Failed | ...} from `dvc queue status`."""
    out = run(root, "dvc", "queue", "status").stdout
    return {m.group(1): m.group(2) for m in re.finditer(r"^\w+\s+(\S+)\s+.*?\s(\w+)\s*$", out, re.M)
            if m.group(1) != "Name"}


def wait_for_queue(root: Path, names: set[str], timeout_s: float = 420) -> dict[str, str]:
    """`dvc queue status` once the experiments' git refs exist (a cheap poll; each `dvc` costs a
    second of CPU), or every 15 s to see a failure; returns it once none is Queued or Running."""
    deadline, asked = time.monotonic() + timeout_s, time.monotonic()
    while True:
        refs = run(root, "git", "for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
        if names <= {ref.rsplit("/", 1)[-1] for ref in refs} or time.monotonic() - asked > 15:
            status, asked = queue_status(root), time.monotonic()
            if set(status) >= names and not {"Queued", "Running"} & set(status.values()):
                return status
        assert time.monotonic() < deadline, f"queue not done: {queue_status(root)}"
        time.sleep(1)


def run_two_queued_lrs(root: Path, key: str, target: str) -> dict[str, str]:
    """`dvc exp run --queue -S <key>=0.1,0.01 <target>` on two workers at once, waited for; asserts
    both experiments succeeded (with the failed ones' logs) and returns {experiment name: lr}."""
    queued = run(root, "dvc", "exp", "run", "--queue", "-S", f"{key}=0.1,0.01", target).stdout
    lr_of = dict((name, lr) for lr, name in re.findall(r"lr=([^']+)'\].*?\n.*?Queued experiment '([^']+)'", queued))
    assert sorted(lr_of.values()) == ["0.01", "0.1"], queued
    try:
        run(root, "dvc", "queue", "start", "-j", "2")
        status = wait_for_queue(root, set(lr_of))
        logs = {name: run(root, "dvc", "queue", "logs", name, check=False).stdout[-2000:]
                for name, s in status.items() if s != "Success"}
        assert all(status[name] == "Success" for name in lr_of), (status, logs)
    finally:
        stop_queue(root)
    return lr_of


def stop_queue(root: Path) -> None:
    """`dvc queue stop --kill`, then end any process still working in this repo (ours: its workers)."""
    run(root, "dvc", "queue", "stop", "--kill", check=False, timeout=60)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cwd = Path(os.readlink(proc / "cwd"))
            except OSError:
                continue
            if cwd == root or root in cwd.parents:
                left.append(int(proc.name))
        if not left:
            return
        time.sleep(1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
