"""The training loop: data resident on the device, shuffled per epoch by a seeded generator.

No per-sample Dataset/DataLoader: the split lives on the device as a uint8 tensor, each
epoch gathers it once into its shuffled order, a batch is a slice of that plus a scale to
[0, 1] (what the seeds' `ToTensor()` gives), and loss/accuracy accumulate on the device and
are read once per epoch (no host sync per step).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import os
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fashionbench.models import model_from_config, uses_convolutions


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device: {name!r} requested but CUDA is not available (use auto or cpu)")
    return torch.device(name)


def set_determinism(enabled: bool, device: torch.device) -> None:
    """Deterministic mode on request (torchvision references' --use-deterministic-algorithms).

    On the CPU every op we use has a deterministic kernel, so this is exact. On CUDA an op
    without one warns instead of failing: a long GPU run should not die for it.
    """
    if enabled and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not enabled


def speed_up_cpu(device: torch.device) -> None:
    """The process-wide CPU settings training and evaluation run with (no-op on a GPU)."""
    if device.type == "cpu":
        keep_freed_memory()
        flush_denormals()


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc keep freed tensor memory for reuse instead of handing it back to the kernel.

    glibc serves each allocation over 128 KiB with a fresh mmap and unmaps it on free, so a
    CNN's activations (6 MiB a layer for cnn_baseline at batch 64) are page-faulted in again
    at every step: 4,500 page faults a step, 30% of cnn_baseline's step time on this
    2-core VM. Raising the mmap threshold to its maximum (32 MiB) and the trim threshold keeps
    freed blocks in the heap, as jemalloc or tcmalloc would. Results are unchanged; a no-op
    where the C library has no mallopt. Returns whether the settings took.
    """
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name) if libc_name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20) and libc.mallopt(m_trim_threshold, 256 * 2**20))


@functools.cache
def flush_denormals() -> bool:
    """Treat float32 denormals (below 1.2e-38) as zero on every CPU thread (x86 FTZ/DAZ).

    Adam's running averages for weights that rarely see a non-zero input (border pixels)
    decay geometrically into the denormal range, where x86 arithmetic takes microcode
    assists: from the second epoch on, mlp_512 trains at 19k instead of 29k images/s and
    cnn_dropout at 3.0k instead of 3.8k on this 2-core VM. Flushing changes only values
    below 1.2e-38, far under any weight's rounding step.

    torch.set_flush_denormal sets the calling thread alone, so once OpenMP's worker threads
    exist (any parallel op starts them) they get the caller's floating-point environment
    through one parallel region that runs fesetenv; threads started later inherit it.
    Returns whether every thread is set (False where the CPU or C library cannot).
    """
    if not torch.set_flush_denormal(True):
        return False
    libm_name = ctypes.util.find_library("m")
    gomp_path = next((line.split()[-1] for line in _mapped_files() if "libgomp" in line), None)
    if libm_name is None or gomp_path is None:
        return False
    libm, gomp = ctypes.CDLL(libm_name), ctypes.CDLL(gomp_path)
    env = ctypes.create_string_buffer(64)  # a fenv_t (32 bytes on x86-64 glibc), with room
    if libm.fegetenv(env) != 0:
        return False
    gomp.GOMP_parallel(libm.fesetenv, env, 0, 0)  # fn(data) on every thread of the team
    return True


def _mapped_files() -> list[str]:
    """/proc/self/maps lines: the shared libraries this process has loaded (Linux)."""
    try:
        return Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []


def to_input(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1], on the images' device."""
    x = images.unsqueeze(1).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def fast_paths(model: nn.Module, device: torch.device, precision: str = "auto") -> tuple[bool, bool]:
    """(bf16 autocast, channels_last) for this model on this device.

    Convolutions run in NHWC (channels_last) layout on both devices: oneDNN's CPU kernels
    and cuDNN's tensor-core kernels are fastest there, and max pooling vectorises over
    channels. precision 'auto' also runs convolutional models in bf16 autocast where the
    hardware multiplies bf16 natively: a CUDA GPU with bf16, or a CPU with AMX (1.5-1.8x
    for seed 004's CNNs on this VM). MLPs stay float32 under 'auto' (bf16 gains them ~5%
    here). 'float32' is exact everywhere; 'bf16' forces autocast for every model.
    """
    conv = uses_convolutions(model)
    if precision == "auto":
        return conv and bf16_native(device), conv
    return precision == "bf16", conv


def place_model(model: nn.Module, device: torch.device, precision: str) -> tuple[nn.Module, bool, bool]:
    """The model moved to `device` in the layout of its fast path: (model, bf16 autocast, channels_last)."""
    amp, channels_last = fast_paths(model, device, precision)
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    return model.to(device, memory_format=memory_format), amp, channels_last


def precision_name(amp: bool) -> str:
    """What a run computed in, as train.json, MLflow and the benchmark report it."""
    return "bf16 autocast" if amp else "float32"


def bf16_native(device: torch.device) -> bool:
    """Whether this device multiplies bf16 in hardware (autocast would otherwise emulate it)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # what PyTorch's own tests check
        return bool(amx and amx())
    return False


def eval_batch_size(cfg: dict, device: torch.device) -> int:
    """params' eval_batch_size, or when null: 256 on the CPU (a batch's activations stay in
    cache and under glibc's mmap threshold: twice as fast as 2000 for cnn_baseline), 4096 on a GPU."""
    if cfg.get("eval_batch_size"):
        return cfg["eval_batch_size"]
    return 4096 if device.type == "cuda" else 256


def compute_loss(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean loss over the batch. nll = log-softmax head + NLL (seed 004); mse/bce on one-hot targets."""
    if name == "cross_entropy":
        return F.cross_entropy(logits, labels)
    if name == "nll":
        return F.nll_loss(F.log_softmax(logits, dim=1), labels)
    one_hot = F.one_hot(labels, 10).to(logits.dtype)
    if name == "mse":
        return F.mse_loss(torch.softmax(logits, dim=1), one_hot)
    if name == "bce":
        return F.binary_cross_entropy_with_logits(logits, one_hot)
    raise ValueError(f"unknown loss {name!r}")


def make_optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    """The optimizer, fused (one kernel for all parameters) where PyTorch has a fused version.

    On this 2-core CPU the default single-tensor Adam costs as much as the backward pass
    of a 512-wide MLP; the fused one is 3-5x cheaper and computes the same update.
    """
    name, lr, wd = cfg["optimizer"], cfg["lr"], cfg["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"], nesterov=cfg["nesterov"],
                               weight_decay=wd, fused=True)
    if name == "rmsprop":  # no fused RMSprop in PyTorch: the multi-tensor one
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg["momentum"], weight_decay=wd, foreach=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, fused=True)
    raise ValueError(f"unknown optimizer {name!r}")


def l1_penalty(model: nn.Module) -> torch.Tensor:
    return sum(p.abs().sum() for name, p in model.named_parameters() if name.endswith("weight"))


def epoch_order(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """This epoch's sample order: drawn on the CPU so every device sees the same batches."""
    return torch.randperm(n, generator=generator).to(device)


def shuffled(images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The split in this epoch's order: one gather per epoch, so each batch is a contiguous
    slice (64 random rows gathered per step cost as much as a small model's forward pass)."""
    return images.index_select(0, order), labels.index_select(0, order)


def clear_grads(optimizer: torch.optim.Optimizer) -> None:
    """optimizer.zero_grad(set_to_none=True) without its per-call bookkeeping (profiler
    hooks, grouping by device), which costs 5-8% of a small MLP's step on this CPU."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None


def train_step(model, optimizer, x, y, cfg, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step; returns (summed loss, correct count) as device tensors."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    loss = compute_loss(cfg["loss"], logits.float(), y)
    objective = loss + cfg["l1"] * l1_penalty(model) if cfg["l1"] else loss
    clear_grads(optimizer)
    objective.backward()
    optimizer.step()
    return loss.detach() * len(y), (logits.detach().argmax(1) == y).sum()


def train_epoch(model, optimizer, images, labels, cfg, amp=False, channels_last=False):
    """One pass over (already shuffled) uint8 images in batches of cfg['batch_size'].

    Returns (summed loss, correct count) as device tensors: nothing here waits for the device.
    """
    bs = cfg["batch_size"]
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    for i in range(0, len(labels), bs):
        x = to_input(images[i:i + bs], channels_last)
        batch_loss, batch_correct = train_step(model, optimizer, x, labels[i:i + bs], cfg, amp)
        loss_sum += batch_loss
        correct += batch_correct
    return loss_sum, correct


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int, precision: str = "auto") -> torch.Tensor:
    """Logits for uint8 images (N, 28, 28), in batches, model in eval mode, at the precision
    it was trained at. Fastest for a model `place_model` put on the images' device."""
    speed_up_cpu(images.device)
    was_training = model.training
    model.eval()
    amp, channels_last = fast_paths(model, images.device, precision)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        out = [model(to_input(images[i:i + batch_size], channels_last)).float()
               for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10, device=images.device)


def evaluate_split(model, images, labels, loss_name: str, batch_size: int, precision: str) -> dict[str, float]:
    logits = predict(model, images, batch_size, precision)
    if len(labels) == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    loss = compute_loss(loss_name, logits.float(), labels)
    acc = (logits.argmax(1) == labels).float().mean()
    return {"loss": float(loss), "accuracy": float(acc)}


def train_seed(cfg: dict, data: dict[str, torch.Tensor], seed: int, device: torch.device,
               on_epoch: Callable[[dict], None] | None = None, progress: bool = True) -> dict:
    """Train one model with one seed. Returns {model, history, status, diverged_epoch, seconds, precision}.

    A loss that becomes NaN or infinite ends training early with status 'diverged':
    a result to record (seed 003's Adam at lr 0.1), not a crash.
    """
    from tqdm import tqdm

    speed_up_cpu(device)
    torch.manual_seed(seed)  # initial weights and dropout masks
    model, amp, channels_last = place_model(model_from_config(cfg), device, cfg["precision"])
    optimizer = make_optimizer(cfg, model.parameters())
    shuffle = torch.Generator().manual_seed(seed)
    train_x, train_y = data["train_images"], data["train_labels"]
    n, eval_bs = len(train_y), eval_batch_size(cfg, device)

    history, status, diverged_epoch = [], "completed", None
    start = time.perf_counter()
    bar = tqdm(range(1, cfg["epochs"] + 1), desc=f"{cfg['name']} seed {seed}", unit="epoch",
               disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        model.train()
        images, labels = shuffled(train_x, train_y, epoch_order(n, shuffle, device))
        loss_sum, correct = train_epoch(model, optimizer, images, labels, cfg, amp, channels_last)
        train_loss = float(loss_sum) / n  # the one host sync of the epoch
        row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": int(correct) / n}
        if not math.isfinite(train_loss):
            status, diverged_epoch = "diverged", epoch
        val = evaluate_split(model, data["val_images"], data["val_labels"], cfg["loss"], eval_bs, cfg["precision"])
        test = evaluate_split(model, data["test_images"], data["test_labels"], cfg["loss"], eval_bs, cfg["precision"])
        row.update(val_loss=val["loss"], val_accuracy=val["accuracy"],
                   test_loss=test["loss"], test_accuracy=test["accuracy"],
                   seconds=time.perf_counter() - start)
        history.append(row)
        bar.set_postfix(loss=f"{train_loss:.4f}", val_acc=f"{val['accuracy']:.4f}", test_acc=f"{test['accuracy']:.4f}")
        if on_epoch:
            on_epoch(row)
        if status == "diverged":
            bar.write(f"{cfg['name']} seed {seed}: loss is {train_loss} at epoch {epoch}: diverged, stopping")
            break
    bar.close()
    return {"model": model, "history": history, "status": status, "diverged_epoch": diverged_epoch,
            "seconds": time.perf_counter() - start, "precision": precision_name(amp)}
