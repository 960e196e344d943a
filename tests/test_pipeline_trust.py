"""The real `dvc repro` / `dvc exp run`: bad params stop the pipeline before any output is
deleted, unchanged inputs rebuild nothing, a killed training resumes where it stopped; and the
MLflow Model Registry those runs fill, with `mlflow models serve` of the champion."""
import contextlib
import json
import os
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import yaml

from pipeline_repo import generated_data_env, git, make_repo, mlflow_runs, run, tiny_params, venv_env
from servers import served_predictions

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
    edit_params(repo, lambda p: p["runs"][RUN].update(epochs=20, batch_size=4))
    try:
        killed_then_resumed(repo)
    finally:
        run(repo, "git", "checkout", "params.yaml")  # the module's later tests train the committed params


def killed_then_resumed(repo) -> None:
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
    assert 2 <= trained["seeds"][0]["resumed_at_epoch"] <= 20
    assert "resumed at epoch" in result.stdout
    assert (repo / "models" / RUN / "seed0.safetensors").read_bytes() == uninterrupted
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(trained["history"]["0"]) == strip(history)
    assert not (repo / "resume" / RUN).exists()
    attempts = sorted(mlflow_runs(repo, dvc_run=RUN), key=lambda r: r.info.start_time)[-2:]
    assert [r.info.status for r in attempts] == ["KILLED", "FINISHED"]
    assert attempts[1].data.tags["resumed_from_run"] == attempts[0].info.run_id


# ---- the MLflow Model Registry after the pipeline, and `mlflow models serve` of the champion ----
# Last in the module: on the module's repository, after every test above has restored params.yaml.

FASHION, DIGITS = RUN, "lenet5_modern-mnist"


@pytest.fixture(scope="module")
def registry_repo(repo):
    """The module's repository (its pipeline run registered version 1 of each model; no test above
    evaluates again), then each run trained and evaluated again (forced): two versions of each
    model, from two MLflow runs. This process's MLflow calls go to the repository's store for the
    registry's tests, the module's last."""
    import mlflow

    root, mp = repo, pytest.MonkeyPatch()
    assert run(root, "git", "status", "--porcelain", "params.yaml").stdout == ""  # the params the pipeline ran
    # What registers a version: a training and its evaluation (download, preprocess and the report
    # would only repeat themselves).
    run(root, "dvc", "repro", "--force", "--single-item", *(f"{stage}@{name}" for name in (FASHION, DIGITS)
                                                             for stage in ("train", "evaluate")))
    store = f"sqlite:///{root / 'mlflow.db'}"
    mp.setenv("MLFLOW_TRACKING_URI", store)
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(store)  # earlier tests in this process may have set another store
    mlflow.set_registry_uri(store)
    yield root
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])
    mp.undo()


def client(root):
    import mlflow

    store = f"sqlite:///{root / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=store, registry_uri=store)


def test_each_run_is_one_registered_model_with_a_version_per_pipeline_run(registry_repo):
    names = sorted(m.name for m in client(registry_repo).search_registered_models())
    assert names == [f"fashionbench-{DIGITS}", f"fashionbench-{FASHION}"]
    versions = client(registry_repo).search_model_versions(f"name = 'fashionbench-{FASHION}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]


def test_versions_carry_the_experiment_commit_and_test_accuracy(registry_repo):
    version = client(registry_repo).get_model_version(f"fashionbench-{FASHION}", "2")
    metrics = json.loads((registry_repo / "metrics" / f"{FASHION}.json").read_text())
    assert version.tags["dvc_exp_name"] == "workspace"
    assert version.tags["git_commit"] == git(registry_repo, "rev-parse", "HEAD").strip()
    assert float(version.tags["test_accuracy"]) == pytest.approx(metrics["test_accuracy"], abs=1e-6)


def test_the_best_version_per_dataset_is_the_champion(registry_repo):
    c = client(registry_repo)
    for run_name in (FASHION, DIGITS):
        model = c.get_registered_model(f"fashionbench-{run_name}")
        assert model.aliases == {"champion": 2}  # same accuracy (deterministic): the newer one


def test_a_less_accurate_version_does_not_take_the_alias(registry_repo):
    from fashionbench.tracking import registry

    c = client(registry_repo)
    run_id = c.get_model_version(f"fashionbench-{FASHION}", "2").run_id
    worse = registry.register_version(c, run_id, FASHION, "fashion_mnist", 0.0, {})
    assert worse == "3"
    assert not registry.crown_if_best(c, FASHION, worse, "fashion_mnist", 0.0)
    assert c.get_registered_model(f"fashionbench-{FASHION}").aliases == {"champion": 2}


def test_the_served_champion_classifies_a_batch_as_the_model_itself_does(registry_repo, tmp_path):
    import mlflow.pyfunc

    from fashionbench.core.files import read_tensors

    uri = f"models:/fashionbench-{FASHION}@champion"
    tensors, _ = read_tensors(registry_repo / "data" / "prepared" / "fashion_mnist.safetensors")
    images = (tensors["test_images"][:16].numpy()[:, None] / np.float32(255)).astype(np.float32)
    served = served_predictions(uri, images, tmp_path, venv_env(), cwd=registry_repo)
    own = mlflow.pyfunc.load_model(uri).predict(images)
    assert served.shape == (16, 10)
    assert served.argmax(1).tolist() == np.asarray(own).argmax(1).tolist()
