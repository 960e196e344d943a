"""`fashionbench` command: `compare` (DVC experiments side by side), `study` (the seeds' studies as
DVC experiments), `predict` (image files), `tune` (Ray Tune), `reproduce` (an MLflow run's workspace
rebuilt) and `server` (a team's MLflow tracking server on PostgreSQL).
"""
from __future__ import annotations

import sys

COMMANDS = {
    "compare": "fashionbench.lab.compare",
    "study": "fashionbench.lab.study",
    "predict": "fashionbench.predict",
    "tune": "fashionbench.lab.tune.session",
    "reproduce": "fashionbench.lab.reproduce",
    "server": "fashionbench.tracking.server",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: fashionbench compare [EXPERIMENT...] [--metric NAME] [--rev REV]\n"
              "       fashionbench study [--list] <name> [options]\n"
              "       fashionbench predict PATH... [--run NAME | --model-uri URI] [--json]\n"
              "       fashionbench tune <run> [--address HOST:PORT --storage DIR|s3://...] [--trials N]\n"
              "       fashionbench reproduce RUN_ID [--into DIR] [--retrain]\n"
              "       fashionbench server --data DIR [--backend-store-uri postgresql://...] [--host HOST] [--port N]\n"
              "  the pipeline itself runs with `dvc repro`; see README.md and docs/")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}, expected one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from importlib import import_module

    return import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
