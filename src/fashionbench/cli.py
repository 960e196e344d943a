"""`fashionbench` command: `fashionbench study <name>` (more subcommands may follow)."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: fashionbench study [--list] <name> [options]\n"
              "  the pipeline itself runs with `dvc repro`; see README.md")
        return 0
    if argv[0] == "study":
        from fashionbench.study import main as study_main

        return study_main(argv[1:])
    print(f"error: unknown command {argv[0]!r}, expected: study", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
