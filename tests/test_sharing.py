"""A team's round trip on one tiny pipeline: pushed to a DVC remote with its run cache, cloned
afresh, pulled (docs/pipeline.md "Sharing results: a DVC remote"); and `fashionbench reproduce`
from an MLflow run back to its workspace (docs/tracking.md "From a run back to its workspace")."""
import json

import numpy as np
import pytest

from pipeline_repo import BIN, generated_data_env, git, make_repo, mlflow_runs, run, tiny_params

pytestmark = pytest.mark.slow

RUN = "mlp_64-fashion_mnist"
VARIANT = ("lowlr", "lr=0.0005")


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """One repository: a remote, `dvc repro` committed, a variant (`dvc exp run`), everything pushed
    with the run cache; and a fresh `git clone` of it, pulled. The MLflow runs stay in the
    repository's store, which the clone is pointed at (as a team points at its tracking server)."""
    mp = generated_data_env(base := tmp_path_factory.mktemp("sharing"))
    params = tiny_params({RUN: {"model": "mlp_64", "dataset": "fashion_mnist"}})
    params["datasets"] = ["fashion_mnist"]
    root = make_repo(base / "repo", params)
    run(root, "dvc", "remote", "add", "-d", "storage", str(base / "remote"))
    git(root, "commit", "-q", "-m", "remote", ".dvc/config")
    run(root, "dvc", "repro")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "results")
    run(root, "dvc", "exp", "run", "-n", VARIANT[0], "-S", VARIANT[1])
    # The workspace holds the variant's outputs now, the branch the baseline's: both go, with the run cache.
    run(root, "dvc", "push", "--run-cache", "--all-branches")
    clone = base / "clone"
    git(base, "clone", "-q", str(root), str(clone))
    run(clone, "dvc", "pull", "--run-cache")
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    yield {"base": base, "root": root, "clone": clone, "runs": {"workspace": one_run(root, "workspace"),
                                                                  VARIANT[0]: one_run(root, VARIANT[0])}}
    mp.undo()


def one_run(root, experiment: str):
    [found] = [r for r in mlflow_runs(root, dvc_run=RUN, dvc_exp_name=experiment)
               if "mlflow.parentRunId" not in r.data.tags]
    return found


def metrics(root) -> dict:
    return json.loads((root / "metrics" / f"{RUN}.json").read_text())


def test_after_dvc_pull_a_fresh_clone_is_up_to_date_and_trains_nothing(team):
    before = len(mlflow_runs(team["root"]))
    result = run(team["clone"], "dvc", "repro")
    assert "Running stage 'train@" not in result.stdout and "Running stage 'evaluate@" not in result.stdout
    assert f"Stage 'train@{RUN}' didn't change, skipping" in result.stdout
    assert json.loads(run(team["clone"], "dvc", "status", "--json").stdout) == {"validate": ["always changed"]}
    assert len(mlflow_runs(team["root"])) == before
    assert metrics(team["clone"])["test_accuracy"] == team["runs"]["workspace"].data.metrics["test/accuracy"]


def test_predict_works_in_the_fresh_clone(team):
    from PIL import Image

    from fake_idx import make_images

    picture = team["base"] / "trouser.png"
    Image.fromarray(make_images(np.array([1]), np.random.default_rng(0))[0]).save(picture)
    result = run(team["clone"], str(BIN / "fashionbench"), "predict", str(picture))
    from fashionbench.core.idx import CLASS_NAMES

    assert any(name in result.stdout for name in CLASS_NAMES["fashion_mnist"]), result.stdout


def test_a_variant_trained_before_is_restored_from_the_run_cache_without_training(team):
    before = len(mlflow_runs(team["root"]))
    result = run(team["clone"], "dvc", "exp", "run", "--pull", "-n", VARIANT[0], "-S", VARIANT[1])
    assert f"Stage 'train@{RUN}' is cached - skipping run, checking out outputs" in result.stdout
    assert "Running stage 'train@" not in result.stdout
    assert len(mlflow_runs(team["root"])) == before  # evaluate logs into the run that trained it
    assert metrics(team["clone"])["test_accuracy"] == team["runs"][VARIANT[0]].data.metrics["test/accuracy"]


# ---- fashionbench reproduce <run id>, in the repository the runs came from ----

def reproduce(team, experiment: str, *options: str):
    found = team["runs"][experiment]
    into = team["base"] / f"reproduced-{experiment}"
    status = git(team["root"], "status", "--porcelain")
    result = run(team["root"], str(BIN / "fashionbench"), "reproduce", found.info.run_id, "--into", str(into), *options)
    assert git(team["root"], "status", "--porcelain") == status  # the user's workspace is only read
    return found, into, result


def test_reproduce_retrains_a_variant_s_run_to_the_same_metrics(team, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the repository's own store, as its user has it
    before = len(mlflow_runs(team["root"]))
    found, into, result = reproduce(team, VARIANT[0], "--retrain")
    assert "trained again" in result.stdout
    assert "dvc exp branch refs/exps/" in result.stdout
    reproduced = metrics(into)
    assert reproduced["test_accuracy"] == found.data.metrics["test/accuracy"]
    assert reproduced["test_loss"] == found.data.metrics["test/loss"]
    [again] = mlflow_runs(into, dvc_run=RUN)  # it trained, into the new workspace's own store
    assert again.data.params["lr"] == found.data.params["lr"] == "0.0005"
    assert len(mlflow_runs(team["root"])) == before


def test_reproduce_restores_a_workspace_run_from_the_commit_that_recorded_it(team, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    found, into, result = reproduce(team, "workspace")
    assert "restored, not trained" in result.stdout
    assert git(into, "rev-parse", "HEAD") == git(team["root"], "rev-parse", "HEAD")  # the "results" commit
    assert not (into / "mlflow.db").exists()  # nothing trained, nothing logged
    reproduced = metrics(into)
    assert reproduced["test_accuracy"] == found.data.metrics["test/accuracy"]
    assert reproduced["test_loss"] == found.data.metrics["test/loss"]
