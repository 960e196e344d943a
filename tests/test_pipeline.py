"""End to end: the real `dvc repro` and `dvc exp run` on small generated data."""
import json

import pytest

from pipeline_repo import generated_data_env, make_repo, mlflow_runs, run, tiny_params

pytestmark = pytest.mark.slow

RUNS = ("mlp_64-fashion_mnist", "lenet5_modern-mnist")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    mp = generated_data_env(base)
    root = make_repo(base / "repo", tiny_params())
    first = run(root, "dvc", "repro")
    yield root, first
    mp.undo()


def test_repro_produces_every_declared_output(repo):
    root, _ = repo
    expected = ["data/raw/fashion_mnist/train-images-idx3-ubyte.gz", "data/prepared/mnist.safetensors", "data/params.validated",
                "plots/report.md", "plots/summary.csv", "plots/comparison.png", "dvc.lock"]
    for name in RUNS:
        expected += [f"models/{name}/seed0.safetensors", f"models/{name}/train.json", f"plots/history/{name}.csv",
                     f"metrics/{name}.json", f"plots/eval/{name}.json", f"plots/confusion/{name}.csv",
                     f"plots/runs/{name}/curves.png", f"plots/runs/{name}/confusion.png",
                     f"plots/runs/{name}/misclassified.png"]
    missing = [p for p in expected if not (root / p).is_file()]
    assert missing == []


def test_repro_shows_progress_and_where_the_report_is(repo):
    _, first = repo
    assert "epoch" in first.stderr  # tqdm bars
    assert "plots/report.md" in first.stdout


def test_second_repro_runs_nothing(repo):
    root, _ = repo
    again = run(root, "dvc", "repro")
    assert "Data and pipelines are up to date" in again.stdout
    assert "Running stage" not in again.stdout


def test_each_trained_run_is_one_mlflow_run_with_params_curves_and_artifacts(repo):
    root, _ = repo
    runs = {r.info.run_name: r for r in mlflow_runs(root, dvc_exp_name="workspace")}
    assert set(runs) == set(RUNS)
    r = runs["mlp_64-fashion_mnist"]
    assert r.data.params["model"] == "mlp_64" and r.data.params["lr"] == "0.001"
    assert {"test_accuracy", "val_accuracy", "train_loss", "test_accuracy_Shirt"} <= set(r.data.metrics)
    assert r.data.tags["status"] == "completed" and r.info.status == "FINISHED"


def test_exp_run_with_a_new_lr_is_logged_with_that_lr(repo):
    root, _ = repo
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "baseline")
    result = run(root, "dvc", "exp", "run", "-n", "lowlr", "-S", "lr=0.0001", check=False)
    if result.returncode and "Failed to reproduce experiment" in result.stdout + result.stderr:
        # Seen once in the whole suite on CI, never alone: every stage had run and DVC's own commit of
        # the experiment failed ("'NoneType' object is not subscriptable"). The stages are up to date
        # then, so the rerun only commits; -v keeps DVC's traceback if it fails again.
        result = run(root, "dvc", "exp", "run", "-v", "-n", "lowlr", "-S", "lr=0.0001")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shown = json.loads(run(root, "dvc", "exp", "show", "--json").stdout)
    assert "lowlr" in json.dumps(shown)
    logged = mlflow_runs(root, dvc_exp_name="lowlr")
    assert sorted(r.info.run_name for r in logged) == sorted(RUNS)
    assert all(r.data.params["lr"] == "0.0001" for r in logged)
