"""`fashionbench study` end to end on small generated data: on the DVC queue (the default), then
`--executor ray` on an embedded Ray, which must write the same cells. One study repository for
both (building it and running the queue costs about two minutes on 2 cores).
Run by tests/test_ray.py in a loopback-only network namespace."""
from __future__ import annotations

import json

import pytest

from pipeline_repo import fcn_400_study_repo, run

pytestmark = pytest.mark.slow

STUDY = ["python", "-m", "fashionbench.cli", "study", "optimizer_lr", "--grid", "optimizer=sgd",
         "--grid", "lr=0.1,0.01", "--seeds", "0", "1", "-S", "max_epochs=1"]


@pytest.fixture(scope="module")
def queued(tmp_path_factory):
    """The study run on the DVC queue: its repository, its stdout, its result file and its report."""
    from pipeline_repo import generated_data_env

    base = tmp_path_factory.mktemp("study")
    mp = generated_data_env(base)
    mp.setenv("FASHIONBENCH_THREADS", "1")  # a queue worker's threads = a Ray task's CPU: the same float sums
    try:
        root = fcn_400_study_repo(base / "repo")
        try:
            out = run(root, *STUDY)
        finally:
            run(root, "dvc", "queue", "stop", "--kill", check=False)
        yield {"root": root, "stdout": out.stdout, "report": (root / "plots" / "report.md").read_text(),
               "result": json.loads((root / "studies" / "optimizer_lr.json").read_text())}
    finally:
        mp.undo()


def test_a_study_on_the_dvc_queue_trains_each_cell_and_seed_and_writes_its_table(queued):
    result = queued["result"]
    assert [c["params"] for c in result["cells"]] == [{"optimizer": "sgd", "lr": 0.1}, {"optimizer": "sgd", "lr": 0.01}]
    assert result["threads"] == 1  # the FASHIONBENCH_THREADS set above, which the study keeps
    for cell in result["cells"]:
        metrics = cell["runs"]["fcn_400-fashion_mnist"]["metrics"]
        assert metrics["seeds"] == 2 and len(metrics["test_accuracy_per_seed"]) == 2
    assert "| lr | RMSProp | Adam | SGD |" not in queued["stdout"]  # only the columns that ran
    assert "| lr | SGD |" in queued["stdout"] and "| lr | SGD |" in queued["report"]
    assert (queued["root"] / "plots" / "studies" / "optimizer_lr.png").stat().st_size > 1000


def test_a_study_on_ray_writes_the_same_cells_as_the_dvc_queue(queued):
    root = queued["root"]
    out = run(root, *STUDY, "--executor", "ray")  # in the fixture's environment, which lasts the module
    on_ray = json.loads((root / "studies" / "optimizer_lr.json").read_text())
    assert on_ray["executor"] == "ray" and "executor" not in queued["result"]
    assert [c["experiment"] for c in on_ray["cells"]] == [c["experiment"] for c in queued["result"]["cells"]]
    for ray_cell, queue_cell in zip(on_ray["cells"], queued["result"]["cells"]):
        assert ray_cell["params"] == queue_cell["params"]
        ray_run, queue_run = ray_cell["runs"]["fcn_400-fashion_mnist"], queue_cell["runs"]["fcn_400-fashion_mnist"]
        assert ray_run["metrics"]["test_accuracy_per_seed"] == queue_run["metrics"]["test_accuracy_per_seed"]
        assert ray_run["confusion_matrix"] == queue_run["confusion_matrix"]
    assert "| lr | SGD |" in out.stdout and "| lr | SGD |" in (root / "plots" / "report.md").read_text()
