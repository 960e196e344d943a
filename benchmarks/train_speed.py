"""Training speed: the seeds' PyTorch-quickstart loop (a) against fashionbench's trainer (b).

For every zoo model, in this one process and one after the other, on the same data:

  (a) the loop the seeds copied from the PyTorch quickstart: torchvision's FashionMNIST (or
      MNIST) dataset with `ToTensor()` on each PIL image, `DataLoader(batch_size, shuffle=True)`,
      `loss_fn(model(X), y)`, `backward()`, `step()`, `zero_grad()`, `torch.optim.Adam(lr=1e-3)`.
  (b) fashionbench's trainer (src/fashionbench/core/engine.py): the split resident on the device
      as uint8, gathered once per epoch into its seeded order (`shuffled`), then `train_epoch`
      (a slice + `to_input` per batch, `train_step`) with `make_optimizer`'s fused Adam lr 1e-3,
      channels_last for CNNs, and on the CPU `configure_process`'s process-wide settings (glibc
      keeps freed memory, denormals flush to zero); with --precision auto (params.yaml's
      default) CNNs in bf16 autocast where the hardware has bf16 (CUDA, CPUs with AMX).

Same initial weights (same seed), same batch size, same number of samples; a few warm-up
batches first so one-time costs (allocations, optimizer state, kernel selection) are not
timed. Every (a) runs before every (b): `configure_process` changes the whole process for good
(its allocator and floating-point mode), and the seeds' notebooks ran with the defaults. Prints images/second
for each, the ratio b/a and the peak memory of each, and writes a Markdown table (with the
machine and the date) to --output.

    python benchmarks/train_speed.py                        # all models, ~80 s on 2 CPU cores
    python benchmarks/train_speed.py --device cuda --samples 60000
    python benchmarks/train_speed.py --precision float32 --output benchmarks/RESULTS-float32.md
    python benchmarks/train_speed.py --models mlp_64 cnn_small --samples 640 --output /tmp/r.md

The data come from FASHIONBENCH_DATA_MIRROR / --data-mirror (default ../shared/data beside
the repository), verified by fashionbench's own download stage, into a temporary directory.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import datetime
import gc
import gzip
import io
import itertools
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import ToTensor

from fashionbench.core.engine import epoch_order, shuffled, train_epoch
from fashionbench.core.idx import DataError
from fashionbench.core.models import build_model, known_models, parameter_count
from fashionbench.core.recipe import make_optimizer
from fashionbench.core.runtime import (
    configure_process,
    fast_paths,
    place_model,
    precision_name,
    resolve_device,
    set_determinism,
)
from fashionbench.core.schema import PRECISIONS
from fashionbench.core.splits import prepare
from fashionbench.stages.download import MIRROR_ENV, download

REPO = Path(__file__).resolve().parents[1]
TORCHVISION_CLASS = {"fashion_mnist": datasets.FashionMNIST, "mnist": datasets.MNIST}
# fashionbench's training config for the quickstart's setup: Adam lr 1e-3, cross entropy.
# Only the keys the optimizer and the step read (a namespace: they read a config's attributes).
CFG = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.0, "nesterov": False,
       "loss": "cross_entropy", "l1": 0.0, "label_smoothing": 0.0}
SEED = 0

# -----------------------------------------------------------------------------
# data: one verified copy, seen by fashionbench as tensors and by torchvision as its raw files


def load_data(dataset: str, mirror: Path, workdir: Path):
    """(fashionbench's prepared tensors, torchvision's dataset) of the same training images."""
    os.environ[MIRROR_ENV] = str(mirror)
    raw = workdir / "raw"
    with contextlib.redirect_stdout(io.StringIO()):
        download(dataset, raw_dir=raw)  # verified against the md5s, as the pipeline does
    data = prepare(dataset, val_fraction=0.0, split_seed=0, raw_dir=raw)  # all training images
    # torchvision (download=False) looks for root/<ClassName>/raw/<name> uncompressed.
    cls = TORCHVISION_CLASS[dataset]
    tv_raw = workdir / "torchvision" / cls.__name__ / "raw"
    tv_raw.mkdir(parents=True)
    for gz in raw.glob(f"{dataset}/*.gz"):
        (tv_raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    reference = cls(root=workdir / "torchvision", train=True, download=False, transform=ToTensor())
    assert torch.equal(reference.data, data["train_images"]), "the two loaders must see the same images"
    return data, reference

# -----------------------------------------------------------------------------
# the two training loops; each returns train(steps) -> images trained on


def quickstart_loop(model, dataset, batch_size, device):
    """(a) The PyTorch quickstart's train(), as the seeds wrote it, epoch after epoch."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = (b for _ in itertools.count() for b in enumerate(loader))

    def train(steps):
        images = 0
        model.train()
        for _, (batch, (X, y)) in zip(range(steps), batches):
            X, y = X.to(device), y.to(device)
            pred = model(X)
            loss = loss_fn(pred, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if batch % 100 == 0:
                loss = loss.item()  # the quickstart prints it here
            images += len(y)
        return images
    return train


def fashionbench_loop(model, data, batch_size, device, precision):
    """(b) The epoch loop of fashionbench.core.engine.train_seed, cut at `steps` batches."""
    configure_process(device)
    model, amp, channels_last = place_model(model, device, precision)
    cfg = SimpleNamespace(**CFG, batch_size=batch_size)
    optimizer = make_optimizer(cfg, model.parameters())
    train_x, train_y = data["train_images"].to(device), data["train_labels"].to(device)
    n, shuffle = len(train_y), torch.Generator().manual_seed(SEED)
    epoch = {"images": None, "labels": None, "done": n}  # the current epoch and how far it got

    def train(steps):
        todo = steps * batch_size
        model.train()
        while todo > 0:
            if epoch["done"] == n:
                epoch.update(zip(("images", "labels"), shuffled(train_x, train_y, epoch_order(n, shuffle, device))),
                             done=0)
            start = epoch["done"]
            chunk = min(todo, n - start)
            loss_sum, _ = train_epoch(model, optimizer, epoch["images"][start:start + chunk],
                                      epoch["labels"][start:start + chunk], cfg, amp, channels_last)
            float(loss_sum)  # the trainer's one host sync per epoch
            epoch["done"] += chunk
            todo -= chunk
        return steps * batch_size
    return train

# -----------------------------------------------------------------------------
# peak memory of a block, above what was in use when it began
#
# CUDA: torch.cuda.max_memory_allocated, reset at the start (tensors only, not the cache).
# CPU: the kernel's peak-RSS counter VmHWM, reset by writing 5 to /proc/self/clear_refs
# (Linux >= 4.0). tracemalloc sees only Python objects, not tensor storage, and
# getrusage's ru_maxrss cannot be reset: a loop would hide under an earlier loop's peak.
# Freed heap is handed back to the kernel first (gc + malloc_trim) so memory the previous
# loop left in malloc's free lists neither inflates the baseline nor hides new allocations.

_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    def __init__(self, device: torch.device):
        self.device, self.mib = device, None

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
            _LIBC.malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.start = _proc_status_kib("VmRSS") * 1024
        except OSError:  # not Linux, or not allowed: no CPU figure rather than a wrong one
            self.start = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.start) / 2**20
        elif self.start is not None:
            self.mib = (_proc_status_kib("VmHWM") * 1024 - self.start) / 2**20
        return False

# -----------------------------------------------------------------------------


def measure(make_loop, name, device, steps, warmup):
    """Build the model (seeded) and its loop, warm up, time `steps` batches: (images/s, peak MiB)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    with PeakMemory(device) as memory:
        torch.manual_seed(SEED)
        model = build_model(name).to(device)
        train = make_loop(model)
        train(warmup)
        sync()
        start = time.perf_counter()
        images = train(steps)
        sync()
        seconds = time.perf_counter() - start
    del model, train
    return images / seconds, memory.mib


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, str]:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        torch.cuda.get_device_name(0) + " (unused)" if torch.cuda.is_available() else "none")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": f"{cpu_name()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable, "
               f"torch threads {torch.get_num_threads()})",
        "GPU": gpu,
        "software": f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
                    f"Python {platform.python_version()}",
        "load average at start": " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1/5/15 min; a quiet machine reads ~0)",
    }


def fmt_mib(mib) -> str:
    return "n/a" if mib is None else f"{mib:.1f}"


def markdown(info: dict, setup: str, rows: list[dict]) -> str:
    lines = ["# Training speed: the seeds' quickstart loop (a) vs fashionbench's trainer (b)", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- setup: {setup}", "",
              "| model | parameters | (a) quickstart img/s | (b) fashionbench img/s | ratio b/a "
              "| (a) peak MiB | (b) peak MiB | (b) precision |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| `{r['model']}` | {r['parameters']:,} | {r['a']:,.0f} | {r['b']:,.0f} | "
                     f"{r['b'] / r['a']:.2f} | {fmt_mib(r['mem_a'])} | {fmt_mib(r['mem_b'])} | {r['precision']} |")
    lines += ["", "Order: every (a) ran before every (b), in this one process: (b) calls fashionbench's "
              "`configure_process` (glibc `mallopt`, denormals flushed to zero), which stays in force for the rest of "
              "the process, and the seeds' notebooks ran with the defaults.",
              "", "Denormals: both loops start from fresh weights, and Adam's running averages decay into float32 "
              "denormals only after several hundred steps, so this table does not show what `flush_denormals` "
              "saves in later epochs; the pipeline's training times do.",
              "", "Peak memory: the most in use while the model was built, its data placed and its loop "
              "run (warm-up included), above what was in use just before. Both loops hold the same uint8 "
              "training set in host memory beforehand (not counted); (b)'s copy of it in each epoch's order "
              "(45 MiB for Fashion-MNIST) is counted, and on CUDA its copy on the GPU too. "
              "CPU: peak RSS (VmHWM, reset through /proc/self/clear_refs); CUDA: "
              "torch.cuda.max_memory_allocated (tensors, not the allocator's cache).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--samples", type=int, default=25600,
                        help="training images per model per loop, after the warm-up (default: 25600, "
                             "about a minute for the whole zoo on 2 CPU cores)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches before each timing (default: 10)")
    parser.add_argument("--models", nargs="+", choices=known_models(), default=known_models(), metavar="MODEL",
                        help=f"subset of the zoo (default: all of {', '.join(known_models())})")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="(b)'s params.yaml precision (default: auto, the pipeline's default; float32: exact)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for both loops (default: torch's own, one per core)")
    parser.add_argument("--deterministic", action="store_true",
                        help="torch deterministic algorithms for both loops, as params.yaml's default "
                             "deterministic: true gives the pipeline (the seeds' loop did not use them)")
    parser.add_argument("--dataset", choices=sorted(TORCHVISION_CLASS), default="fashion_mnist")
    parser.add_argument("--data-mirror", type=Path,
                        default=Path(os.environ.get(MIRROR_ENV) or REPO.parent / "shared" / "data"),
                        help=f"<dir>/<dataset>/<file>.gz (default: ${MIRROR_ENV}, else ../shared/data)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.batch_size < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        parser.error("--samples, --batch-size and --threads must be >= 1, --warmup >= 0")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.deterministic:
        set_determinism(True, device)
    info = machine(device)  # load average before we add to it
    info["command"] = "python benchmarks/train_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="train_speed-") as tmp:
        try:
            data, reference = load_data(args.dataset, args.data_mirror, Path(tmp))
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    steps = -(-args.samples // args.batch_size)
    setup = (f"device {device}, {args.dataset} ({len(reference):,} training images), batch {args.batch_size}, "
             f"{steps} timed batches ({steps * args.batch_size:,} samples) per model per loop after "
             f"{args.warmup} warm-up batches, Adam lr 1e-3, cross entropy, seed {SEED}, precision {args.precision}, "
             f"deterministic algorithms {'on' if args.deterministic else 'off'}")
    print("\n".join(f"{k}: {v}" for k, v in info.items()) + f"\nsetup: {setup}\n")

    # Every (a) first: (b) switches the process's allocator settings for good (see the top).
    loops = {"a": lambda m: quickstart_loop(m, reference, args.batch_size, device),
             "b": lambda m: fashionbench_loop(m, data, args.batch_size, device, args.precision)}
    results = {}
    for loop, make_loop in loops.items():
        for name in args.models:
            results[loop, name] = measure(make_loop, name, device, steps, args.warmup)
            print(f"  ({loop}) {name}: {results[loop, name][0]:,.0f} img/s", flush=True)
    print(f"\n{'model':<15} {'(a) img/s':>10} {'(b) img/s':>10} {'b/a':>6} {'(a) MiB':>8} {'(b) MiB':>8}  (b) precision")
    rows = []
    for name in args.models:
        (a, mem_a), (b, mem_b) = results["a", name], results["b", name]
        model = build_model(name)
        amp, _ = fast_paths(model, device, args.precision)
        rows.append({"model": name, "parameters": parameter_count(model), "precision": precision_name(amp),
                     "a": a, "b": b, "mem_a": mem_a, "mem_b": mem_b})
        print(f"{name:<15} {a:>10,.0f} {b:>10,.0f} {b / a:>6.2f} {fmt_mib(mem_a):>8} {fmt_mib(mem_b):>8}  "
              f"{rows[-1]['precision']}", flush=True)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(markdown(info, setup, rows))
    print(f"\n-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
