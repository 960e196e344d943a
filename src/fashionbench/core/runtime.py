"""Process-wide CPU settings, made once by each stage's entry point (never by library calls).

- `keep_freed_memory`: glibc keeps freed tensor memory for reuse instead of unmapping it.
- `flush_denormals`: float32 denormals become zero on every thread (x86 FTZ/DAZ).
- `training_threads`: the number of threads a training or an evaluation uses, fixed for
  its whole run (a different count sums floats in another order).

What each one buys on the machines we measured is in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from pathlib import Path

import torch
from torch import nn

from fashionbench.core.models import uses_convolutions
from fashionbench.core.schema import RunConfig

THREADS_ENV = "FASHIONBENCH_THREADS"


def configure_process(device: torch.device) -> None:
    """What train, evaluate and the benchmark call once, before any work (no-op on a GPU)."""
    if device.type == "cpu":
        keep_freed_memory()
        flush_denormals()


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks in the heap for reuse (as jemalloc or tcmalloc would).

    glibc serves each allocation over 128 KiB with a fresh mmap and unmaps it on free, so a
    CNN's activations are page-faulted in again at every step. Raising the mmap threshold to
    its maximum (32 MiB) and the trim threshold keeps them. Results are unchanged; a no-op
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
    """Treat float32 denormals (below 1.2e-38) as zero on every CPU thread.

    Adam's running averages for weights that rarely see a non-zero input (border pixels)
    decay into the denormal range, where x86 arithmetic takes slow microcode assists.
    Flushing changes only values below 1.2e-38, far under any weight's rounding step.

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


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def fixed_threads() -> int | None:
    """FASHIONBENCH_THREADS as a number of threads, None when unset; ValueError names a bad value."""
    value = os.environ.get(THREADS_ENV, "")
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENV}={value}: expected a positive integer (threads per training)")
    return int(value)


def training_threads() -> int:
    """The threads one training uses from start to end: FASHIONBENCH_THREADS, else every core
    this process may run on. Never the number of trainings that happen to be running: a
    different count sums floats in another order, and the same params and seed must give the
    same bytes whatever else the machine does. Trainings that share the machine
    (`dvc queue start -j N`, `fashionbench study --jobs N`) get their share from a count set
    before they start (FASHIONBENCH_THREADS=cores/N), which train.json records."""
    return fixed_threads() or available_cores()


def apply_fixed_threads() -> int | None:
    """Set torch's threads to FASHIONBENCH_THREADS when it is set (a benchmark's fixed count, as
    `train` takes it); the count, or None when unset (torch's threads left as they are)."""
    threads = fixed_threads()
    if threads:
        torch.set_num_threads(threads)
    return threads


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
    warn_only = device.type == "cuda"
    if "torch._inductor" in sys.modules:  # torch.compile is loaded: its own flag must agree
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    else:
        # The flag itself, as torch.use_deterministic_algorithms sets it: that function also imports
        # torch._inductor (torch.compile, which fashionbench never calls) to set the compiler's copy
        # of the flag, 1.2-1.4 CPU-seconds in every training process.
        torch._C._set_deterministic_algorithms(enabled, warn_only=warn_only)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not enabled


def to_input(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1], on the images' device."""
    x = images.unsqueeze(1).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def fast_paths(model: nn.Module, device: torch.device, precision: str = "auto") -> tuple[bool, bool]:
    """(bf16 autocast, channels_last) for this model on this device.

    Convolutions run in NHWC (channels_last) layout on both devices: oneDNN's CPU kernels
    and cuDNN's tensor-core kernels are fastest there, and max pooling vectorises over
    channels. precision 'auto' also runs convolutional models in bf16 autocast where the
    hardware multiplies bf16 natively: a CUDA GPU with bf16, or a CPU with AVX-512 BF16 or AMX. MLPs stay
    float32 under 'auto' (bf16 gains them little: benchmarks/RESULTS.md).
    'float32' is exact everywhere; 'bf16' forces autocast for every model.
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
        # AVX-512 BF16 (AMD EPYC from Zen 4, Intel from Cooper Lake) or AMX (Intel from Sapphire
        # Rapids): oneDNN's bf16 kernels; what PyTorch's own tests check.
        checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
        return any(check is not None and check() for check in checks)
    return False


def eval_batch_size(cfg: RunConfig, device: torch.device) -> int:
    """params' eval_batch_size, or when null: 256 on the CPU (a batch's activations stay in
    cache and under glibc's mmap threshold), 4096 on a GPU."""
    if cfg.eval_batch_size:
        return cfg.eval_batch_size
    return 4096 if device.type == "cuda" else 256
