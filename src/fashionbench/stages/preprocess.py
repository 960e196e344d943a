"""DVC stage `preprocess@<dataset>`: IDX -> data/prepared/<dataset>.safetensors.

The output is one safetensors file of uint8 images (N, 28, 28) and int64 labels for the
train, val and test splits (~55 MB for Fashion-MNIST, loaded in a fraction of a second),
byte-identical for identical inputs. The validation split is a seeded random
`val_fraction` of the training images (0: no validation split).
"""
from __future__ import annotations

import argparse
import sys

from fashionbench.core.config import ConfigError, load_params
from fashionbench.core.idx import DataError
from fashionbench.core.paths import prepared_path
from fashionbench.core.splits import SPLITS, prepare, save_prepared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    args = parser.parse_args(argv)
    try:
        params = load_params()
        if args.dataset not in params["datasets"]:
            raise ConfigError(f"datasets: {args.dataset!r} is not in the list ({', '.join(params['datasets'])})")
        pre = params["preprocess"]
        data = prepare(args.dataset, pre.val_fraction, pre.split_seed, pre.max_train, pre.max_test)
        save_prepared(data, prepared_path(args.dataset))
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{s} {len(data[f'{s}_labels'])}" for s in SPLITS)
    print(f"{args.dataset}: {sizes} -> {prepared_path(args.dataset)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
