"""The real `dvc repro` / `dvc exp run`: bad params stop the pipeline before any output is
deleted, unchanged inputs rebuild nothing, and a killed training resumes where it stopped."""
import contextlib
import json
import os
import signal
import socket
import subprocess
import time

import pytest
import yaml

from pipeline_repo import generated_data_env, make_repo, mlflow_runs, run, tiny_params, venv_env

pytestmark = pytest.mark.slow

RUN = "mlp_64-fashion_mnist"
OUTPUT_DIRS = ("models", "metrics", "plots/history", "plots/eval", "plots/runs", "plots/confusion")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    mp = generated_data_env(base := tmp_path_factory.mktemp("trust"))
    root = make_repo(base / "repo", tiny_params())
    run(root, "dvc", "repro")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "results")
    yield root
    mp.undo()


def outputs(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for d in OUTPUT_DIRS for p in sorted((root / d).rglob("*")) if p.is_file()}


def edit_params(root, change) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    change(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def error_lines(result) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error: ")]


BAD_PARAMS = {
    "misspelled top-level key": (lambda p: p.update(learning_rate=0.1), "error: learning_rate: unknown key"),
    "misspelled run key": (lambda p: p["runs"][RUN].update(lr_=0.1), f"error: runs.{RUN}.lr_: unknown key"),
    "rejected value": (lambda p: p["runs"][RUN].update(lr=-1), f"error: runs.{RUN}.lr: expected > 0, got -1.0"),
    "run named dot": (lambda p: p.update(runs={".": {"model": "mlp_64", "dataset": "mnist"}}),  # models/. = models/
                      "error: runs..: expected a name of letters"),
    "dataset not in datasets": (lambda p: p.update(datasets=["mnist"]),
                                f"error: runs.{RUN}.dataset: expected one of the datasets list (mnist)"),
    "nesterov without momentum": (lambda p: p.update(optimizer="sgd", nesterov=True),
                                  "error: nesterov: nesterov needs optimizer sgd with momentum > 0"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_params_stop_dvc_repro_with_one_line_and_every_output_kept(repo, case):
    change, expected = BAD_PARAMS[case]
    before = outputs(repo)
    edit_params(repo, change)
    try:
        result = run(repo, "dvc", "repro", check=False)
    finally:
        run(repo, "git", "checkout", "params.yaml")
    assert result.returncode != 0
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(expected)
    assert outputs(repo) == before


def test_a_rejected_value_stops_dvc_exp_run_with_every_output_kept(repo):
    before = outputs(repo)
    try:
        result = run(repo, "dvc", "exp", "run", "-S", "lr=-1", check=False)
    finally:
        run(repo, "git", "checkout", "params.yaml")
    assert result.returncode != 0
    assert error_lines(result) == ["error: lr: expected > 0, got -1.0"]
    assert outputs(repo) == before


@contextlib.contextmanager
def unanswering_server(kind: str):
    """A loopback URI where nothing answers: a port that refuses connections, or a socket
    that accepts them (the kernel's backlog) and never replies."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if kind == "never replies":
            sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"  # refuses: bound, not listening


@pytest.mark.parametrize("kind", ["refuses", "never replies"])
def test_a_tracking_server_that_does_not_answer_stops_dvc_repro_with_every_output_kept(repo, kind, monkeypatch):
    before = outputs(repo)
    edit_params(repo, lambda p: p["runs"][RUN].update(lr=0.002))  # train@ would delete this run's model
    try:
        with unanswering_server(kind) as uri:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
            result = run(repo, "dvc", "repro", check=False)
    finally:
        run(repo, "git", "checkout", "params.yaml")
    assert result.returncode != 0
    reason = "Connection refused" if kind == "refuses" else "timed out"
    [line] = error_lines(result)
    assert line.startswith(f"error: MLflow tracking server {uri} (MLFLOW_TRACKING_URI) does not answer") and reason in line
    assert "Running stage 'train@" not in result.stdout
    assert outputs(repo) == before


def test_a_forced_preprocess_on_the_same_data_leaves_training_up_to_date(repo):
    run(repo, "dvc", "repro", "--force", "--single-item", "preprocess@fashion_mnist")
    status = json.loads(run(repo, "dvc", "status", "--json").stdout)
    assert status == {"validate": ["always changed"]}  # it checks the machine and the server every time


def test_a_training_killed_mid_run_resumes_at_its_epoch_and_ends_bit_identical(repo):
    edit_params(repo, lambda p: p["runs"][RUN].update(epochs=30, batch_size=4))
    run(repo, "dvc", "repro", "--force", f"train@{RUN}")  # uninterrupted
    uninterrupted = (repo / "models" / RUN / "seed0.safetensors").read_bytes()
    history = json.loads((repo / "models" / RUN / "train.json").read_text())["history"]["0"]

    proc = subprocess.Popen(["dvc", "repro", "--force", f"train@{RUN}"], cwd=repo, env=venv_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        state = repo / "resume" / RUN / "seed0.pt"
        deadline = time.monotonic() + 120
        while not state.is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        pid = json.loads((repo / "resume" / RUN / "attempt.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)  # the training, not dvc
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0

    # dvc.lock still records the uninterrupted run (the killed one never committed), and its outputs are
    # in the cache, so a plain `dvc repro` would check them out instead of training. A first training
    # that is killed has nothing to check out; --force makes this one train as that one would.
    result = run(repo, "dvc", "repro", "--force", f"train@{RUN}")
    trained = json.loads((repo / "models" / RUN / "train.json").read_text())
    assert 2 <= trained["seeds"][0]["resumed_at_epoch"] <= 30
    assert "resumed at epoch" in result.stdout
    assert (repo / "models" / RUN / "seed0.safetensors").read_bytes() == uninterrupted
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(trained["history"]["0"]) == strip(history)
    assert not (repo / "resume" / RUN).exists()
    attempts = sorted(mlflow_runs(repo, dvc_run=RUN), key=lambda r: r.info.start_time)[-2:]
    assert [r.info.status for r in attempts] == ["KILLED", "FINISHED"]
    assert attempts[1].data.tags["resumed_from_run"] == attempts[0].info.run_id
    run(repo, "git", "checkout", "params.yaml")

