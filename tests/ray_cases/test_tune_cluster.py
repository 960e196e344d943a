"""`fashionbench tune` on a real two-node Ray cluster on 127.0.0.1 with a real `mlflow server`:
tiny trials on generated data. Run by tests/test_ray.py in a loopback-only network namespace."""
from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from fashionbench.lab.tune.watchdog import INTERRUPT_GRACE_S

from pipeline_repo import BIN, make_repo, run, tiny_params
from tune_helpers import (
    RUN,
    SessionStore,
    client_of,
    session_runs,
    set_run,
    tune,
    tune_space,
    wait_for_a_trials_first_epoch,
    wait_for_checkpoints,
)

pytestmark = pytest.mark.slow


def on_the_cluster(cluster: dict, root) -> list[str]:
    """`fashionbench tune`'s options for the cluster: its address, and storage every node reaches
    for the trials' checkpoints (the nodes share this machine's disk; git ignores the directory)."""
    return ["--address", cluster["address"], "--storage", str(root / ".ray_results")]


@pytest.fixture
def server(shared_mlflow_server, monkeypatch):
    """The class's `mlflow server`; the sessions of the tests before this one are told apart."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_mlflow_server)
    return SessionStore.of(shared_mlflow_server)


class TestOnOneSharedCluster:
    """Tune sessions, a study and a tuned run's command, one after another on one two-node
    cluster (starting and stopping one costs about 40 s on 2 cores). Each leaves the cluster as
    it found it, but the last, which kills a worker node."""

    def test_on_a_cluster_every_trial_is_a_child_run_with_its_params_and_epochs(self, workspace, shared_ray_cluster, server):
        set_run(workspace, RUN, epochs=3)
        tune_space(workspace, RUN, trials=4, concurrent=2)
        done = tune(workspace, *on_the_cluster(shared_ray_cluster, workspace))
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
        done = tune(workspace, *on_the_cluster(shared_ray_cluster, workspace))
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
        done = tune(workspace, *on_the_cluster(shared_ray_cluster, workspace))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        result = json.loads((workspace / "tuning" / f"{RUN}.json").read_text())
        failed = [t for t in result["trials"] if t["status"] == "FAILED"]
        finished = [t for t in result["trials"] if t["status"] == "TERMINATED"]
        assert failed and finished
        assert all(t["config"]["momentum"] == 0.0 for t in failed) and "nesterov" in failed[0]["error"]
        assert result["best"]["config"]["momentum"] == 0.9
        _, children = session_runs(server)
        assert {c.info.status for c in children} <= {"FINISHED", "FAILED"} and any(c.info.status == "FAILED" for c in children)

    def test_the_best_trials_command_reproduces_its_validation_accuracy_through_dvc(self, tmp_path, shared_ray_cluster):
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
            done = tune(root, "--no-mlflow", *on_the_cluster(shared_ray_cluster, root))
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            best = json.loads((root / "tuning" / f"{RUN}.json").read_text())["best"]
            run(root, "sh", "-c", best["command"], timeout=600)
            metrics = json.loads((root / "metrics" / f"{RUN}.json").read_text())
            assert metrics["val_accuracy"] == best["val_accuracy"]
        finally:
            mp.undo()

    def test_ctrl_c_ends_the_session_with_every_mlflow_run_ended(self, workspace, shared_ray_cluster, server):
        set_run(workspace, RUN, model="resnet_fast", width=4, epochs=2000)  # far longer than the test: Ctrl-C comes mid-trial
        tune_space(workspace, RUN, trials=4, concurrent=2)
        proc = subprocess.Popen([str(BIN / "python"), "-m", "fashionbench.lab.tune", RUN, *on_the_cluster(shared_ray_cluster, workspace)],
                                cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for_a_trials_first_epoch(server)
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

    def test_a_worker_node_killed_mid_trial_gets_its_trials_retried_from_their_last_checkpoints(self, workspace, shared_ray_cluster,
                                                                                                 server):
        # Last in the class: it kills the cluster's first worker node (another takes its trials).
        set_run(workspace, RUN, model="resnet_fast", width=4, epochs=30)
        tune_space(workspace, RUN, trials=2, concurrent=2)
        storage = workspace / ".ray_results"  # on_the_cluster's
        proc = subprocess.Popen([str(BIN / "python"), "-m", "fashionbench.lab.tune", RUN, *on_the_cluster(shared_ray_cluster, workspace)],
                                cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            # Both trials have a trained state to resume (the first may be many epochs ahead, even done)
            wait_for_checkpoints(storage, trials=2)
            shared_ray_cluster["add_worker"]()  # somewhere for the trials to go
            os.killpg(shared_ray_cluster["worker"].proc.pid, signal.SIGKILL)  # the node dies mid-trial
            out, _ = proc.communicate(timeout=600)
        finally:
            proc.kill()
        assert proc.returncode == 0, out[-4000:]
        result = json.loads((workspace / "tuning" / f"{RUN}.json").read_text())
        assert [t["status"] for t in result["trials"]] == ["TERMINATED", "TERMINATED"]
        assert all(t["epochs_run"] == 30 for t in result["trials"])
        retried = [t for t in result["trials"] if t["resumed_at_epoch"] is not None]
        assert retried and all(t["resumed_at_epoch"] > 1 for t in retried), result["trials"]  # from a checkpoint, not epoch 1
        for trial_dir in [p for p in next(storage.iterdir()).iterdir() if p.is_dir()]:
            # Ray Tune's record, a line per report: every epoch once, none again from epoch 1 after the retry
            reported = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
            assert [r["epoch"] for r in reported] == list(range(1, 31)), trial_dir.name
            assert [r["training_iteration"] for r in reported] == list(range(1, 31))
            checkpoints = list(trial_dir.glob("checkpoint_*"))  # the newest only
            assert len(checkpoints) == 1 and sum(f.stat().st_size for f in checkpoints[0].iterdir()) < 5_000_000
        _, children = session_runs(server)
        killed = {c.info.run_id: c for c in children if c.info.status == "KILLED" and c.data.tags.get("retried") == "true"}
        resumed = [c for c in children if c.info.status == "FINISHED" and "resumed_at_epoch" in c.data.tags]
        assert sum(c.info.status == "FINISHED" for c in children) == 2 and len(killed) == len(resumed) == len(retried)
        client = client_of(server)
        for child in resumed:
            resumed_at = int(child.data.tags["resumed_at_epoch"])
            before = killed[child.data.tags["resumed_from_run"]]
            curve = [m.value for m in sorted(client.get_metric_history(child.info.run_id, "val/loss"), key=lambda m: m.step)]
            curve_before = [m.value for m in sorted(client.get_metric_history(before.info.run_id, "val/loss"), key=lambda m: m.step)]
            assert len(curve) == 30 and len(curve_before) >= resumed_at > 1
            # the epochs restored from the checkpoint, and the epoch it started, trained again bit for bit
            assert curve[:resumed_at] == curve_before[:resumed_at]
