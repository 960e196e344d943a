"""Ctrl-C ends a `fashionbench tune` session in bounded time, with its MLflow runs ended KILLED,
even when the interrupt is lost inside the search (no Ray needed: the search is a stand-in)."""
import signal
import subprocess
import sys
import time

import pytest
import yaml

RUN = "mlp_64-fashion_mnist"

# The session as `python -m fashionbench.lab.tune` runs it, with a 2 s grace and a search that opens a
# trial's run and then drops every KeyboardInterrupt, as one raised inside a finalizer is dropped.
SESSION = f"""
import sys, time
from pathlib import Path
from fashionbench.core.config import PARAMS_FILE
from fashionbench.lab.tune import session
from fashionbench.lab.tune.space import read_yaml, with_keys
from fashionbench.tracking.runs import RunTracker

def search_that_drops_ctrl_c(search, address, storage, parent_run_id):
    RunTracker.start(with_keys(read_yaml(PARAMS_FILE, "params.yaml"), search.run, {{}}),
                     parent_run_id=parent_run_id, name="trial (tune)")
    while True:
        try:
            Path("searching").touch()  # inside the try: no Ctrl-C gets past this search
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass

session.INTERRUPT_GRACE_S = 2
session.run_search = search_that_drops_ctrl_c
sys.exit(session.main(["{RUN}"]))
"""


def test_ctrl_c_ends_a_session_whose_search_drops_the_interrupt_after_the_grace(workspace, store):
    pytest.importorskip("ray")  # tune refuses to start without it
    from mlflow import MlflowClient

    (workspace / "tuning").mkdir()
    (workspace / "lab" / "search_spaces.yaml").write_text(yaml.safe_dump({RUN: {"space": {"lr": {"loguniform": [0.001, 0.1]}}}}))
    proc = subprocess.Popen([sys.executable, "-c", SESSION], cwd=workspace, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (workspace / "searching").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (workspace / "searching").exists(), proc.communicate(timeout=10)[0][-3000:]
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        waited = time.monotonic() - interrupted
    finally:
        proc.kill()
    assert proc.returncode == 130, out[-3000:]
    assert waited >= 2 and f"{RUN}: interrupted; Ray had not let go 2 s after Ctrl-C" in out
    runs = MlflowClient(store).search_runs([MlflowClient(store).get_experiment_by_name("fashionbench").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(["trial (tune)", f"{RUN} (tune)"])
    assert {r.info.status for r in runs} == {"KILLED"}


def test_the_watchdog_gives_ctrl_c_back_to_the_handler_before_it():
    from fashionbench.lab.tune.watchdog import InterruptWatchdog

    before = signal.getsignal(signal.SIGINT)
    with InterruptWatchdog("run", None, grace_s=60) as watchdog:
        assert signal.getsignal(signal.SIGINT) == watchdog.handle
    assert signal.getsignal(signal.SIGINT) is before


def test_the_watchdog_outside_the_main_thread_leaves_signals_alone():
    import threading

    from fashionbench.lab.tune.watchdog import InterruptWatchdog

    before, errors = signal.getsignal(signal.SIGINT), []

    def search_in_a_thread():
        try:
            with InterruptWatchdog("run", None, grace_s=60):
                pass
        except Exception as exc:  # noqa: BLE001 - what the test looks for
            errors.append(exc)

    worker = threading.Thread(target=search_in_a_thread)
    worker.start()
    worker.join()
    assert errors == [] and signal.getsignal(signal.SIGINT) is before
