"""The links `python -m fashionbench.tracking` prints, opened as a person would: headless Chromium
against a real `mlflow server` on 127.0.0.1, reading the rendered runs table. Runs are logged as the
pipeline logs them (RunTracker), with a seed child, so no training is needed."""
from __future__ import annotations

import re
import subprocess

import pytest

from browser import chromium_command, require_chromium
from servers import mlflow_server

pytestmark = pytest.mark.slow

ACCURACY = {"lenet5_modern-mnist": 0.99, "lenet5_modern-fashion_mnist": 0.91, "mlp_64-fashion_mnist": 0.86}
ROW = re.compile(r'aria-rowindex="(\d+)"')
NAME = re.compile(r'href="#/experiments/\d+/runs/\w+"><span[^>]*>([^<]+)</span>')


def log_runs() -> None:
    from fashionbench.tracking.runs import RunTracker

    for run, accuracy in ACCURACY.items():
        model, dataset = run.split("-")
        tracker = RunTracker.start({"name": run, "model": model, "dataset": dataset, "epochs": 1})
        seed = tracker.child(0)
        seed.log_metrics({"test/accuracy": 1.0})  # a seed's own number: never ranked beside the runs
        seed.end()
        tracker.log_metrics({"test/accuracy": accuracy})
        tracker.end()


def table(dom: str) -> list[str]:
    """The run names in the rendered table, in the order of their rows."""
    rows = {}
    for found in NAME.finditer(dom):
        row = ROW.findall(dom, 0, found.start())[-1]
        rows.setdefault(int(row), found.group(1))
    return [rows[row] for row in sorted(rows)]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """view key -> the DOM Chromium rendered for its printed link."""
    require_chromium()
    base = tmp_path_factory.mktemp("ui")
    mp = pytest.MonkeyPatch()
    for name in ("DVC_EXP_NAME", "DVC_ROOT", "DVC_EXP_BASELINE_REV"):
        mp.delenv(name, raising=False)
    try:
        with mlflow_server(base / "server") as uri:
            mp.setenv("MLFLOW_TRACKING_URI", uri)
            from fashionbench.tracking import ui

            log_runs()
            links = ui.ui_links(uri)
            browsers = {key: subprocess.Popen(chromium_command(base / f"profile-{key}", "--dump-dom", link, offline=False,
                                                               window="1700,900", budget_ms=15000),
                                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                        for key, link in links.items()}
            yield {key: browser.communicate(timeout=120)[0] for key, browser in browsers.items()}
    finally:
        mp.undo()


def test_the_ranked_link_shows_whole_runs_best_test_accuracy_first(rendered):
    assert table(rendered["fashionbench-ranked"]) == [f"{run} (workspace)" for run in ACCURACY]


def test_the_ranked_link_shows_test_accuracy_as_a_visible_column(rendered):
    dom = rendered["fashionbench-ranked"]
    cells = re.findall(r'col-id="metrics\.`test/accuracy`"[^>]*>(?:<[^>]+>)*([0-9.]+)', dom)
    assert [round(float(c), 2) for c in cells] == list(ACCURACY.values())


@pytest.mark.parametrize("dataset", ["fashion_mnist", "mnist"])
def test_each_dataset_has_a_link_that_ranks_its_runs_alone(rendered, dataset):
    expected = [f"{run} (workspace)" for run in ACCURACY if run.endswith(f"-{dataset}")]
    assert table(rendered[f"fashionbench-{dataset}"]) == expected
