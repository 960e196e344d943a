"""The same params and seed give the same bytes whatever else the machine runs: a training's
thread count is fixed from its start to its end (FASHIONBENCH_THREADS, else every core) and
recorded in train.json, never changed because another training started."""
import json
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow  # two real training processes, side by side

from fashionbench.core.runtime import available_cores

from conftest import set_run

RUN, OTHER = "lenet5_modern-mnist", "mlp_64-fashion_mnist"


def start_training(root, run: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fashionbench.stages.train", run, "--no-mlflow", "--no-resume"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_first_epoch(root, run: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until `run` has saved the state of its first epoch (resume/<run>/seed0.pt)."""
    state, deadline = root / "resume" / run / "seed0.pt", time.monotonic() + timeout
    while not state.is_file():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"{run} saved no epoch in {timeout} s"
        time.sleep(0.02)


def trained(root) -> tuple[bytes, list, int]:
    """The weights' bytes, the per-epoch history without its timings, the threads recorded."""
    summary = json.loads((root / "models" / RUN / "train.json").read_text())
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in summary["history"]["0"]]
    return (root / "models" / RUN / "seed0.safetensors").read_bytes(), history, summary["threads"]


@pytest.mark.skipif(available_cores() < 2, reason="one core: one thread, whatever else runs")
def test_a_convolutional_training_gives_the_same_bytes_alone_and_with_another_started_beside_it(workspace, monkeypatch):
    monkeypatch.delenv("FASHIONBENCH_THREADS", raising=False)  # the default: every core
    set_run(workspace, RUN, seeds=[0], epochs=70)  # long enough for the other to start mid-run (checked below)
    set_run(workspace, OTHER, epochs=100000)  # outlives it; stopped below
    alone = start_training(workspace, RUN)
    assert alone.wait(timeout=600) == 0, alone.communicate()[0][-3000:]
    first = trained(workspace)

    loaded = start_training(workspace, RUN)
    other = None
    try:
        wait_for_first_epoch(workspace, RUN, loaded)
        other = start_training(workspace, OTHER)  # another training starts mid-run
        wait_for_first_epoch(workspace, OTHER, other)
        assert loaded.poll() is None, "the training ended before the other one trained beside it"
        assert loaded.wait(timeout=600) == 0, loaded.communicate()[0][-3000:]
    finally:
        for proc in (loaded, other):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert first[2] == available_cores()  # recorded in train.json
    assert trained(workspace) == first
