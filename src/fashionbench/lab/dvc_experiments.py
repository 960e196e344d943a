"""What runs and DVC experiments left behind, read back for the report, studies and `compare`.

A run's results are two files: metrics/<run>.json (the headline numbers, DVC metrics, what
`dvc exp show` lists) and plots/eval/<run>.json (status, per-seed and per-class accuracy,
confusion matrix). `run_result` merges them into one record. Experiments are read through
DVC's documented JSON output, `dvc exp show --json`.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


class ExperimentsError(Exception):
    pass


def dvc_executable() -> str:
    """The dvc installed beside this Python, so `.venv/bin/fashionbench` works without activating."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.is_file() else "dvc"


def dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([dvc_executable(), *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()
        raise ExperimentsError(f"dvc {' '.join(args[:3])} ... failed: {tail[-1] if tail else result.returncode}")
    return result


def exp_show(*args: str) -> list[dict]:
    """`dvc exp show --json` (a list of commits: the workspace first, then each commit with
    its `experiments`, each a range of `revs` whose first is the experiment's result)."""
    out = dvc("exp", "show", "--json", *args).stdout
    try:
        return json.loads(out)
    except ValueError:
        raise ExperimentsError(f"dvc exp show --json: not JSON: {out[:80]!r}") from None


def shown_metrics(entry: dict) -> dict[str, dict | None]:
    """metrics file path -> its content, for one commit or experiment of `dvc exp show --json`."""
    return {path: (result or {}).get("data") for path, result in
            ((entry.get("data") or {}).get("metrics") or {}).items()}


def shown_params(entry: dict) -> dict:
    """params.yaml's content for one commit or experiment of `dvc exp show --json`."""
    return (((entry.get("data") or {}).get("params") or {}).get("params.yaml") or {}).get("data") or {}


def experiments_of(commit: dict) -> list[dict]:
    """{name, state, rev, timestamp, metrics} of every experiment hanging under `commit`."""
    found = []
    for exp_range in commit.get("experiments") or []:
        last = (exp_range.get("revs") or [{}])[0]
        state = (exp_range.get("executor") or {}).get("state") or ("failed" if last.get("error") else "success")
        found.append({"name": exp_range.get("name") or last.get("name"), "state": state, "rev": last.get("rev"),
                      "timestamp": (last.get("data") or {}).get("timestamp") or "",
                      "metrics": shown_metrics(last)})
    return found
