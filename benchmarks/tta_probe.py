"""TTA probe: score every test-time augmentation mode on the validation split with the checkpoints
the pipeline trained for a run (each seed), and print validation accuracies only, never a test
number. It is how resnet_fast-fashion_mnist chose its `tta` (docs/results-notebook.md, "Beyond the write-ups"); the
weights do not depend on `tta`, so the modes are compared on the same trained models.

    python benchmarks/tta_probe.py resnet_fast-fashion_mnist      # after `dvc repro train@<run>`
"""
from __future__ import annotations

import argparse
import sys

from fashionbench.core.config import FLIPPABLE, ConfigError, run_config
from fashionbench.core.engine import predict
from fashionbench.core.evaluation import load_checkpoint
from fashionbench.core.idx import DataError
from fashionbench.core.runtime import eval_batch_size, resolve_device
from fashionbench.core.schema import TTA_MODES
from fashionbench.core.splits import load_run_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run of params.yaml whose checkpoints `dvc repro` trained")
    args = parser.parse_args(argv)
    try:
        cfg = run_config(args.run)
        device = resolve_device(cfg.device)
        data = load_run_data(cfg, device)
        models = {seed: load_checkpoint(cfg, seed, device) for seed in cfg.seeds}
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    images, labels = data["val_images"], data["val_labels"]
    if len(labels) == 0:
        print("error: val_fraction: 0 leaves no validation split to probe on", file=sys.stderr)
        return 1
    modes = [m for m in TTA_MODES if cfg.dataset in FLIPPABLE or "flip" not in m]
    print(f"{args.run}: validation accuracy by tta mode, seeds {cfg.seeds}")
    for mode in modes:
        accs = [float((predict(model, images, eval_batch_size(cfg, device), cfg.precision, mode).argmax(1)
                       == labels).float().mean()) for model in models.values()]
        per_seed = ", ".join(f"{100 * a:.2f}" for a in accs)
        print(f"  {mode:<11} mean {100 * sum(accs) / len(accs):.2f}   ({per_seed})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
