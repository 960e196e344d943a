"""The training loop: data resident on the device, shuffled per epoch by a seeded generator
(unless `shuffle: false`).

No per-sample Dataset/DataLoader: the split lives on the device as a uint8 tensor, each
epoch gathers it once into its shuffled order, a batch is a slice of that plus a scale to
[0, 1] (what the seeds' `ToTensor()` gives), and loss/accuracy accumulate on the device and
are read once per epoch (no host sync per step).
"""
from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fashionbench.models import ViewAveraged, model_from_config, tta_mode, uses_convolutions


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


def to_input(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1], on the images' device."""
    x = images.unsqueeze(1).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def fast_paths(model: nn.Module, device: torch.device, precision: str = "auto") -> tuple[bool, bool]:
    """(bf16 autocast, channels_last) for this model on this device.

    Convolutions run in NHWC (channels_last) layout on both devices: oneDNN's CPU kernels
    and cuDNN's tensor-core kernels are fastest there, and max pooling vectorises over
    channels. precision 'auto' also runs convolutional models in bf16 autocast where the
    hardware multiplies bf16 natively: a CUDA GPU with bf16, or a CPU with AMX. MLPs stay
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
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # what PyTorch's own tests check
        return bool(amx and amx())
    return False


def eval_batch_size(cfg: dict, device: torch.device) -> int:
    """params' eval_batch_size, or when null: 256 on the CPU (a batch's activations stay in
    cache and under glibc's mmap threshold), 4096 on a GPU."""
    if cfg.get("eval_batch_size"):
        return cfg["eval_batch_size"]
    return 4096 if device.type == "cuda" else 256


def compute_loss(name: str, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean loss over the batch. nll = log-softmax head + NLL (seed 004); mse/bce on one-hot targets.
    `label_smoothing` (cross_entropy only) is for training; evaluation reports the plain loss."""
    if name == "cross_entropy":
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
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

    On a CPU the default single-tensor Adam costs as much as the backward pass of a
    512-wide MLP; the fused one computes the same update in one pass.
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


def make_scheduler(cfg: dict, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The per-step learning-rate schedule, or None for a constant rate.

    onecycle: PyTorch's OneCycleLR peaking at `lr` (the rate only: momentum and Adam's beta1 keep
    their values). cosine: linear warm-up over `warmup_epochs` (cut to the run), then cosine to 0.
    """
    total = max(1, cfg["epochs"] * steps_per_epoch)
    schedule = cfg.get("lr_schedule", "constant")
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg["lr"], total_steps=total, cycle_momentum=False)
    if schedule == "cosine":
        warm = min(cfg.get("warmup_epochs", 0) * steps_per_epoch, total - 1)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


class WeightEMA:
    """An exponential moving average of a model's weights and batch-norm statistics.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (TensorFlow's
    ExponentialMovingAverage with num_updates, timm's ModelEma): with a fixed decay a short
    run's average still holds the random initial weights (0.99 ** 210 = 12% of them after one
    epoch here), and a batch-norm net evaluated from that average scored chance on
    Fashion-MNIST. The first update copies the weights. The update count is a Python int, not a
    device tensor as in torch's AveragedModel: reading it back would be a host sync every step.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.decay, self.updates = decay, 0

    @staticmethod
    def _tensors(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(floating-point weights and buffers, the rest: batch norm's num_batches_tracked)."""
        tensors = list(model.parameters()) + list(model.buffers())
        return [t for t in tensors if t.is_floating_point()], [t for t in tensors if not t.is_floating_point()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        (averaged, averaged_counts), (current, current_counts) = self._tensors(self.module), self._tensors(model)
        weight = 1.0 if self.updates == 0 else 1 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(averaged, [t.detach() for t in current], weight)
        for a, c in zip(averaged_counts, current_counts):
            a.copy_(c)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]


def make_ema(cfg: dict, model: nn.Module) -> WeightEMA | None:
    """The run's weight average (params' ema is its decay), or None."""
    return WeightEMA(model, cfg["ema"]) if cfg.get("ema") else None


CROP_PADDING = 2


def augmentation_draws(n: int, cfg: dict, generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """An epoch's random numbers for augment_batch, one row per image: drawn at once from
    `generator` on the CPU (every device sees the same augmentations) and copied to the device
    once per epoch, not once per batch."""
    draws = {}
    if cfg.get("augment", "none") != "none":
        draws["offsets"] = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=generator)
        if cfg["augment"] == "crop_flip":
            draws["flip"] = torch.rand(n, 1, generator=generator) < 0.5
    if cfg.get("random_erasing", 0.0) > 0:
        draws["erasing"] = torch.rand(n, 5, generator=generator)
    return {name: d.to(device) for name, d in draws.items()}


def augment_batch(images: torch.Tensor, cfg: dict, draws: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-image augmentation of a uint8 batch (N, 28, 28) on its device, no per-sample loop:
    a random 28x28 crop of the image zero-padded by 2 (and a horizontal flip for crop_flip) is
    one gather; random erasing zeroes a random rectangle (2-33% of the image, aspect 0.3-3.3, as
    torchvision's RandomErasing) in each image with probability `random_erasing`. `draws` are
    the batch's rows of augmentation_draws."""
    n, h, w = images.shape
    device = images.device
    if "offsets" in draws:
        p = CROP_PADDING
        padded = F.pad(images, (p, p, p, p))
        offsets = draws["offsets"]
        rows = offsets[:, :1] + torch.arange(h, device=device)             # (N, 28)
        cols = offsets[:, 1:] + torch.arange(w, device=device)
        if "flip" in draws:
            cols = torch.where(draws["flip"], cols.flip(1), cols)
        images = padded[torch.arange(n, device=device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if "erasing" in draws:
        u = draws["erasing"]
        area = (0.02 + u[:, 0] * 0.31) * h * w
        aspect = torch.exp(math.log(0.3) + u[:, 1] * (math.log(3.3) - math.log(0.3)))
        eh = (area * aspect).sqrt().clamp(max=h).long()
        ew = (area / aspect).sqrt().clamp(max=w).long()
        top = (u[:, 2] * (h - eh + 1)).long()
        left = (u[:, 3] * (w - ew + 1)).long()
        r = torch.arange(h, device=device)[None, :, None]
        c = torch.arange(w, device=device)[None, None, :]
        inside = ((r >= top[:, None, None]) & (r < (top + eh)[:, None, None])
                  & (c >= left[:, None, None]) & (c < (left + ew)[:, None, None]))
        erase = inside & (u[:, 4] < cfg["random_erasing"])[:, None, None]
        images = images.masked_fill(erase, 0)
    return images


def l1_penalty(model: nn.Module) -> torch.Tensor:
    return sum(p.abs().sum() for name, p in model.named_parameters() if name.endswith("weight"))


def epoch_order(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """This epoch's sample order: drawn on the CPU so every device sees the same batches."""
    return torch.randperm(n, generator=generator).to(device)


def shuffled(images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The split in this epoch's order: one gather per epoch, so each batch is a contiguous
    slice (a random gather per step costs as much as a small model's forward pass)."""
    return images.index_select(0, order), labels.index_select(0, order)


def clear_grads(optimizer: torch.optim.Optimizer) -> None:
    """optimizer.zero_grad(set_to_none=True) without its per-call bookkeeping (profiler
    hooks, grouping by device), a visible share of a small MLP's step on a CPU."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None


def train_step(model, optimizer, x, y, cfg, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step; returns (summed loss, correct count) as device tensors."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    loss = compute_loss(cfg["loss"], logits.float(), y, cfg.get("label_smoothing", 0.0))
    objective = loss + cfg["l1"] * l1_penalty(model) if cfg["l1"] else loss
    clear_grads(optimizer)
    objective.backward()
    optimizer.step()
    return loss.detach() * len(y), (logits.detach().argmax(1) == y).sum()


def train_epoch(model, optimizer, images, labels, cfg, amp=False, channels_last=False,
                scheduler=None, ema=None, draws: dict[str, torch.Tensor] | None = None):
    """One pass over (already shuffled) uint8 images in batches of cfg['batch_size'], with the
    run's augmentation (`draws`, in the images' order), per-step schedule and weight average
    where it has them.

    Returns (summed loss, correct count) as device tensors: nothing here waits for the device.
    """
    bs = cfg["batch_size"]
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    for i in range(0, len(labels), bs):
        batch = images[i:i + bs]
        if draws is not None:
            batch = augment_batch(batch, cfg, {name: d[i:i + bs] for name, d in draws.items()})
        x = to_input(batch, channels_last)
        batch_loss, batch_correct = train_step(model, optimizer, x, labels[i:i + bs], cfg, amp)
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        loss_sum += batch_loss
        correct += batch_correct
    return loss_sum, correct


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int, precision: str = "auto",
            tta: str = "none") -> torch.Tensor:
    """Logits for uint8 images (N, 28, 28), in batches, model in eval mode, at the precision
    it was trained at. Fastest for a model `place_model` put on the images' device. With
    `tta` (a mode of params' tta), the mean of the logits over its views of each image."""
    was_training = model.training
    model.eval()
    amp, channels_last = fast_paths(model, images.device, precision)
    net = ViewAveraged(model, tta) if tta_mode(tta) != "none" else model
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        out = [net(to_input(images[i:i + batch_size], channels_last)).float()
               for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10, device=images.device)


def evaluate_split(model, images, labels, loss_name: str, batch_size: int, precision: str,
                   tta: str = "none") -> dict[str, float]:
    logits = predict(model, images, batch_size, precision, tta)
    if len(labels) == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    loss = compute_loss(loss_name, logits.float(), labels)
    acc = (logits.argmax(1) == labels).float().mean()
    return {"loss": float(loss), "accuracy": float(acc)}


def save_state(path: Path, model, optimizer, shuffle: torch.Generator, progress: dict, extras: dict | None = None) -> None:
    """Everything the next epoch depends on, so a resumed run continues bit for bit:
    weights, optimizer moments and step counts, the random generators (batch order;
    dropout; augmentation), the schedule and weight average where the run has them, and
    the history so far. Written atomically: a kill mid-write keeps the old one."""
    from fashionbench.outputs import atomic_path

    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "shuffle_rng": shuffle.get_state(), "torch_rng": torch.get_rng_state(), **progress}
    for name, obj in (extras or {}).items():
        if obj is not None:
            state[name] = obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, model, optimizer, shuffle: torch.Generator, extras: dict | None = None) -> dict:
    """Restore what save_state wrote; returns its progress (history, status, seconds, finished)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state.pop("model"))
    optimizer.load_state_dict(state.pop("optimizer"))
    shuffle.set_state(state.pop("shuffle_rng"))
    for name, obj in (extras or {}).items():
        if obj is not None:
            saved = state.pop(name)
            obj.set_state(saved) if isinstance(obj, torch.Generator) else obj.load_state_dict(saved)
    torch.set_rng_state(state.pop("torch_rng"))
    cuda_rng = state.pop("cuda_rng", None)
    if cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_rng)
    return state


def set_input_statistics(model: nn.Module, train_images: torch.Tensor) -> None:
    """normalize: standard: the Standardize layer gets the training set's pixel mean and std (in [0, 1] units)."""
    from fashionbench.models import Standardize

    pixels = train_images.float().div_(255.0)
    for layer in model.modules():
        if isinstance(layer, Standardize):
            layer.mean.fill_(pixels.mean())
            layer.std.fill_(pixels.std())


def train_seed(cfg: dict, data: dict[str, torch.Tensor], seed: int, device: torch.device,
               on_epoch: Callable[[dict], None] | None = None, progress: bool = True,
               state_path: Path | None = None, on_epoch_start: Callable[[], None] | None = None) -> dict:
    """Train one model with one seed. Returns {model, history, status, diverged_epoch, seconds,
    precision, resumed_at_epoch}.

    A loss that becomes NaN or infinite ends training early with status 'diverged':
    a result to record (seed 003's Adam at lr 0.1), not a crash. With `state_path`, the
    state is saved after every epoch and, when the file exists, training resumes from it
    (the caller decides whether a state is still valid for this config and data).
    `on_epoch` gets every epoch's row, the restored ones first.
    """
    from tqdm import tqdm

    torch.manual_seed(seed)  # initial weights and dropout masks
    model, amp, channels_last = place_model(model_from_config(cfg), device, cfg["precision"])
    train_x, train_y = data["train_images"], data["train_labels"]
    if cfg.get("normalize") == "standard":
        set_input_statistics(model, train_x)
    optimizer = make_optimizer(cfg, model.parameters())
    shuffle = torch.Generator().manual_seed(seed)
    n, eval_bs = len(train_y), eval_batch_size(cfg, device)
    scheduler = make_scheduler(cfg, optimizer, steps_per_epoch=math.ceil(n / cfg["batch_size"]))
    ema = make_ema(cfg, model)
    augmenting = cfg.get("augment", "none") != "none" or cfg.get("random_erasing", 0.0) > 0
    # Its own stream: the batch order and dropout masks stay those of a run without augmentation.
    augment_rng = torch.Generator().manual_seed(seed + (1 << 32)) if augmenting else None
    extras = {"scheduler": scheduler, "ema": ema, "augment_rng": augment_rng}
    evaluated = lambda: ema.module if ema is not None else model  # noqa: E731 - what is evaluated and saved
    tta = cfg.get("tta", "none")
    has_val = len(data["val_labels"]) > 0  # val_fraction 0: no validation curves

    done = {"history": [], "status": "completed", "diverged_epoch": None, "seconds": 0.0, "finished": False}
    resumed_at = None
    if state_path is not None and Path(state_path).is_file():
        done = load_state(state_path, model, optimizer, shuffle, extras)
        resumed_at = len(done["history"]) + 1
    history, status, diverged_epoch = done["history"], done["status"], done["diverged_epoch"]
    for row in history:
        if on_epoch:
            on_epoch(row)

    seconds = done["seconds"]  # training only: the per-epoch evaluations are not counted
    epochs = range(len(history) + 1, cfg["epochs"] + 1) if not done["finished"] else range(0)
    bar = tqdm(epochs, desc=f"{cfg['name']} seed {seed}", unit="epoch", initial=len(history), total=cfg["epochs"],
               disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        if on_epoch_start:
            on_epoch_start()
        start = time.perf_counter()
        model.train()
        if cfg["shuffle"]:
            images, labels = shuffled(train_x, train_y, epoch_order(n, shuffle, device))
        else:  # the same order every epoch; the generator is not drawn from
            images, labels = train_x, train_y
        draws = augmentation_draws(n, cfg, augment_rng, device) if augment_rng is not None else None
        loss_sum, correct = train_epoch(model, optimizer, images, labels, cfg, amp, channels_last,
                                        scheduler, ema, draws)
        train_loss = float(loss_sum) / n  # the one host sync of the epoch: the device is done
        seconds += time.perf_counter() - start
        row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": int(correct) / n}
        if not math.isfinite(train_loss):
            status, diverged_epoch = "diverged", epoch
        if has_val:
            val = evaluate_split(evaluated(), data["val_images"], data["val_labels"], cfg["loss"], eval_bs,
                                 cfg["precision"], tta)
            row.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        test = evaluate_split(evaluated(), data["test_images"], data["test_labels"], cfg["loss"], eval_bs,
                              cfg["precision"], tta)
        row.update(test_loss=test["loss"], test_accuracy=test["accuracy"], seconds=seconds)
        history.append(row)
        bar.set_postfix(loss=f"{train_loss:.4f}", test_acc=f"{test['accuracy']:.4f}")
        if on_epoch:
            on_epoch(row)  # logged before the state is saved: a saved epoch is always a logged one
        finished = status == "diverged" or epoch == cfg["epochs"]
        if state_path is not None:
            save_state(state_path, model, optimizer, shuffle,
                       {"history": history, "status": status, "diverged_epoch": diverged_epoch,
                        "seconds": seconds, "finished": finished}, extras)
        if status == "diverged":
            bar.write(f"{cfg['name']} seed {seed}: loss is {train_loss} at epoch {epoch}: diverged, stopping")
            break
    bar.close()
    return {"model": evaluated(), "history": history, "status": status, "diverged_epoch": diverged_epoch,
            "seconds": seconds, "precision": precision_name(amp), "resumed_at_epoch": resumed_at}
