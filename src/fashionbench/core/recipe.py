"""The training recipe's parts, each built from a run's config: loss, optimizer, learning-rate
schedule, weight EMA, per-image augmentation on the device, the L1 penalty.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from fashionbench.core.schema import RunConfig


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


def make_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    """The optimizer, fused (one kernel for all parameters) where PyTorch has a fused version.

    On a CPU the default single-tensor Adam costs as much as the backward pass of a
    512-wide MLP; the fused one computes the same update in one pass.
    """
    name, lr, wd = cfg.optimizer, cfg.lr, cfg.weight_decay
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=wd, fused=True)
    if name == "rmsprop":  # no fused RMSprop in PyTorch: the multi-tensor one
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg.momentum, weight_decay=wd, foreach=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, fused=True)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The per-step learning-rate schedule, or None for a constant rate.

    onecycle: PyTorch's OneCycleLR peaking at `lr` (the rate only: momentum and Adam's beta1 keep
    their values). cosine: linear warm-up over `warmup_epochs` (cut to the run), then cosine to 0.
    """
    total = max(1, cfg.epochs * steps_per_epoch)
    schedule = cfg.lr_schedule
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, cycle_momentum=False)
    if schedule == "cosine":
        warm = min(cfg.warmup_epochs * steps_per_epoch, total - 1)

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


def make_ema(cfg: RunConfig, model: nn.Module) -> WeightEMA | None:
    """The run's weight average (params' ema is its decay), or None."""
    return WeightEMA(model, cfg.ema) if cfg.ema else None


CROP_PADDING = 2


def augmentation_draws(n: int, cfg: RunConfig, generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """An epoch's random numbers for augment_batch, one row per image: drawn at once from
    `generator` on the CPU (every device sees the same augmentations) and copied to the device
    once per epoch, not once per batch."""
    draws = {}
    if cfg.augment != "none":
        draws["offsets"] = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=generator)
        if cfg.augment == "crop_flip":
            draws["flip"] = torch.rand(n, 1, generator=generator) < 0.5
    if cfg.random_erasing > 0:
        draws["erasing"] = torch.rand(n, 5, generator=generator)
    return {name: d.to(device) for name, d in draws.items()}


def augment_batch(images: torch.Tensor, cfg: RunConfig, draws: dict[str, torch.Tensor]) -> torch.Tensor:
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
        erase = inside & (u[:, 4] < cfg.random_erasing)[:, None, None]
        images = images.masked_fill(erase, 0)
    return images


def l1_penalty(model: nn.Module) -> torch.Tensor:
    return sum(p.abs().sum() for name, p in model.named_parameters() if name.endswith("weight"))
