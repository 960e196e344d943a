"""SIGTERM and SIGINT as an exception, so a stopped stage still ends what it opened.

Python turns SIGINT into KeyboardInterrupt but lets SIGTERM (what `kill`, `dvc queue kill`
and most schedulers send) end the process at once, skipping every `finally`. Inside
`stop_signals_raise()` both raise `Stopped`, which unwinds like any exception: MLflow runs
are ended as KILLED and the resumable state stays on disk.
"""
from __future__ import annotations

import contextlib
import signal


class Stopped(BaseException):
    """The process was asked to stop (SIGTERM or SIGINT). BaseException, like KeyboardInterrupt,
    so `except Exception` blocks do not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process killed by the signal


def _raise_stopped(signum, _frame):
    raise Stopped(signum)


@contextlib.contextmanager
def stop_signals_raise():
    previous = {s: signal.signal(s, _raise_stopped) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
