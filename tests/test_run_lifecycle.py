"""No MLflow run is left RUNNING: exceptions end runs as FAILED, SIGTERM/SIGINT as KILLED,
and a run left by SIGKILL is marked KILLED by the next start of the same DVC run."""
import json
import signal
import subprocess
import sys
import time

import pytest

from fashionbench.core import engine
from fashionbench.core.paths import resume_dir
from fashionbench.stages import evaluate, train

from conftest import set_run

RUN = "mlp_64-fashion_mnist"
SEEDS_RUN = "lenet5_modern-mnist"  # seeds [0, 1]: child runs
NAME, SEEDS_NAME = f"{RUN} (workspace)", f"{SEEDS_RUN} (workspace)"  # MLflow run names: <run> (<DVC experiment>)
SEED_NAME = f"{SEEDS_RUN} seed{{}} (workspace)"


def all_runs(uri: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("fashionbench")
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def statuses(uri: str) -> dict[str, str]:
    return {r.info.run_name: r.info.status for r in all_runs(uri)}


def test_an_exception_in_a_seed_ends_the_parent_and_open_child_runs_as_failed(store, monkeypatch):
    real = engine.train_seed

    def fail_on_seed_1(cfg, data, seed, *args, **kwargs):
        if seed == 1:
            kwargs["on_epoch"]({"epoch": 1, "train_loss": 1.0})  # the child run is open and logging
            raise OSError("disk full")
        return real(cfg, data, seed, *args, **kwargs)

    monkeypatch.setattr(engine, "train_seed", fail_on_seed_1)
    with pytest.raises(OSError, match="disk full"):
        train.main([SEEDS_RUN])
    assert statuses(store) == {SEEDS_NAME: "FAILED", SEED_NAME.format(0): "FINISHED", SEED_NAME.format(1): "FAILED"}


def test_an_exception_after_training_ends_the_run_as_failed_and_keeps_the_trained_state(store, monkeypatch):
    def broken_write(cfg, summary):
        raise OSError("no space left")

    real = train.write_outputs
    monkeypatch.setattr(train, "write_outputs", broken_write)
    with pytest.raises(OSError):
        train.main([RUN])
    assert statuses(store) == {NAME: "FAILED"}
    assert (resume_dir(RUN) / "seed0.pt").is_file()  # nothing trained is lost: the rerun resumes it
    monkeypatch.setattr(train, "write_outputs", real)
    assert train.main([RUN]) == 0
    finished = [r for r in all_runs(store) if r.info.status == "FINISHED"]
    assert len(finished) == 1 and finished[0].data.tags["resumed_at_epoch"] == "2"  # 1 epoch: nothing retrained


def test_an_exception_in_evaluate_ends_the_reopened_run_as_failed(store, monkeypatch, capsys):
    assert train.main([RUN]) == 0

    def broken_log(*args):
        raise RuntimeError("artifact store unavailable")

    monkeypatch.setattr(evaluate, "log_evaluation", broken_log)
    assert evaluate.main([RUN]) == 1
    assert "artifact store unavailable" in capsys.readouterr().err
    assert statuses(store) == {NAME: "FAILED"}


def start_training(workspace, run: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fashionbench.stages.train", run], cwd=workspace,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epoch_state(workspace, run: str, proc: subprocess.Popen, timeout: float = 120) -> int:
    """The training's pid once it has saved a first epoch's state."""
    state = workspace / resume_dir(run) / "seed0.pt"
    deadline = time.monotonic() + timeout
    while not state.is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"training never saved a state:\n{proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    return json.loads((workspace / resume_dir(run) / "attempt.json").read_text())["pid"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_run_and_its_children_as_killed_and_keeps_the_state(store, workspace, sig):
    set_run(workspace, SEEDS_RUN, epochs=200, batch_size=4)
    proc = start_training(workspace, SEEDS_RUN)
    try:
        pid = wait_for_epoch_state(workspace, SEEDS_RUN, proc)
        assert pid == proc.pid
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig
    assert f"stopped by {sig.name}" in err
    assert statuses(store) == {SEEDS_NAME: "KILLED", SEED_NAME.format(0): "KILLED"}
    assert (workspace / resume_dir(SEEDS_RUN) / "seed0.pt").is_file()


@pytest.mark.slow
def test_a_run_left_running_by_sigkill_is_marked_killed_by_the_next_start(store, workspace):
    set_run(workspace, RUN, epochs=200, batch_size=4)
    proc = start_training(workspace, RUN)
    try:
        wait_for_epoch_state(workspace, RUN, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    (killed,) = all_runs(store)
    assert killed.info.status == "RUNNING"  # what SIGKILL leaves behind
    set_run(workspace, RUN, epochs=1)  # another config: starts over, and still ends the stale run
    assert train.main([RUN]) == 0
    by_id = {r.info.run_id: r for r in all_runs(store)}
    assert by_id[killed.info.run_id].info.status == "KILLED"
    assert sorted(r.info.status for r in by_id.values()) == ["FINISHED", "KILLED"]


def test_a_running_run_of_a_live_process_is_left_alone(store, workspace, monkeypatch):
    from fashionbench.core.config import run_config
    from fashionbench.tracking.runs import RunTracker, end_stale_runs

    cfg = run_config(RUN)
    live = RunTracker.start(cfg)  # held by this (live) process
    assert end_stale_runs(cfg) == []
    live.end()


def test_a_reused_pid_does_not_keep_a_stale_run_alive():
    from fashionbench.tracking.holders import holder_alive, holder_tags

    tags = holder_tags()
    assert holder_alive(tags)
    assert not holder_alive(dict(tags, pid_start=str(int(tags["pid_start"]) - 1)))  # same pid, older process


def test_evaluating_a_training_logged_to_another_store_writes_its_metrics_and_says_so(workspace, store, monkeypatch, capsys):
    """A training restored from DVC's cache was logged where it trained: evaluate cannot resume that
    run here, so it writes its outputs, logs nothing, and says why in one line."""
    assert train.main([RUN]) == 0
    elsewhere = f"sqlite:///{workspace / 'teammate.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    assert evaluate.main([RUN]) == 0
    [note] = [line for line in capsys.readouterr().err.splitlines() if "MLflow run" in line]
    assert f"is not in {elsewhere}" in note and "metrics/ only" in note
    assert (workspace / "metrics" / f"{RUN}.json").exists()
    assert all_runs(elsewhere) == [] and statuses(store) == {NAME: "FINISHED"}
