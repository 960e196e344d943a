"""Study executors side by side: the seed-003 optimizer x lr grid (9 cells of fcn_400, one seed,
epochs cut by --epochs) through the DVC queue with -j 1 and -j 2, and as Ray tasks two at once.

Runs in a scratch clone of this repository (its studies/ and experiments are not touched): the
data are prepared there once (download from FASHIONBENCH_DATA_MIRROR, preprocess), then each
executor runs the whole `fashionbench study` command, report included, and its wall time is
taken. Writes a Markdown table with the machine to --output.

    python benchmarks/study_executors.py                  # ~10 min on 2 CPU cores with --epochs 5
    python benchmarks/study_executors.py --epochs 2 --output /tmp/executors.md
    # the 4-cell study of docs/training.md, queue only:
    python benchmarks/study_executors.py --epochs 3 --grid optimizer=sgd,adam --grid lr=0.1,0.01 \
        --executors "DVC queue, -j 1" "DVC queue, -j 2" --output /tmp/jobs.md
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from train_speed import machine  # this directory's other benchmark: the same machine description

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXECUTORS = {  # name -> the study command's options
    "DVC queue, -j 1": ["--jobs", "1"],
    "DVC queue, -j 2": ["--jobs", "2"],
    "Ray, 2 tasks at once": ["--executor", "ray"],
}


def sh(cwd: Path, *cmd: str) -> None:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="max_epochs for every cell (default %(default)s)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "STUDY_EXECUTORS.md")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="replace one axis of the study's grid (fashionbench study --grid)")
    parser.add_argument("--executors", nargs="+", choices=list(EXECUTORS), default=list(EXECUTORS))
    args = parser.parse_args(argv)
    grid = [option for axis in args.grid for option in ("--grid", axis)]

    info = machine(torch.device("cpu"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fashionbench-executors-") as scratch:
        clone = Path(scratch) / "repo"
        sh(REPO, "git", "clone", "-q", str(REPO), str(clone))
        sh(clone, "dvc", "repro", "preprocess@fashion_mnist")
        sh(clone, "git", "commit", "-qam", "prepared", "--allow-empty")
        for name in args.executors:
            # Each executor trains: without this, DVC's run cache restores the cells an earlier
            # executor trained with the same params instead of training them.
            shutil.rmtree(clone / ".dvc" / "cache" / "runs", ignore_errors=True)
            start = time.perf_counter()
            sh(clone, str(BIN / "fashionbench"), "study", "optimizer_lr", "--seeds", "0",
               "-S", f"max_epochs={args.epochs}", *grid, *EXECUTORS[name])
            rows.append((name, time.perf_counter() - start))
            print(f"{name}: {rows[-1][1]:.0f} s", flush=True)
    reference = rows[0][1]
    lines = ["# Study executors: the seed-003 optimizer x lr grid", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- command: python benchmarks/study_executors.py {' '.join(argv if argv is not None else sys.argv[1:])}",
              f"- workload: `fashionbench study optimizer_lr --seeds 0 -S max_epochs={args.epochs} {' '.join(grid)}` "
              "(cells of fcn_400, each trained and evaluated, then the report), in a scratch clone", "",
              "| executor | wall time | relative to DVC queue -j 1 |", "|---|---:|---:|"]
    lines += [f"| {name} | {seconds:.0f} s | {reference / seconds:.2f}x |" for name, seconds in rows]
    text = "\n".join(lines) + "\n"
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
