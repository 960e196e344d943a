"""MLflow end to end: a real tracking server, parallel queued experiments, a server that is down.

The slow tests run the real `dvc repro` / `dvc exp run --queue` + `dvc queue start -j 2`
on small generated data, and the real `mlflow server`; every process they start is
stopped at the end, also when a test fails.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fake_idx import write_mirror
from pipeline_repo import make_repo, mlflow_runs, run, run_two_queued_lrs, tiny_params
from servers import free_port, mlflow_server

RUN = "mlp_64-fashion_mnist"


def one_run_params(**top) -> dict:
    """tiny_params with one small run on one dataset (fewer stages to run)."""
    params = tiny_params({RUN: {"model": "mlp_64", "dataset": "fashion_mnist"}})
    params["datasets"] = ["fashion_mnist"]
    params.update(top)
    return params


@pytest.fixture
def pipeline_env(tmp_path, monkeypatch):
    """Generated data for the download stage; no tracking URI or DVC variables from outside."""
    md5_file = write_mirror(tmp_path / "mirror", datasets=("fashion_mnist",))
    monkeypatch.setenv("FASHIONBENCH_DATA_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("FASHIONBENCH_EXPECTED_MD5", str(md5_file))
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def server_run(tmp_path_factory):
    """A real `mlflow server` (free loopback port, own SQLite store, artifacts served by it) and
    one `dvc repro` of a 2-epoch run logging to it. The server is stopped at the end, always."""
    base = tmp_path_factory.mktemp("server_run")
    server_dir = base / "server"
    mp = pytest.MonkeyPatch()
    try:
        with mlflow_server(server_dir) as uri:
            md5_file = write_mirror(base / "mirror", datasets=("fashion_mnist",))
            mp.setenv("FASHIONBENCH_DATA_MIRROR", str(base / "mirror"))
            mp.setenv("FASHIONBENCH_EXPECTED_MD5", str(md5_file))
            for name in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE"):
                mp.delenv(name, raising=False)
            root = make_repo(base / "repo", one_run_params(epochs=2))
            mp.setenv("MLFLOW_TRACKING_URI", uri)
            run(root, "dvc", "repro")
            mp.delenv("MLFLOW_TRACKING_URI")
            yield {"uri": uri, "root": root, "server_dir": server_dir, "base": base}
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def server_logged(server_run):
    """The MlflowClient of the server, the `fashionbench` experiment and its one run."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=server_run["uri"])
    exp = client.get_experiment_by_name("fashionbench")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.dvc_exp_name = 'workspace'")
    assert len(runs) == 1
    trained = json.loads((server_run["root"] / "models" / RUN / "train.json").read_text())
    return dict(server_run, client=client, exp=exp, run=runs[0], trained=trained)


@pytest.mark.slow
def test_server_run_has_the_params_tags_and_one_curve_point_per_epoch(server_logged):
    client, r, root = server_logged["client"], server_logged["run"], server_logged["root"]
    assert not (root / "mlflow.db").exists() and not (root / "mlartifacts").exists()  # all on the server
    assert server_logged["trained"]["mlflow_run_id"] == r.info.run_id  # evaluate logs into training's run
    assert r.info.run_name == f"{RUN} (workspace)" and r.info.status == "FINISHED"
    assert r.data.params["model"] == "mlp_64" and r.data.params["lr"] == "0.001" and r.data.params["epochs"] == "2"
    head = run(root, "git", "rev-parse", "HEAD").stdout.strip()
    tags = ("git_commit", "dvc_exp_name", "dataset", "model", "status", "precision")
    assert {k: r.data.tags[k] for k in tags} == {
        "git_commit": head, "dvc_exp_name": "workspace", "dataset": "fashion_mnist", "model": "mlp_64",
        "status": "completed", "precision": "float32"}
    assert set(r.data.metrics) == {f"{s}/{m}" for s in ("train", "val", "test") for m in ("loss", "accuracy")}
    for name in r.data.metrics:
        assert [m.step for m in client.get_metric_history(r.info.run_id, name)] == [1, 2], name
    assert {"parameters", "train_seconds"} <= set(r.data.params)
    metrics = json.loads((root / "metrics" / f"{RUN}.json").read_text())
    assert r.data.metrics["test/accuracy"] == pytest.approx(metrics["test_accuracy"])


@pytest.mark.slow
def test_server_run_has_the_figures_and_evaluation_uploaded_and_the_dataset(server_logged):
    client, r, exp = server_logged["client"], server_logged["run"], server_logged["exp"]
    assert exp.artifact_location.startswith("mlflow-artifacts:/")  # the server stores the artifacts
    assert {a.path for a in client.list_artifacts(r.info.run_id) if not a.is_dir} == {
        "curves.png", "confusion.png", "misclassified.png", "per_class_accuracy.json", "metrics.json",
        "evaluation.json"}
    assert any((server_logged["server_dir"] / "artifacts").rglob("curves.png"))
    local = client.download_artifacts(r.info.run_id, "evaluation.json", str(server_logged["base"] / "dl"))
    details = json.loads((server_logged["root"] / "plots" / "eval" / f"{RUN}.json").read_text())
    assert json.loads(Path(local).read_text()) == details
    [ds_input] = r.inputs.dataset_inputs
    assert ds_input.dataset.name == "fashion_mnist" and ds_input.dataset.digest == server_logged["trained"]["digest"]
    assert {t.key: t.value for t in ds_input.tags}.get("mlflow.data.context") == "training"


@pytest.mark.slow
def test_server_run_keeps_the_metrics_file_beside_the_evaluation_details(server_logged):
    client, r, root = server_logged["client"], server_logged["run"], server_logged["root"]
    metrics = json.loads((root / "metrics" / f"{RUN}.json").read_text())
    local = client.download_artifacts(r.info.run_id, "metrics.json", str(server_logged["base"] / "dl2"))
    assert json.loads(Path(local).read_text()) == metrics


@pytest.mark.slow
def test_server_run_model_loads_with_pyfunc_and_classifies_a_batch(server_logged, monkeypatch):
    import mlflow
    import torch

    from fashionbench.core.models import model_from_config
    from fashionbench.core.schema import RunConfig

    model_uri = f"runs:/{server_logged['run'].info.run_id}/{RUN}"  # the logged model is named after its run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server_logged["uri"])  # set_tracking_uri exports it; restored
    mlflow.set_tracking_uri(server_logged["uri"])
    try:
        info = mlflow.models.get_model_info(model_uri)
        pyfunc = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    spec = info.signature.inputs.to_dict()[0]
    assert spec["tensor-spec"]["dtype"] == "float32" and tuple(spec["tensor-spec"]["shape"]) == (-1, 1, 28, 28)
    images = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    logits = np.asarray(pyfunc.predict(images))
    assert logits.shape == (5, 10)
    trained = server_logged["trained"]
    net = model_from_config(RunConfig.stored(trained["config"]))
    from fashionbench.core.files import read_tensors

    net.load_state_dict(read_tensors(server_logged["root"] / "models" / RUN / "seed0.safetensors")[0])
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_parallel_queued_experiments_each_log_one_complete_run_to_the_repository_store(pipeline_env):
    root = make_repo(pipeline_env / "repo", one_run_params())
    run(root, "dvc", "repro", "preprocess")  # data in the cache: queued copies start at train
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "baseline")
    baseline = run(root, "git", "rev-parse", "HEAD").stdout.strip()
    assert not (root / "mlflow.db").exists()  # the queued runs race to create it

    # Two workers, two at once; each up to its run's evaluation, the last stage that logs (the report does not).
    lr_of = run_two_queued_lrs(root, "lr", f"evaluate@{RUN}")

    runs = mlflow_runs(root)
    assert len(runs) == 2
    for name, lr in lr_of.items():
        [r] = mlflow_runs(root, dvc_exp_name=name)
        assert r.info.run_name == f"{RUN} ({name})" and r.info.status == "FINISHED"
        assert r.data.params["lr"] == lr
        assert r.data.tags["git_commit"] == baseline and r.data.tags["status"] == "completed"
        assert {"train/loss", "val/accuracy", "test/accuracy"} <= set(r.data.metrics)
        assert r.info.artifact_uri.startswith((root / "mlartifacts").as_uri() + "/")
    shown = run(root, "dvc", "exp", "show", "--json").stdout
    assert all(name in shown for name in lr_of)
    assert not list((root / ".dvc").rglob("mlflow.db"))  # nothing logged into a temp copy


@pytest.mark.slow
def test_processes_racing_on_a_fresh_sqlite_store_all_log_complete_runs(tmp_path, monkeypatch):
    """The first-time creation of the default store (schema migrations) under concurrency."""
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        monkeypatch.delenv(name, raising=False)
    script = (
        "import sys, time\n"
        "import mlflow, mlflow.entities\n"
        "from fashionbench.tracking.runs import RunTracker\n"
        "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n"
        "t = RunTracker.start({'name': sys.argv[2], 'dataset': 'mnist', 'model': 'mlp_64', 'lr': 0.1})\n"
        "for step in range(1, 11):\n"
        "    t.log_metrics({'loss': 1.0 / step}, step=step)\n"
        "t.end()\n")
    start_at = time.time() + 10  # past every process's imports (mlflow's too): all touch the fresh store at once
    procs = [subprocess.Popen([sys.executable, "-c", script, str(start_at), f"r{i}"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outputs]
    runs = mlflow_runs(tmp_path)
    assert sorted(r.info.run_name for r in runs) == [f"r{i} (workspace)" for i in range(4)]
    assert all(len(r.data.metrics) == 1 and r.info.status == "FINISHED" for r in runs)


def test_an_unreachable_server_fails_train_in_seconds_with_one_line_naming_it(pipeline_env, monkeypatch):
    from fashionbench.stages import download, preprocess

    root = pipeline_env / "ws"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(one_run_params()))
    monkeypatch.chdir(root)
    assert download.main(["fashion_mnist"]) == 0 and preprocess.main(["fashion_mnist"]) == 0
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "fashionbench.stages.train", RUN], cwd=root, env=env,
                            capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and uri in lines[0] and lines[0].startswith("error: "), result.stderr
    assert elapsed < 30
    assert not (root / "models" / RUN).exists() and not (root / "mlflow.db").exists()
