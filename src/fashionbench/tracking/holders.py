"""Which process holds an MLflow run: each run records its holder's host, pid and start time, so
a run left RUNNING by a process that died (SIGKILL, power loss) can be told from a live one.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path


def process_start(pid: int) -> str:
    """When process `pid` started, in clock ticks since boot (Linux /proc), or "" if unknown.
    A pid together with its start time names one process: pids are reused, this pair is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime


def holder_alive(tags: dict) -> bool:
    """Whether the process named by a run's `pid` and `pid_start` tags still runs."""
    pid = tags.get("pid", "")
    if not pid.isdigit():
        return False
    if tags.get("pid_start"):
        return process_start(int(pid)) == tags["pid_start"]
    try:  # no start time recorded (not Linux): existence only
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_tags() -> dict[str, str]:
    return {"host": socket.gethostname(), "pid": str(os.getpid()), "pid_start": process_start(os.getpid())}
