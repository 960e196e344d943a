"""The MLflow Model Registry after real pipeline runs, and `mlflow models serve` of the champion."""
import json
import os
import signal
import subprocess
import time
import urllib.request

import numpy as np
import pytest

from pipeline_repo import BIN, generated_data_env, git, make_repo, run, tiny_params, venv_env

pytestmark = pytest.mark.slow

FASHION, DIGITS = "mlp_64-fashion_mnist", "lenet5_modern-mnist"


@pytest.fixture(scope="module")
def registry_repo(tmp_path_factory):
    """Two runs, the pipeline run, then each run trained and evaluated again (forced): two
    versions of each model, from two MLflow runs. This process's MLflow calls go to the
    repository's store for the module's tests."""
    import mlflow

    mp = generated_data_env(base := tmp_path_factory.mktemp("registry"))
    root = make_repo(base / "repo", tiny_params())
    run(root, "dvc", "repro")
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_served_champion_classifies_a_batch_as_the_model_itself_does(registry_repo, tmp_path):
    import mlflow.pyfunc

    uri = f"models:/fashionbench-{FASHION}@champion"
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port)],
                              cwd=registry_repo, env=venv_env(), stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        from fashionbench.core.files import read_tensors

        tensors, _ = read_tensors(registry_repo / "data" / "prepared" / "fashion_mnist.safetensors")
        images = (tensors["test_images"][:16].numpy()[:, None] / np.float32(255)).astype(np.float32)
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("mlflow models serve did not start:\n" + (tmp_path / "serve.log").read_text()[-3000:])
                time.sleep(0.5)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps({"inputs": images.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            served = np.asarray(json.loads(response.read())["predictions"])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    own = mlflow.pyfunc.load_model(uri).predict(images)
    assert served.shape == (16, 10)
    assert served.argmax(1).tolist() == np.asarray(own).argmax(1).tolist()
