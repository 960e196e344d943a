"""Whether a valid run can train here, checked by the validate stage before DVC deletes anything:
the training split holds at least one batch, the device exists on this machine, the model can be
built and trained in this machine's memory. Validation runs where training will run.

Each check raises ConfigError with one line naming the key (the run's own, or the default it
inherits) and what was expected.
"""
from __future__ import annotations

import os
import re

from fashionbench.core.idx import TRAINING_IMAGES

MAX_LAYERS = 1000  # repeated layers (an MLP's depth, resnet_fast's blocks): far past any that trains here
MAX_WIDTH = 1 << 20
BYTES_PER_PARAMETER = 16  # float32 weights, gradients and two optimizer moments, at the least


class Infeasible(ValueError):
    """A value this machine cannot train; `key` is the option to blame."""

    def __init__(self, message: str, key: str = "model"):
        super().__init__(message)
        self.key = key


def training_images(dataset: str, val_fraction: float, max_train: int | None) -> int:
    """How many images a run trains on: the dataset's training images (or the smoke cap), less the
    validation fraction, rounded as core.splits.split_train_val rounds it."""
    n = TRAINING_IMAGES[dataset] if max_train is None else min(max_train, TRAINING_IMAGES[dataset])
    return n - int(round(n * val_fraction))


def check_split(dataset: str, val_fraction: float, max_train: int | None, batch_size: int,
                shared_batch_size: int | None = None) -> None:
    """At least one batch of training images. Infeasible.key is "batch_size" when a run's own batch
    (larger than the shared default `shared_batch_size`) is what does not fit, "preprocess.max_train"
    when the smoke cap alone is to blame, else "val_fraction"."""
    n = training_images(dataset, val_fraction, max_train)
    if n >= batch_size:
        return
    if shared_batch_size is not None and shared_batch_size <= n:
        raise Infeasible(f"{batch_size} is more than the {n} training images of {dataset} it would batch",
                         "batch_size")
    capped = max_train is not None and training_images(dataset, val_fraction, None) >= batch_size
    key, value = ("preprocess.max_train", max_train) if capped else ("val_fraction", f"{val_fraction:g}")
    raise Infeasible(f"{value} leaves {n} training images of {dataset}, fewer than one batch "
                     f"(batch_size {batch_size})", key)


def check_device(name: str) -> None:
    """`cuda`, `cuda:N` and `mps` only where this machine has them (auto and cpu always)."""
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise Infeasible(f"{name!r} requested but this machine has no CUDA device (use auto or cpu)")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise Infeasible(f"{name!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif name == "mps" and not torch.backends.mps.is_available():
        raise Infeasible("'mps' requested but this machine has no MPS device (use auto or cpu)")


def memory_bytes(device: str) -> int | None:
    """The memory a training on `device` has: the GPU's, or this machine's RAM."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        index = int(device.split(":")[1]) if re.fullmatch(r"cuda:\d+", device) else 0
        return torch.cuda.get_device_properties(index).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_size(model: str, options: dict, device: str) -> None:
    """The model's layers are few enough to build and its parameters fit this machine's memory."""
    import torch

    from fashionbench.core.models import build_model

    if (options.get("depth") or 0) > MAX_LAYERS:
        raise Infeasible(f"{options['depth']} layers, expected at most {MAX_LAYERS}", "depth")
    if sum(options.get("blocks") or ()) > MAX_LAYERS:
        raise Infeasible(f"{sum(options['blocks'])} residual blocks, expected at most {MAX_LAYERS}", "blocks")
    if (options.get("width") or 0) > MAX_WIDTH:
        raise Infeasible(f"{options['width']}, expected at most {MAX_WIDTH}", "width")
    with torch.device("meta"):  # the layers' shapes, no memory
        parameters = sum(p.numel() for p in build_model(model, **options).parameters())
    memory = memory_bytes(device)
    if memory is not None and parameters * BYTES_PER_PARAMETER > memory:
        raise Infeasible(f"model {model} would have {parameters:,} parameters, which need at least "
                         f"{parameters * BYTES_PER_PARAMETER / 2**30:,.0f} GiB to train; this machine has "
                         f"{memory / 2**30:,.0f} GiB", next((k for k in ("width", "depth", "blocks") if k in options), "model"))


def check_run(cfg, preprocess, shared_batch_size: int | None = None) -> None:
    """Every check on a validated run's config (a RunConfig); `preprocess` (a Preprocess) adds the
    split's; `shared_batch_size` is the default batch size where the run sets its own."""
    from fashionbench.core.models import RUN_OPTIONS

    try:
        check_device(cfg.device)
    except Infeasible as exc:
        raise Infeasible(str(exc), "device") from None
    options = {k: getattr(cfg, k) for k in RUN_OPTIONS if getattr(cfg, k) is not None}
    check_model_size(cfg.model, options, cfg.device)
    if preprocess is not None:
        own = cfg.val_fraction is not None  # the run re-splits every training image; else the prepared split
        try:
            check_split(cfg.dataset, cfg.val_fraction if own else preprocess.val_fraction, preprocess.max_train,
                        cfg.batch_size, shared_batch_size)
        except Infeasible as exc:
            raise Infeasible(str(exc), exc.key if exc.key.startswith("preprocess.") or exc.key == "batch_size" or own
                             else "preprocess.val_fraction") from None
