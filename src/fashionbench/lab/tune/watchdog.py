"""Ctrl-C ends a tuning session in bounded time, even where Ray does not let go.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from fashionbench.lab.tune.trials import end_session_runs

# Ctrl-C raises KeyboardInterrupt in the driver, and Ray usually lets go of it at once. But on a
# loaded 2-core machine the session was twice still alive 300 s after Ctrl-C, never caught in the
# act (a KeyboardInterrupt raised inside a finalizer or a Cython callback is printed and dropped,
# and the search trains on). After this grace the session ends its MLflow runs and exits itself;
# its trials' actors end with the driver.
INTERRUPT_GRACE_S = 60


class InterruptWatchdog:
    """Bounds the time Ctrl-C takes to end a session, however Ray behaves.

    Used as `with watchdog:` around the search. Its SIGINT handler raises KeyboardInterrupt, as
    Python's own does, and notes the time of the first one. A thread started with the session
    (a signal handler must not start one: Thread.start takes a lock the interrupted code may
    hold) ends the session's MLflow runs and exits 130 if the search is still running `grace_s`
    after that first Ctrl-C. Only the main thread receives signals: elsewhere it does nothing.
    """

    poll_s = 0.2
    cleanup_s = 15.0  # what ending the runs may take before the exit goes ahead without them

    def __init__(self, run: str, parent_run_id: str | None, grace_s: float):
        self.run, self.parent_run_id, self.grace_s = run, parent_run_id, grace_s
        self.interrupted_at: float | None = None
        self.finished = threading.Event()  # set as the search ends, however it ends
        self.previous_handler = None
        self.installed = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous_handler = signal.signal(signal.SIGINT, self.handle)
            self.installed = True
            threading.Thread(target=self.watch, name="interrupt-watchdog", daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.finished.set()
        if self.installed:
            # None: the handler before was not set from Python; Python's default stands in for it.
            signal.signal(signal.SIGINT, self.previous_handler or signal.default_int_handler)

    def handle(self, signum, frame):
        if self.interrupted_at is None:
            self.interrupted_at = time.monotonic()
        raise KeyboardInterrupt

    def watch(self) -> None:
        while not self.finished.wait(self.poll_s):
            if self.interrupted_at is not None and time.monotonic() - self.interrupted_at >= self.grace_s:
                self.expire()

    def expire(self) -> None:
        print(f"{self.run}: interrupted; Ray had not let go {self.grace_s:g} s after Ctrl-C, so the session ends here",
              file=sys.stderr, flush=True)
        if self.parent_run_id:
            # A tracking server that does not answer could hold this for minutes: exit all the same.
            ending = threading.Thread(target=end_session_runs, args=(self.parent_run_id,), daemon=True)
            ending.start()
            ending.join(self.cleanup_s)
        sys.stdout.flush()
        os._exit(130)
