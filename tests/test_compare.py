"""`fashionbench compare` on `dvc exp show --json` output: one row per run, one column per experiment."""
import pytest
import yaml

from fashionbench.lab import compare
from fashionbench.lab.dvc_experiments import ExperimentsError

from conftest import REPO


def entry(rev: str, runs: dict, params: dict, name: str | None = None, timestamp: str = "") -> dict:
    """One commit or experiment as `dvc exp show --json` gives it."""
    metrics = {f"metrics/{run}.json": {"data": m} for run, m in runs.items()}
    return {"rev": rev, "name": name, "data": {"rev": rev, "timestamp": timestamp, "metrics": metrics,
                                               "params": {"params.yaml": {"data": params}}}}


def shown(workspace_runs=None) -> list[dict]:
    """The default runs at a baseline and two experiments (lowlr worse, bigbatch better)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    base = {run: {"test_accuracy": 0.9, "test_loss": 0.3} for run in params["runs"]}
    low = {run: {"test_accuracy": 0.85, "test_accuracy_std": 0.004, "test_loss": 0.4} for run in params["runs"]}
    big = {run: {"test_accuracy": 0.9123, "test_loss": 0.25} for run in params["runs"]}
    commit = entry("a" * 40, base, params, name="main")
    commit["experiments"] = [
        {"name": "bigbatch", "revs": [entry("c" * 40, big, params, "bigbatch", "2026-11-24T10:00:00")]},
        {"name": "lowlr", "revs": [entry("b" * 40, low, params, "lowlr", "2026-11-24T09:00:00")]},
    ]
    return [entry("workspace", workspace_runs or big, params), commit]


def test_the_default_runs_with_two_experiments_fit_in_120_columns():
    columns, params = compare.columns_from(shown())
    lines = compare.table(columns, params)
    runs = yaml.safe_load((REPO / "params.yaml").read_text())["runs"]
    assert len(lines) == 2 + len(runs) and max(map(len, lines)) <= 120


def test_experiments_come_oldest_first_beside_the_seed_and_the_baseline():
    columns, params = compare.columns_from(shown())
    lines = compare.table(columns, params)
    assert lines[1].split() == ["run", "seed", "write-up", "baseline", "aaaaaaa", "lowlr", "bigbatch"]
    row = next(line for line in lines if line.startswith("fcn_400-fashion_mnist")).split()
    assert row[1:] == ["87.20±2.1", "90.00", "85.00±0.40", "(-5.00)", "91.23", "(+1.23)"]


def test_the_workspace_is_a_column_only_when_it_holds_results_of_its_own():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert "workspace" not in [c["name"] for c in compare.columns_from(shown())[0]]  # = bigbatch
    own = {run: {"test_accuracy": 0.5} for run in params["runs"]}
    assert [c["name"] for c in compare.columns_from(shown(own))[0]][1] == "workspace"


def test_another_metric_is_shown_without_percent():
    columns, params = compare.columns_from(shown())
    lines = compare.table(columns, params, metric="test_loss")
    row = next(line for line in lines if line.startswith("fcn_400-fashion_mnist")).split()
    assert lines[0].startswith("test_loss;") and row[1:4] == ["-", "0.30", "0.40"]


def test_an_unknown_experiment_is_named_with_the_ones_there_are():
    with pytest.raises(ExperimentsError, match=r"^nope: no such experiment on aaaaaaa, expected one of: lowlr, bigbatch$"):
        compare.columns_from(shown(), ["nope"])


def test_many_experiments_go_to_further_blocks_each_within_120_columns():
    commits = shown()
    template = commits[1]["experiments"][1]
    commits[1]["experiments"] = [
        {**template, "name": f"optimizer_lr-{o}-{lr}", "revs": [dict(template["revs"][0], name=f"optimizer_lr-{o}-{lr}")]}
        for o in ("rmsprop", "adam", "sgd") for lr in ("0.1", "0.01", "0.001")]
    columns, params = compare.columns_from(commits)
    lines = compare.table(columns, params)
    assert max(map(len, lines)) <= 120
    headers = [line for line in lines if line.startswith("run ")]
    assert len(headers) > 1 and all("baseline" in h for h in headers)
    assert sum(h.count("optimizer_lr-") for h in headers) == 9


def test_a_diverged_run_shows_a_dash():
    commits = shown()
    commits[1]["experiments"][1]["revs"][0]["data"]["metrics"]["metrics/mlp_64-fashion_mnist.json"]["data"] = {
        "test_accuracy": None}  # NaN is written as null
    columns, params = compare.columns_from(commits)
    row = next(line for line in compare.table(columns, params) if line.startswith("mlp_64-fashion_mnist")).split()
    assert row[3] == "-"
