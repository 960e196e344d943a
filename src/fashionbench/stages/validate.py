"""DVC stage `validate`: check all of params.yaml and the tracking server, then write each
run's resolved config.

It depends on the whole params.yaml, every other stage depends on one of its outputs, and
dvc.yaml marks it `always_changed`, so DVC runs it on every `dvc repro` and `dvc exp run` (and
stops on its error) before any stage whose outputs it would delete. What it checks can change
without params.yaml changing: the machine (a device that is gone) and the MLflow server named
by MLFLOW_TRACKING_URI (one that refuses or never replies fails here in seconds, not after DVC
has deleted a run's model). When it passes, its outputs keep their bytes and nothing re-runs.

- data/params.validated: the same bytes for every valid params.yaml; download, preprocess and
  report wait on it and nothing more.
- data/config/<run>.json: the run's entry merged over the shared defaults, in stable bytes.
  `train@<run>` and `evaluate@<run>` depend on this file instead of on every top-level key, so
  `dvc exp run -S lr=0.0001` retrains exactly the runs whose resolved config changed (those
  without their own `lr`); a run that overrides a default is restored, never retrained.
"""
from __future__ import annotations

import argparse
import json
import sys

from fashionbench.core.config import PARAMS_FILE, ConfigError, load_params
from fashionbench.core.files import write_text
from fashionbench.core.paths import RUN_CONFIG_DIR, VALIDATED_PARAMS, run_config_path
from fashionbench.core.schema import RunConfig
from fashionbench.tracking.store import TrackingError, check_reachable


def config_bytes(cfg: RunConfig) -> str:
    """A run's config as stable text: sorted keys, so the same config always hashes the same."""
    return json.dumps(cfg.as_dict(), sort_keys=True, indent=1) + "\n"


def write_run_configs(runs: dict[str, RunConfig]) -> None:
    """data/config/<run>.json for every run; a file whose bytes are already right is left as it
    is, and the file of a run no longer in params.yaml is removed."""
    RUN_CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    for name, cfg in runs.items():
        path, text = run_config_path(name), config_bytes(cfg)
        if not path.is_file() or path.read_text() != text:
            write_text(path, text)
    for path in RUN_CONFIG_DIR.glob("*.json"):
        if path.stem not in runs:
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate params.yaml (the pipeline's first stage).")
    parser.add_argument("params", nargs="?", default=str(PARAMS_FILE))
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        check_reachable()
    except (ConfigError, TrackingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_run_configs(params["runs"])
    write_text(VALIDATED_PARAMS, "params.yaml is valid\n")
    print(f"{args.params}: valid ({len(params['runs'])} runs on {', '.join(params['datasets'])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
