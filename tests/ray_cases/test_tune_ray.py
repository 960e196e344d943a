"""`fashionbench tune` on real Ray: the embedded default, and a two-node cluster on 127.0.0.1 with a
real `mlflow server`; tiny trials on generated data. Run by tests/test_ray.py in a loopback-only
network namespace."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from fashionbench.lab.tune.watchdog import INTERRUPT_GRACE_S

from pipeline_repo import BIN, fcn_400_study_repo, make_repo, run, tiny_params
from servers import mlflow_server

RUN = "mlp_64-fashion_mnist"
pytestmark = pytest.mark.slow


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


def session_runs(uri: str) -> tuple:
    """(the tune session's parent run, its child runs) in the store at `uri`."""
    client = client_of(uri)
    exp = client.get_experiment_by_name("fashionbench")
    runs = client.search_runs([exp.experiment_id], max_results=500)
    parents = [r for r in runs if r.info.run_name == f"tune/{RUN}"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


@pytest.fixture
def server(tmp_path, monkeypatch):
    with mlflow_server(tmp_path / "mlflow") as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


def ray_processes() -> set[str]:
    found = subprocess.run(["pgrep", "-f", "ray::|raylet|gcs_server"], capture_output=True, text=True)
    return set(found.stdout.split())


def test_the_embedded_default_runs_every_trial_and_leaves_no_ray_behind(workspace, store):
    tune_space(workspace, RUN, trials=3, concurrent=2)
    before = ray_processes()  # another Ray on this machine (a study, a cluster) is not ours to count
    done = tune(workspace, env={"MLFLOW_TRACKING_URI": store})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((workspace / "tuning" / f"{RUN}.json").read_text())
    assert len(result["trials"]) == 3 and result["address"] == "embedded"
    assert all(t["status"] == "TERMINATED" and t["epochs_run"] == 1 for t in result["trials"])
    parent, children = session_runs(store)
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert all(c.info.status == "FINISHED" for c in children)
    assert ray_processes() - before == set()


class TestOnOneSharedCluster:
    """Tune sessions that end normally, one after another on the same two-node cluster."""

    def test_on_a_cluster_every_trial_is_a_child_run_with_its_params_and_epochs(self, workspace, shared_ray_cluster, server):
        set_run(workspace, RUN, epochs=3)
        tune_space(workspace, RUN, trials=4, concurrent=2)
        done = tune(workspace, "--address", shared_ray_cluster["address"])
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        parent, children = session_runs(server)
        assert parent.info.status == "FINISHED" and len(children) == 4
        client = client_of(server)
        result = json.loads((workspace / "tuning" / f"{RUN}.json").read_text())
        for child in children:
            assert child.info.status == "FINISHED"
            assert [m.step for m in client.get_metric_history(child.info.run_id, "val/accuracy")] == [1, 2, 3]
        logged_lrs = sorted(float(c.data.params["lr"]) for c in children)
        assert logged_lrs == sorted(t["config"]["lr"] for t in result["trials"])

    def test_asha_stops_some_trials_early(self, workspace, shared_ray_cluster, server):
        set_run(workspace, RUN, epochs=6)
        tune_space(workspace, RUN, trials=6, concurrent=2, scheduler="asha", grace_epochs=1, reduction_factor=3,
                   space={"lr": {"loguniform": [0.00001, 0.3]}})
        done = tune(workspace, "--address", shared_ray_cluster["address"])
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        result = json.loads((workspace / "tuning" / f"{RUN}.json").read_text())
        epochs = [t["epochs_run"] for t in result["trials"]]
        assert min(epochs) < 6 and max(epochs) == 6, epochs
        _, children = session_runs(server)
        stopped = [c for c in children if c.data.tags.get("stopped_early") == "true"]
        assert stopped and all(c.info.status == "FINISHED" for c in children), [(c.info.status, c.data.tags.get("stopped_early"), c.data.metrics.get("val/accuracy")) for c in children]

    def test_a_trial_that_raises_is_failed_and_the_search_goes_on(self, workspace, shared_ray_cluster, server):
        # momentum 0 with nesterov is refused by params.yaml's rules: a combination the space allows.
        set_run(workspace, RUN, optimizer="sgd", lr=0.05, momentum=0.9)  # each value alone is valid
        # search_seed 0 draws momentum 0.9, 0.9, 0.9, 0.0 (Ray 2.60; test_tune_space checks the seeding)
        tune_space(workspace, RUN, trials=4, concurrent=2, search_seed=0,
                   space={"momentum": {"choice": [0.0, 0.9]}, "nesterov": {"choice": [True]}})
        done = tune(workspace, "--address", shared_ray_cluster["address"])
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        result = json.loads((workspace / "tuning" / f"{RUN}.json").read_text())
        failed = [t for t in result["trials"] if t["status"] == "FAILED"]
        finished = [t for t in result["trials"] if t["status"] == "TERMINATED"]
        assert failed and finished
        assert all(t["config"]["momentum"] == 0.0 for t in failed) and "nesterov" in failed[0]["error"]
        assert result["best"]["config"]["momentum"] == 0.9
        _, children = session_runs(server)
        assert {c.info.status for c in children} <= {"FINISHED", "FAILED"} and any(c.info.status == "FAILED" for c in children)


def test_a_worker_node_killed_mid_trial_gets_the_trial_retried_elsewhere(workspace, ray_cluster, server):
    set_run(workspace, RUN, model="resnet_fast", width=4, epochs=30)
    tune_space(workspace, RUN, trials=2, concurrent=2)
    proc = subprocess.Popen([str(BIN / "python"), "-m", "fashionbench.lab.tune", RUN, "--address", ray_cluster["address"]],
                            cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client, deadline = client_of(server), time.monotonic() + 300
        while time.monotonic() < deadline:  # until a trial has logged its first epoch
            exp = client.get_experiment_by_name("fashionbench")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if any(r.data.tags.get("mlflow.parentRunId") and "val/accuracy" in r.data.metrics for r in runs):
                break
            time.sleep(0.2)
        ray_cluster["add_worker"]()  # somewhere for the trials to go
        os.killpg(ray_cluster["worker"].proc.pid, signal.SIGKILL)  # the node dies mid-trial
        out, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-4000:]
    result = json.loads((workspace / "tuning" / f"{RUN}.json").read_text())
    assert [t["status"] for t in result["trials"]] == ["TERMINATED", "TERMINATED"]
    assert all(t["epochs_run"] == 30 for t in result["trials"])
    _, children = session_runs(server)
    assert any(c.info.status == "KILLED" and c.data.tags.get("retried") == "true" for c in children)
    assert sum(c.info.status == "FINISHED" for c in children) == 2


def test_ctrl_c_ends_the_session_with_every_mlflow_run_ended(workspace, ray_cluster, server):
    set_run(workspace, RUN, model="resnet_fast", width=4, epochs=2000)  # far longer than the test: Ctrl-C comes mid-trial
    tune_space(workspace, RUN, trials=4, concurrent=2)
    proc = subprocess.Popen([str(BIN / "python"), "-m", "fashionbench.lab.tune", RUN, "--address", ray_cluster["address"]],
                            cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client, deadline = client_of(server), time.monotonic() + 300
        while time.monotonic() < deadline:
            exp = client.get_experiment_by_name("fashionbench")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if any(r.data.tags.get("mlflow.parentRunId") and "val/accuracy" in r.data.metrics for r in runs):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        # Tune's teardown on a cluster took 90-140 s here after Ctrl-C (2 cores, more under load);
        # past the grace the session ends its runs and exits by itself. The margin is for ending
        # the runs on a loaded 2-core machine.
        out, _ = proc.communicate(timeout=INTERRUPT_GRACE_S + 90)
    finally:
        proc.kill()
    assert proc.returncode == 130, out[-4000:]
    parent, children = session_runs(server)
    assert parent.info.status == "KILLED"
    assert children and all(c.info.status != "RUNNING" for c in children)


def test_the_best_trials_command_reproduces_its_validation_accuracy_through_dvc(tmp_path, monkeypatch):
    from pipeline_repo import generated_data_env

    mp = generated_data_env(tmp_path)
    mp.setenv("FASHIONBENCH_THREADS", "1")  # the trial's threads (cpus_per_trial 1): same float sums
    try:
        params = tiny_params({RUN: {"model": "mlp_64", "dataset": "fashion_mnist", "epochs": 2}})
        params["datasets"] = ["fashion_mnist"]
        root = make_repo(tmp_path / "repo", params)
        run(root, "dvc", "repro", "preprocess@fashion_mnist")
        tune_space(root, RUN, trials=3, concurrent=2, space={"lr": {"loguniform": [0.001, 0.1]},
                                                            "batch_size": {"choice": [16, 32]}})
        done = tune(root, "--no-mlflow")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        best = json.loads((root / "tuning" / f"{RUN}.json").read_text())["best"]
        run(root, "sh", "-c", best["command"], timeout=600)
        metrics = json.loads((root / "metrics" / f"{RUN}.json").read_text())
        assert metrics["val_accuracy"] == best["val_accuracy"]
    finally:
        mp.undo()


def test_a_study_on_ray_writes_the_same_cells_as_the_dvc_queue(tmp_path):
    from pipeline_repo import generated_data_env

    mp = generated_data_env(tmp_path)
    mp.setenv("FASHIONBENCH_THREADS", "1")  # a queue worker's threads = a Ray task's CPU: the same float sums
    study = ["python", "-m", "fashionbench.cli", "study", "optimizer_lr", "--grid", "optimizer=sgd",
             "--grid", "lr=0.1,0.01", "--seeds", "0", "-S", "max_epochs=1"]
    try:
        root = fcn_400_study_repo(tmp_path / "repo")
        try:
            run(root, *study)
        finally:
            run(root, "dvc", "queue", "stop", "--kill", check=False)
        queued = json.loads((root / "studies" / "optimizer_lr.json").read_text())
        out = run(root, *study, "--executor", "ray")
        on_ray = json.loads((root / "studies" / "optimizer_lr.json").read_text())
    finally:
        mp.undo()
    assert on_ray["executor"] == "ray" and "executor" not in queued
    assert [c["experiment"] for c in on_ray["cells"]] == [c["experiment"] for c in queued["cells"]]
    for ray_cell, queue_cell in zip(on_ray["cells"], queued["cells"]):
        assert ray_cell["params"] == queue_cell["params"]
        ray_run, queue_run = ray_cell["runs"]["fcn_400-fashion_mnist"], queue_cell["runs"]["fcn_400-fashion_mnist"]
        assert ray_run["metrics"]["test_accuracy_per_seed"] == queue_run["metrics"]["test_accuracy_per_seed"]
        assert ray_run["confusion_matrix"] == queue_run["confusion_matrix"]
    assert "| lr | SGD |" in out.stdout and "| lr | SGD |" in (root / "plots" / "report.md").read_text()
