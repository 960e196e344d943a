"""Time to accuracy: how soon a run (resnet_fast by default) reaches 90, 92, 93, 94 and 95% Fashion-MNIST
test accuracy (99, 99.5 and 99.6% on MNIST), at what cost, and what share of the machine its training uses.

The configuration is the run's entry in params.yaml (`resnet_fast-fashion_mnist`), chosen on
the validation split before this benchmark ran; nothing here tunes it. For each seed the run
trains as `dvc repro` trains it (fashionbench's train_seed) and its test accuracy is measured
after every epoch (with the run's weight average and test-time augmentation). A threshold's
time is the training time at the end of the first epoch at which the mean test accuracy over
the seeds reaches it. Training time is the training loop's own (data order, augmentation,
forward, backward, optimizer step, weight average), as the pipeline's train_seconds: the
per-epoch evaluations are not counted. The run's per-step schedule is set for its full epoch
count, so an earlier epoch is mid-schedule: a threshold's time here is an upper bound on what
a configuration with fewer epochs would need.

Cost, in units that travel between machines: counted TFLOP (the training FLOPs of one image, as
below, times the images trained) and TFLOP-equivalents, the training seconds times this machine's
float32 large-matrix-multiply rate measured in the same run (a machine twice as fast at float32
GEMMs takes half the seconds for the same TFLOP-eq).

Machine share, measured in this process: the FLOP/s of the run's training steps (FLOPs of one
step as torch.utils.flop_counter counts them, convolutions and matrix multiplies forward and
backward, times steps per second over a stretch of real batches) divided by the FLOP/s of a
large matrix multiply (4096 x 4096 unless --matmul-size) in the training's precision (float32, or bf16
under autocast) on the same threads. A profile of those steps says where the rest of the time goes.

    python benchmarks/time_to_accuracy.py                  # trains 3 seeds (~30 min on 2 CPU cores)
    python benchmarks/time_to_accuracy.py --from-pipeline  # the seeds `dvc repro` trained (models/<run>/train.json)

Needs the prepared data (`dvc repro preprocess`). Writes a Markdown table with the machine to
--output (benchmarks/TIME_TO_ACCURACY.md).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from train_speed import machine  # this directory's other benchmark: the same machine description

from fashionbench.core.config import run_config
from fashionbench.core.engine import downscaled, set_input_statistics, train_epoch, train_seed, train_step
from fashionbench.core.models import model_from_config
from fashionbench.core.paths import STUDIES_DIR, train_summary_path
from fashionbench.core.recipe import augmentation_draws, make_ema, make_optimizer, make_scheduler
from fashionbench.core.runtime import (
    apply_fixed_threads,
    configure_process,
    bf16_native,
    place_model,
    precision_name,
    resolve_device,
    to_input,
)
from fashionbench.core.schema import RunConfig
from fashionbench.core.splits import load_run_data

THRESHOLDS = {"fashion_mnist": (0.90, 0.92, 0.93, 0.94, 0.95), "mnist": (0.99, 0.995, 0.996)}
RUN = "resnet_fast-fashion_mnist"


def matmul_flops_per_second(device: torch.device, n: int = 4096, repeats: int = 5,
                            dtype: torch.dtype = torch.float32) -> float:
    """The best of `repeats` n x n matrix multiplies in `dtype`, after one warm-up."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        (a @ b).sum().item()  # .item() is a sync point: the multiply is done
        if i:
            best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def step_flops(cfg: dict, model, optimizer, x, y, amp: bool) -> int:
    """FLOPs of one training step, forward and backward, as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        train_step(model, optimizer, x, y, cfg, amp)
    return counter.get_total_flops()


def training_throughput(cfg: dict, data: dict, device: torch.device, steps: int, warmup: int = 5) -> dict:
    """FLOP/s of the run's training loop (its augmentation, schedule and weight average included)
    over `steps` batches of the real training images, and the ops that take its time."""
    torch.manual_seed(0)
    model, amp, channels_last = place_model(model_from_config(cfg), device, cfg.precision)
    set_input_statistics(model, data["train_images"])
    optimizer = make_optimizer(cfg, model.parameters())
    bs = cfg.batch_size
    # The schedule as the run's, stretched where the run is shorter than the steps timed and
    # profiled here (OneCycleLR refuses a step past its total); the rate does not change a step's cost.
    timed = warmup + steps + min(steps, 20)
    per_epoch = max(math.ceil(len(data["train_labels"]) / bs), math.ceil(timed / cfg.epochs))
    scheduler = make_scheduler(cfg, optimizer, steps_per_epoch=per_epoch)
    ema = make_ema(cfg, model)
    images, labels = data["train_images"][:(warmup + steps) * bs], data["train_labels"][:(warmup + steps) * bs]
    draws = augmentation_draws(len(labels), cfg, torch.Generator().manual_seed(0), device)
    x = to_input(images[:bs], channels_last)
    flops = step_flops(cfg, model, optimizer, x, labels[:bs], amp)
    small = cfg.progressive_size  # progressive resizing's first epochs: fewer pixels, fewer FLOPs
    flops_small = step_flops(cfg, model, optimizer, downscaled(x, small, channels_last), labels[:bs], amp) if small else flops

    def run(first: int, count: int):
        part = slice(first * bs, (first + count) * bs)
        loss, _ = train_epoch(model, optimizer, images[part], labels[part], cfg, amp, channels_last, scheduler,
                              ema, {k: d[part] for k, d in draws.items()})
        float(loss)  # a sync point: every step is done

    run(0, warmup)
    start = time.perf_counter()
    run(warmup, steps)
    seconds = time.perf_counter() - start
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run(0, min(steps, 20))
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) or 1
    top = [(e.key, e.self_cpu_time_total / total) for e in ops[:8]]
    return {"flops_per_step": flops, "flops_per_step_small": flops_small, "batch_size": bs, "steps": steps, "seconds": seconds, "precision": precision_name(amp),
            "flops_per_second": flops * steps / seconds, "top_ops": top}


def seed_histories(cfg: dict, data: dict, device: torch.device, seeds: list[int]) -> dict[int, list[dict]]:
    """Train every seed as the pipeline does; each one's per-epoch rows (seconds, test_accuracy)."""
    return {seed: train_seed(cfg, data, seed, device)["history"] for seed in seeds}


def pipeline_histories(run: str) -> tuple[dict[int, list[dict]], dict]:
    """The per-seed histories `dvc repro` recorded for the run, and its train.json."""
    path = train_summary_path(run)
    if not path.is_file():
        raise SystemExit(f"error: {path}: not found; `dvc repro train@{run}` first, or leave out --from-pipeline")
    summary = json.loads(path.read_text())
    return {int(seed): rows for seed, rows in summary["history"].items()}, summary


def study_histories(run: str, cfg: RunConfig, trained: dict, have: set[int]) -> tuple[dict[int, list[dict]], list[str]]:
    """The run's extra seeds (not in `have`) that an extra-seeds study trained as params.yaml has it
    now (the seeds the report pools) on the pipeline's thread count, so their seconds compare; and
    the studies they came from."""
    from fashionbench.report.zoo import extra_seed_cells, trained_as_now

    found, names = {}, []
    for study, runs in extra_seed_cells(STUDIES_DIR):
        stored, entry = runs.get(run, ({}, {}))
        m = entry.get("metrics") or {}
        if (entry.get("history") and m.get("threads") is not None and m.get("threads") == trained.get("threads")
                and trained_as_now(stored, cfg.as_dict(), m.get("precision"), trained.get("precision"))):
            for seed, rows in entry["history"].items():
                if int(seed) not in found and int(seed) not in have:
                    found[int(seed)] = rows
                    names += [study["study"]] if study["study"] not in names else []
    return found, names


def time_to_accuracy(histories: dict[int, list[dict]], threshold: float) -> dict | None:
    """The first epoch at which the mean test accuracy over seeds reaches `threshold`: that epoch,
    the mean (and each seed's) training seconds to its end, the mean accuracy. None if never."""
    epochs = min(len(rows) for rows in histories.values())
    for i in range(epochs):
        accuracies = [rows[i]["test_accuracy"] for rows in histories.values()]
        if statistics.mean(accuracies) >= threshold:
            seconds = [rows[i]["seconds"] for rows in histories.values()]
            return {"epoch": i + 1, "seconds": statistics.mean(seconds), "seed_seconds": seconds,
                    "accuracy": statistics.mean(accuracies)}
    return None


def matmul_dtype(throughput: dict, device: torch.device) -> str:
    """The precision of the machine's limit for this training: its own, where the hardware has it."""
    return "bf16" if throughput["precision"] != "float32" and bf16_native(device) else "float32"


def reference_multiply(device: torch.device, n: int, precision: str) -> float:
    """FLOP/s of the machine's limit, an n x n multiply in `precision` ("float32" or "bf16").

    The machine's limit is the multiply in the precision the training computes in: bf16 runs
    twice the float32 rate on hardware that has it, so a bf16 run against float32 reads past 1."""
    return matmul_flops_per_second(device, n, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)


def costs(seconds: float, epochs: int, train_images: int, throughput: dict, float32_rate: float,
          small_epochs: int = 0) -> tuple[float, float]:
    """(counted TFLOP, TFLOP-eq) of `epochs` epochs that took `seconds` of training, the first
    `small_epochs` of them at progressive resizing's smaller size."""
    small = min(epochs, small_epochs)
    flops = throughput["flops_per_step_small"] * small + throughput["flops_per_step"] * (epochs - small)
    return flops / throughput["batch_size"] * train_images / 1e12, seconds * float32_rate / 1e12


def markdown(info: dict, setup: list[str], histories: dict[int, list[dict]], throughput: dict, matmul: float,
             matmul_size: int, reference: str, float32_rate: float, thresholds, train_images: int, title: str,
             small_epochs: int = 0) -> str:
    lines = [f"# Time to accuracy: {title}", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()] + [f"- {s}" for s in setup]
    lines += [f"- float32 {matmul_size} x {matmul_size} matrix multiply on the training's threads: "
              f"**{float32_rate / 1e9:.0f} GFLOP/s** (1 TFLOP-eq = {1e12 / float32_rate:.2f} s here)", ""]
    lines += ["| test accuracy | reached at epoch | training time (mean over seeds) | counted TFLOP | TFLOP-eq "
              "| per seed | mean accuracy then |", "|---|---:|---:|---:|---:|---|---:|"]
    for t in thresholds:
        hit = time_to_accuracy(histories, t)
        if hit is None:
            lines.append(f"| {t:.1%} | not reached | - | - | - | - | - |")
        else:
            per_seed = ", ".join(f"{s:.0f} s" for s in hit["seed_seconds"])
            counted, equivalent = costs(hit["seconds"], hit["epoch"], train_images, throughput, float32_rate,
                                        small_epochs)
            lines.append(f"| {t:.1%} | {hit['epoch']} | {hit['seconds']:.0f} s ({hit['seconds'] / 60:.1f} min) "
                         f"| {counted:.1f} | {equivalent:.1f} | {per_seed} | {hit['accuracy']:.2%} |")
    final = [rows[-1]["test_accuracy"] for rows in histories.values()]
    std = statistics.stdev(final) if len(final) > 1 else 0.0
    seconds = statistics.mean(rows[-1]["seconds"] for rows in histories.values())
    counted, equivalent = costs(seconds, min(len(rows) for rows in histories.values()), train_images, throughput,
                                float32_rate, small_epochs)
    lines += ["", f"Final test accuracy: {statistics.mean(final):.2%} ± {std:.2%} over seeds "
                  f"{', '.join(map(str, histories))} ({', '.join(f'{a:.2%}' for a in final)}), "
                  f"after {seconds:.0f} s of training: {counted:.1f} TFLOP counted, {equivalent:.1f} TFLOP-eq.", ""]
    share = throughput["flops_per_second"] / matmul
    lines += ["## Share of the machine", "",
              f"- training: {throughput['flops_per_step'] / 1e9:.2f} GFLOP per step (forward + backward), "
              f"{throughput['steps']} steps in {throughput['seconds']:.1f} s: "
              f"**{throughput['flops_per_second'] / 1e9:.0f} GFLOP/s**",
              f"- {reference} {matmul_size} x {matmul_size} matrix multiply (the training's precision where the hardware has it) "
              f"on the same threads: **{matmul / 1e9:.0f} GFLOP/s**",
              f"- share: **{share:.2g}**", "",
              "Where the training steps' time goes (self time, torch.profiler):", "",
              "| op | share of time |", "|---|---:|"]
    lines += [f"| `{name}` | {frac:.1%} |" for name, frac in throughput["top_ops"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=RUN, help="a run of params.yaml (default %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the run's seeds")
    parser.add_argument("--from-pipeline", action="store_true",
                        help="read the seeds `dvc repro` trained instead of training them again")
    parser.add_argument("--throughput-steps", type=int, default=60, help="timed batches for the machine share")
    parser.add_argument("--matmul-size", type=int, default=4096, help="n of the n x n reference multiply")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "TIME_TO_ACCURACY.md")
    args = parser.parse_args(argv)

    try:
        apply_fixed_threads()  # as `train` takes it; the header records the count
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    cfg = run_config(args.run)
    device = resolve_device(cfg.device)
    configure_process(device)
    data = load_run_data(cfg, device)
    info = machine(device)
    throughput = training_throughput(cfg, data, device, args.throughput_steps)
    reference = matmul_dtype(throughput, device)
    float32_rate = reference_multiply(device, args.matmul_size, "float32")  # the TFLOP-eq's unit
    matmul = float32_rate if reference == "float32" else reference_multiply(device, args.matmul_size, reference)
    if args.from_pipeline:
        histories, trained = pipeline_histories(args.run)
        if RunConfig.stored(trained["config"]) != cfg:
            raise SystemExit(f"error: {train_summary_path(args.run)}: trained with another configuration "
                             f"than params.yaml's {args.run}; `dvc repro train@{args.run}` first")
        source = f"{', '.join(map(str, histories))} trained by `dvc repro` (read from {train_summary_path(args.run)})"
        extra, studies = study_histories(args.run, cfg, trained, set(histories))
        if extra:  # as the report pools them
            histories.update(extra)
            source += (f", {', '.join(map(str, extra))} by `fashionbench study {', '.join(studies)}` "
                       f"on the same {trained.get('threads')} threads (read from studies/)")
    else:
        seeds = args.seeds or cfg.seeds
        histories, source = seed_histories(cfg, data, device, seeds), f"{', '.join(map(str, seeds))} trained by this command"
    options = {k: getattr(cfg, k) for k in ("model", "width", "blocks", "whiten", "epochs", "batch_size", "optimizer", "lr", "momentum",
                                   "nesterov", "weight_decay", "lr_schedule", "augment", "random_erasing",
                                   "label_smoothing", "ema", "tta", "normalize", "precision",
                                   "progressive_size", "progressive_epochs")}
    setup = [f"command: python benchmarks/time_to_accuracy.py {' '.join(argv if argv is not None else sys.argv[1:])}",
             f"run: `{args.run}` on {device}, {len(data['train_labels']):,} training images; seeds {source}",
             "configuration (params.yaml): " + ", ".join(f"{k} {v}" for k, v in options.items())]
    title = f"{cfg.model} on {'Fashion-MNIST' if cfg.dataset == 'fashion_mnist' else 'MNIST'}"
    text = markdown(info, setup, histories, throughput, matmul, args.matmul_size, reference, float32_rate,
                    THRESHOLDS[cfg.dataset], len(data["train_labels"]), title, cfg.progressive_epochs)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
