"""DVC stage `report`: every run side by side, the seeds' numbers beside ours, and the studies.

Reads metrics/*.json, plots/history/*.csv, plots/eval/*.json and studies/*.json; writes
plots/report.md, plots/comparison.png, plots/summary.csv and plots/studies/*.png. Nothing
here is edited by hand, and nothing in report.md depends on timing, so the same params and
seeds rebuild the same report.
"""
from __future__ import annotations

import argparse
import sys

import yaml

from fashionbench.core.config import PARAMS_FILE, ConfigError, load_params
from fashionbench.core.paths import PLOTS_DIR
from fashionbench.report.build import build_report


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    try:
        build_report(load_params(), raw=yaml.safe_load(PARAMS_FILE.read_text()))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"report: {PLOTS_DIR / 'report.md'}, figures under {PLOTS_DIR}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
