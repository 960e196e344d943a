"""`fashionbench reproduce RUN_ID`: a run it cannot go back from gets one line naming it and what
was expected, a non-zero exit, and nothing cloned. (The round trip itself: tests/test_pipeline.py.)"""
import subprocess

import pytest

from fashionbench.lab import reproduce

ALIEN_COMMIT = "f" * 40


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A git repository (the cwd of each test) and a SQLite store holding runs that cannot be reproduced."""
    import mlflow

    base = tmp_path_factory.mktemp("reproduce")
    repo = base / "repo"
    repo.mkdir()
    for args in (("init", "-q"), ("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q",
                                   "--allow-empty", "-m", "first")):
        subprocess.run(["git", *args], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()
    uri = f"sqlite:///{base / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("fashionbench", artifact_location=(base / "artifacts").as_uri())
    pipeline = {"dvc_run": "mlp_64-fashion_mnist", "dvc_exp_name": "workspace", "dvc_exp_baseline_rev": ""}
    runs = {
        "plain": client.create_run(exp, run_name="someone else's").info.run_id,
        "alien commit": client.create_run(exp, tags={**pipeline, "git_commit": ALIEN_COMMIT}).info.run_id,
        "missing experiment": client.create_run(exp, tags={**pipeline, "git_commit": head, "dvc_exp_name": "lowlr",
                                                           "dvc_exp_baseline_rev": head}).info.run_id,
        "workspace": client.create_run(exp, tags={**pipeline, "git_commit": head}).info.run_id,
    }
    # A run of two seeds: the parent (all seeds) and a child per seed, whose config differs by its seed alone.
    config = {"lr": "0.001", "seed": "0", "seeds": "[0, 1]"}
    parent = client.create_run(exp, tags={**pipeline, "git_commit": ALIEN_COMMIT}).info.run_id
    child = client.create_run(exp, tags={**pipeline, "git_commit": ALIEN_COMMIT, "mlflow.parentRunId": parent}).info.run_id
    for run_id, params in ((parent, {**config, "parameters": "50890"}), (child, {**config, "seed": "1", "seeds": "[1]"})):
        for key, value in params.items():
            client.log_param(run_id, key, value)
    runs.update(parent=parent, child=child)
    yield {"repo": repo, "uri": uri, "runs": runs, "head": head}
    mlflow.set_tracking_uri(None)


@pytest.fixture
def in_repo(store, monkeypatch):
    monkeypatch.chdir(store["repo"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    return store


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_unknown_run_id_is_named_with_the_store_it_was_looked_up_in(in_repo, capsys, tmp_path):
    unknown = "0123456789abcdef0123456789abcdef"
    assert reproduce.main([unknown, "--into", str(tmp_path / "new")]) == 1
    line = one_error(capsys)
    assert line.startswith(f"error: run {unknown}: no such MLflow run in {in_repo['uri']}; expected the id of a fashionbench run")
    assert not (tmp_path / "new").exists()


def test_a_run_without_fashionbench_tags_is_not_a_pipeline_run(in_repo, capsys, tmp_path):
    run_id = in_repo["runs"]["plain"]
    assert reproduce.main([run_id, "--into", str(tmp_path / "new")]) == 1
    assert one_error(capsys) == (f"error: run {run_id} (someone else's): not a fashionbench pipeline run; expected a run "
                                 f"with the dvc_run tag that `dvc repro` or `dvc exp run` logs")


def test_a_commit_that_is_not_in_the_repository_is_named(in_repo, capsys, tmp_path):
    run_id = in_repo["runs"]["alien commit"]
    assert reproduce.main([run_id, "--into", str(tmp_path / "new")]) == 1
    line = one_error(capsys)
    assert line.startswith(f"error: run {run_id}: its git commit {ALIEN_COMMIT} is not in the repository {in_repo['repo']}; "
                           f"expected a commit of this repository")
    assert not (tmp_path / "new").exists()


def test_an_experiment_that_is_not_in_the_repository_is_named(in_repo, capsys, tmp_path):
    run_id = in_repo["runs"]["missing experiment"]
    assert reproduce.main([run_id, "--into", str(tmp_path / "new")]) == 1
    assert one_error(capsys) == (f"error: run {run_id}: its DVC experiment lowlr (baseline {in_repo['head'][:7]}) is not "
                                 f"in the repository {in_repo['repo']}; expected it there (`dvc exp pull <git remote> "
                                 f"lowlr` first)")


def test_a_directory_that_is_not_empty_is_refused_before_anything_is_cloned(in_repo, capsys, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    assert reproduce.main([in_repo["runs"]["workspace"], "--into", str(tmp_path)]) == 1
    assert one_error(capsys) == f"error: {tmp_path}: exists and is not empty; expected a new directory (--into DIR)"
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_outside_a_git_repository_it_says_where_to_run_it(store, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    assert reproduce.main([store["runs"]["workspace"]]) == 1
    assert one_error(capsys) == (f"error: {tmp_path}: not in a git repository; expected the fashionbench repository "
                                 f"the run came from")


def test_the_cli_lists_the_command(capsys):
    from fashionbench import cli

    assert cli.main(["--help"]) == 0
    assert "fashionbench reproduce RUN_ID" in capsys.readouterr().out


def test_a_seed_s_child_run_stands_for_its_parent(in_repo, capsys, tmp_path):
    parent, child = in_repo["runs"]["parent"], in_repo["runs"]["child"]
    assert reproduce.main([child, "--into", str(tmp_path / "new")]) == 1
    out = capsys.readouterr()
    assert f"run {child} is one seed of run {parent}, which trained every seed: reproducing that" in out.out
    assert out.err.startswith(f"error: run {parent}: its git commit {ALIEN_COMMIT} is not in the repository")


class Logged:
    """What reproduce reads of an MLflow run: its params, metrics and tags."""

    def __init__(self, params=None, metrics=None):
        self.info = type("Info", (), {"run_id": "abc"})()
        self.data = type("Data", (), {"params": params or {}, "metrics": metrics or {},
                                      "tags": {"dvc_run": "mlp_64-fashion_mnist"}})()


def test_params_that_differ_from_the_restored_ones_are_each_named(tmp_path):
    (tmp_path / "data" / "config").mkdir(parents=True)
    (tmp_path / "data" / "config" / "mlp_64-fashion_mnist.json").write_text(
        '{"lr": 0.001, "seeds": [0], "epochs": 10, "dropout": null, "new_key": 1}')
    logged = Logged({"lr": "0.002", "seeds": "[0]", "epochs": "10", "dropout": "None", "train_seconds": "3.2"})
    assert reproduce.config_differences(tmp_path, logged) == "lr: run 0.002, restored 0.001"


def test_the_metrics_are_compared_exactly_and_a_difference_is_marked():
    logged = Logged(metrics={"test/accuracy": 0.7599999904632568, "test/loss": 2.0794920921325684})
    rows, equal = reproduce.compare(logged, {"test_accuracy": 0.7599999904632568, "test_loss": 2.0794920921325684})
    assert equal and [r.split()[-1] for r in rows[1:]] == ["equal", "equal"]  # no validation split: no row
    rows, equal = reproduce.compare(logged, {"test_accuracy": 0.7599999904632568, "test_loss": 2.0794920921325686})
    assert not equal and rows[-1].split()[-1] == "DIFFERS"
