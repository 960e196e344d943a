"""`fashionbench study`: its cells, its threads, its waiting on the DVC queue. The study end to end,
on the DVC queue and on Ray, is tests/ray_cases/test_study_ray.py."""
import os

import pytest


@pytest.mark.parametrize("jobs", [1, 2])
def test_with_jobs_n_each_training_takes_cores_over_n_threads_set_before_the_workers_start(monkeypatch, jobs):
    from fashionbench.core.runtime import available_cores
    from fashionbench.lab import study

    monkeypatch.delenv("FASHIONBENCH_THREADS", raising=False)
    expected = max(1, available_cores() // jobs)
    assert study.share_the_cores(jobs) == expected
    assert os.environ["FASHIONBENCH_THREADS"] == str(expected)  # what the queue's workers inherit


def test_a_thread_count_the_user_set_is_kept_whatever_the_jobs(monkeypatch):
    from fashionbench.lab import study

    monkeypatch.setenv("FASHIONBENCH_THREADS", "3")
    assert study.share_the_cores(2) == 3


def test_a_study_past_its_deadline_stops_its_experiments_and_fails(monkeypatch):
    from fashionbench.lab import study

    monkeypatch.setattr(study, "shown_experiments", lambda baseline: {
        "s-a": {"state": "running", "rev": "r1", "metrics": {}},
        "s-b": {"state": "queued", "rev": "r2", "metrics": {}},
        "s-c": {"state": "success", "rev": "r3", "metrics": {}}})
    calls = []
    monkeypatch.setattr(study, "dvc", lambda *args, check=True: calls.append(args))
    with pytest.raises(study.StudyError, match="deadline passed with 2 experiment"):
        study.wait_for_experiments(["s-a", "s-b", "s-c"], "base", deadline=0.0, jobs=1)
    assert ("queue", "kill", "s-a") in calls and ("queue", "remove", "s-b") in calls


def test_queued_experiments_with_no_running_worker_get_workers_started_again(monkeypatch):
    from fashionbench.lab import study

    polls = iter([{"s-a": {"state": "queued", "rev": "r", "metrics": {}}},
                  {"s-a": {"state": "success", "rev": "r", "metrics": {}}}])
    monkeypatch.setattr(study, "shown_experiments", lambda baseline: next(polls))
    calls = []
    monkeypatch.setattr(study, "dvc", lambda *args, check=True: calls.append(args))
    study.wait_for_experiments(["s-a"], "base", deadline=float("inf"), jobs=2, poll_seconds=0)
    assert calls == [("queue", "start", "--jobs", "2")]


def test_a_study_whose_report_fails_exits_non_zero_with_one_line(monkeypatch, capsys):
    from fashionbench.lab import study

    monkeypatch.setattr(study, "run_study", lambda *args: {"study": "dropout"})

    def dvc(*args, check=True):
        raise study.StudyError("dvc repro --single-item report ... failed: ERROR: failed to reproduce 'report'")

    monkeypatch.setattr(study, "dvc", dvc)
    assert study.main(["dropout"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: dvc repro --single-item report ... failed: ERROR: failed to reproduce 'report'")


def test_experiments_are_read_from_dvc_exp_show_json():
    from fashionbench.lab.dvc_experiments import experiments_of

    commit = {"rev": "base", "name": "main", "experiments": [
        {"name": "s-a", "executor": {"state": "success"}, "revs": [
            {"rev": "abc", "name": "s-a", "data": {"metrics": {"metrics/r.json": {"data": {"test_accuracy": 0.9}}}}}]},
        {"name": "s-b", "executor": None, "revs": [{"rev": "def", "name": "s-b", "error": {"msg": "x"}, "data": None}]}]}
    found = {e["name"]: {k: e[k] for k in ("state", "rev", "metrics")} for e in experiments_of(commit)}
    assert found == {
        "s-a": {"state": "success", "rev": "abc", "metrics": {"metrics/r.json": {"test_accuracy": 0.9}}},
        "s-b": {"state": "failed", "rev": "def", "metrics": {}}}


def test_null_and_boolean_grid_values_are_written_as_dvc_reads_them():
    from fashionbench.lab import study

    sets = study.overrides(["r"], {"ema": None, "nesterov": True, "lr": 0.1}, [0], [])
    assert sets == ["++runs.r.ema=null", "++runs.r.nesterov=true", "++runs.r.lr=0.1", "++runs.r.seeds=[0]"]


@pytest.mark.parametrize("grid, seeds, message", [
    ({"augment": ["crop_flip"]}, [0], "cell s-augment_crop_flip: runs.lenet5_modern-mnist.augment: crop_flip mirrors"),
    ({"lr": [0.1]}, [0, 0], "runs.lenet5_modern-mnist.seeds"),
])
def test_a_cell_that_params_yaml_would_reject_fails_before_anything_is_queued(workspace, grid, seeds, message):
    from fashionbench.core.catalogue import Study
    from fashionbench.lab import study

    with pytest.raises(study.StudyError, match=message):
        study.check_cells("s", Study("t", ("lenet5_modern-mnist",), grid), grid, seeds)


def test_every_cell_keeps_the_run_settings_it_trains(workspace):
    from fashionbench.core.catalogue import Study
    from fashionbench.lab import study

    grid = {"lr": [0.1, 0.01]}
    configs = study.check_cells("s", Study("t", ("lenet5_modern-mnist",), grid), grid, [1, 2], ["max_epochs=1"])
    cfg = configs["s-lr_0p01"]["lenet5_modern-mnist"]
    assert (cfg["lr"], cfg["seeds"], cfg["epochs"], cfg["model"]) == (0.01, [1, 2], 1, "lenet5_modern")
    assert configs["s-lr_0p1"]["lenet5_modern-mnist"]["lr"] == 0.1


def test_a_study_of_a_run_params_yaml_lacks_is_named(workspace):
    from fashionbench.core.catalogue import Study
    from fashionbench.lab import study

    with pytest.raises(study.StudyError, match=r"lab/studies.yaml: s.runs: nope-mnist is not a run of params.yaml"):
        study.check_cells("s", Study("t", ("nope-mnist",), {}), {}, [0])
