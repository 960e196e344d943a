"""`fashionbench study --executor ray` on an embedded Ray against the DVC queue: the same cells.
Run by tests/test_ray.py in a loopback-only network namespace."""
from __future__ import annotations

import json

import pytest

from pipeline_repo import fcn_400_study_repo, run

pytestmark = pytest.mark.slow


def test_a_study_on_ray_writes_the_same_cells_as_the_dvc_queue(tmp_path):
    from pipeline_repo import generated_data_env

    mp = generated_data_env(tmp_path)
    mp.setenv("FASHIONBENCH_THREADS", "1")  # a queue worker's threads = a Ray task's CPU: the same float sums
    study = ["python", "-m", "fashionbench.cli", "study", "optimizer_lr", "--grid", "optimizer=sgd",
             "--grid", "lr=0.1,0.01", "--seeds", "0", "-S", "max_epochs=1"]
    try:
        root = fcn_400_study_repo(tmp_path / "repo")
        try:
            run(root, *study)
        finally:
            run(root, "dvc", "queue", "stop", "--kill", check=False)
        queued = json.loads((root / "studies" / "optimizer_lr.json").read_text())
        out = run(root, *study, "--executor", "ray")
        on_ray = json.loads((root / "studies" / "optimizer_lr.json").read_text())
    finally:
        mp.undo()
    assert on_ray["executor"] == "ray" and "executor" not in queued
    assert [c["experiment"] for c in on_ray["cells"]] == [c["experiment"] for c in queued["cells"]]
    for ray_cell, queue_cell in zip(on_ray["cells"], queued["cells"]):
        assert ray_cell["params"] == queue_cell["params"]
        ray_run, queue_run = ray_cell["runs"]["fcn_400-fashion_mnist"], queue_cell["runs"]["fcn_400-fashion_mnist"]
        assert ray_run["metrics"]["test_accuracy_per_seed"] == queue_run["metrics"]["test_accuracy_per_seed"]
        assert ray_run["confusion_matrix"] == queue_run["confusion_matrix"]
    assert "| lr | SGD |" in out.stdout and "| lr | SGD |" in (root / "plots" / "report.md").read_text()
