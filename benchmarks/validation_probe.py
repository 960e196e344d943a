"""Validation probe: train one configuration of a model on the real prepared data and print its
validation accuracy after every epoch, with the training time so far. It prints no test number:
it is how the runs beyond the write-ups chose their hyperparameters (docs/results-notebook.md, "Beyond the write-ups").

    python benchmarks/validation_probe.py fashion_mnist '{"width": 16, "epochs": 20, "lr": 0.1, ...}'
    python benchmarks/validation_probe.py mnist '{"augment": "crop", "epochs": 8}' --model resnet_fast --seed 1

The JSON holds a run entry's keys (params.yaml's shared defaults fill the rest, validated as the
pipeline validates them). Needs the prepared data (`dvc repro preprocess`).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import yaml

from fashionbench.core.config import PARAMS_FILE, ConfigError, validate
from fashionbench.core.engine import train_seed
from fashionbench.core.runtime import configure_process, resolve_device, training_threads
from fashionbench.core.splits import load_run_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("entry", type=json.loads, help="a run entry as JSON, e.g. '{\"width\": 16}'")
    parser.add_argument("--model", default="resnet_fast")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    params = yaml.safe_load(PARAMS_FILE.read_text())
    params["runs"] = {"probe": {"model": args.model, "dataset": args.dataset, **args.entry}}
    try:
        threads = training_threads()
        cfg = validate(params)["runs"]["probe"]
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    device = resolve_device(cfg.device)
    torch.set_num_threads(threads)  # as `train` takes them: fixed for the run (FASHIONBENCH_THREADS=1 for two probes side by side)
    configure_process(device)
    data = load_run_data(cfg, device)
    if len(data["val_labels"]) == 0:
        print("error: val_fraction: 0 leaves no validation split to probe on", file=sys.stderr)
        return 1

    def show(row: dict) -> None:
        print(f"epoch {row['epoch']:3d}  training {row['seconds']:7.1f} s  train accuracy {row['train_accuracy']:.4f}"
              f"  val accuracy {row['val_accuracy']:.4f}", flush=True)

    result = train_seed(cfg, data, args.seed, device, on_epoch=show, progress=False)
    print(f"{json.dumps(args.entry)}: val accuracy {result['history'][-1]['val_accuracy']:.4f} after "
          f"{result['seconds']:.1f} s of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
