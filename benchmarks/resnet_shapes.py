"""Where a resnet_fast training step's time goes: ms per step of the run's own training loop for
several `blocks` shapes (residual blocks per stage), as a ratio to the zoo's [1, 1, 1] measured in
the same run, with parameters and FLOPs per step. It trains nothing to the end and reads no
accuracy: which shape to train is chosen on the validation split (benchmarks/validation_probe.py).
The last column is each shape's share of the machine: its training FLOP/s over a large matrix
multiply's in the training's precision, measured in the same run (as time_to_accuracy.py does), so
that tables from two CPUs can be set side by side.

    python benchmarks/resnet_shapes.py                        # the shapes below, 40 steps each (~2 min here)
    python benchmarks/resnet_shapes.py --shapes 1,1,1 0,1,2   # any shapes; the first is the reference

The configuration is params.yaml's run (`resnet_fast-fashion_mnist` unless --run) with only
`blocks` changed. Needs the prepared data (`dvc repro preprocess`). Writes Markdown with the
machine to --output (benchmarks/RESNET_SHAPES.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from time_to_accuracy import RUN, matmul_dtype, reference_multiply, training_throughput  # the same timed steps
from train_speed import machine

from fashionbench.core.config import ConfigError, load_params, run_config, validate_run
from fashionbench.core.models import model_from_config, parameter_count
from fashionbench.core.runtime import apply_fixed_threads, configure_process, resolve_device
from fashionbench.core.schema import RunConfig
from fashionbench.core.splits import load_run_data

SHAPES = ("1,1,1", "1,1,2", "0,1,2", "0,1,3", "0,2,2", "0,1,1,1")
WARMUP = 5  # untimed steps before each shape's timed ones


def shape(text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected residual blocks per stage like 0,1,2, got {text!r}") from None


def with_blocks(cfg: RunConfig, blocks: list[int]) -> RunConfig:
    """The run's configuration with `blocks` replaced, validated as params.yaml's runs are."""
    entry = {**{k: v for k, v in cfg.as_dict().items() if k not in ("name", "split_seed")}, "blocks": blocks}
    return validate_run(cfg.name, entry, cfg, [cfg.dataset], load_params()["preprocess"])


def markdown(info: dict, setup: list[str], rows: list[dict], matmul: float) -> str:
    lines = ["# resnet_fast shapes: time per training step", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()] + [f"- {s}" for s in setup] + [""]
    lines += ["| blocks | parameters | GFLOP per step | ms per step | ratio to the first | share of the machine |",
              "|---|---:|---:|---:|---:|---:|"]
    reference = rows[0]["ms_per_step"]
    for r in rows:
        share = r["gflop"] * 1e9 / (r["ms_per_step"] / 1000) / matmul
        lines.append(f"| {r['blocks']} | {r['parameters']:,} | {r['gflop']:.2f} | {r['ms_per_step']:.1f} "
                     f"| {r['ms_per_step'] / reference:.2f} | {share:#.2g} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=RUN, help="a run of params.yaml (default %(default)s)")
    parser.add_argument("--shapes", type=shape, nargs="+", default=[shape(s) for s in SHAPES],
                        help="blocks per stage, comma-separated; the first is the reference")
    parser.add_argument("--steps", type=int, default=40, help="timed batches per shape")
    parser.add_argument("--matmul-size", type=int, default=4096, help="the reference multiply's n (n x n)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "RESNET_SHAPES.md")
    args = parser.parse_args(argv)
    try:
        apply_fixed_threads()
        cfg = run_config(args.run)
        configs = [with_blocks(cfg, blocks) for blocks in args.shapes]
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    device = resolve_device(cfg.device)
    configure_process(device)
    data = load_run_data(cfg, device)
    info = machine(device)
    rows, precisions = [], set()
    for c in configs:
        measured = training_throughput(c, data, device, args.steps, warmup=WARMUP)
        precisions.add(matmul_dtype(measured, device))
        rows.append({"blocks": c.blocks, "parameters": parameter_count(model_from_config(c)),
                     "gflop": measured["flops_per_step"] / 1e9,
                     "ms_per_step": 1000 * measured["seconds"] / measured["steps"]})
        print(f"blocks {c.blocks}: {rows[-1]['ms_per_step']:.1f} ms per step", flush=True)
    setup = [f"command: python benchmarks/resnet_shapes.py {' '.join(argv if argv is not None else sys.argv[1:])}",
             f"run: `{args.run}` on {device} (width {cfg.width}, batch {cfg.batch_size}, precision "
             f"{cfg.precision}, augment {cfg.augment}, ema {cfg.ema}), {args.steps} timed steps per shape "
             f"after {WARMUP} warm-up steps"]
    dtype = "bf16" if precisions == {"bf16"} else "float32"
    matmul = reference_multiply(device, args.matmul_size, dtype)
    setup.append(f"the machine: a {dtype} {args.matmul_size} x {args.matmul_size} matrix multiply on the same "
                 f"threads, {matmul / 1e9:.0f} GFLOP/s")
    text = markdown(info, setup, rows, matmul)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
