"""`fashionbench tune` on an embedded Ray (the default): tiny trials on generated data.
Run by tests/test_ray.py in a loopback-only network namespace."""
from __future__ import annotations

import json
import time

import pytest

from tune_helpers import RUN, adopt_orphans, our_ray_processes, session_runs, tune, tune_space

pytestmark = pytest.mark.slow


def test_the_embedded_default_runs_every_trial_and_leaves_no_ray_behind(workspace, store):
    tune_space(workspace, RUN, trials=3, concurrent=2)
    adopt_orphans()  # what the session leaves behind stays ours to find
    done = tune(workspace, env={"MLFLOW_TRACKING_URI": store})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((workspace / "tuning" / f"{RUN}.json").read_text())
    assert len(result["trials"]) == 3 and result["address"] == "embedded"
    assert all(t["status"] == "TERMINATED" and t["epochs_run"] == 1 for t in result["trials"])
    parent, children = session_runs(store)
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert all(c.info.status == "FINISHED" for c in children)
    deadline = time.monotonic() + 30  # a worker told to exit may take a moment on a loaded machine
    while our_ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert our_ray_processes() == set()
