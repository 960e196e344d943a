"""The training loop: data resident on the device, shuffled per epoch by a seeded generator
(unless `shuffle: false`).

No per-sample Dataset/DataLoader: the split lives on the device as a uint8 tensor, each
epoch gathers it once into its shuffled order, a batch is a slice of that plus a scale to
[0, 1] (what the seeds' `ToTensor()` gives), and loss/accuracy accumulate on the device and
are read once per epoch (no host sync per step).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fashionbench.core.checkpoint import load_state, save_state
from fashionbench.core.files import write_tensors
from fashionbench.core.models import ViewAveraged, model_from_config, parameter_count, tta_mode
from fashionbench.core.paths import checkpoint_path, resume_dir
from fashionbench.core.recipe import (
    augment_batch,
    augmentation_draws,
    compute_loss,
    l1_penalty,
    make_ema,
    make_optimizer,
    make_scheduler,
)
from fashionbench.core.runtime import (
    eval_batch_size,
    fast_paths,
    place_model,
    precision_name,
    set_determinism,
    to_input,
)
from fashionbench.core.schema import RunConfig
from fashionbench.core.splits import load_run_data


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
    loss = compute_loss(cfg.loss, logits.float(), y, cfg.label_smoothing)
    objective = loss + cfg.l1 * l1_penalty(model) if cfg.l1 else loss
    clear_grads(optimizer)
    objective.backward()
    optimizer.step()
    return loss.detach() * len(y), (logits.detach().argmax(1) == y).sum()


def downscaled(x: torch.Tensor, size: int, channels_last: bool = False) -> torch.Tensor:
    """A float batch (N, 1, 28, 28) at size x size pixels, bilinear and antialiased: progressive
    resizing's input, in the model's layout."""
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_epoch(model, optimizer, images, labels, cfg, amp=False, channels_last=False,
                scheduler=None, ema=None, draws: dict[str, torch.Tensor] | None = None, size: int | None = None):
    """One pass over (already shuffled) uint8 images in batches of cfg.batch_size, with the
    run's augmentation (`draws`, in the images' order), per-step schedule and weight average
    where it has them. With `size`, each augmented batch is downscaled to size x size pixels
    (progressive resizing: bilinear, antialiased) before the model sees it.

    Returns (summed loss, correct count) as device tensors: nothing here waits for the device.
    """
    bs = cfg.batch_size
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    for i in range(0, len(labels), bs):
        batch = images[i:i + bs]
        if draws is not None:
            batch = augment_batch(batch, cfg, {name: d[i:i + bs] for name, d in draws.items()})
        x = to_input(batch, channels_last)
        if size is not None:
            x = downscaled(x, size, channels_last)
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


WHITENING_IMAGES = 20_000  # the first of the training split: their 13.5 million patches fix 9x9 covariances


@torch.no_grad()
def set_input_statistics(model: nn.Module, train_images: torch.Tensor) -> None:
    """What the first layers take from the training split: normalize: standard's Standardize gets
    its pixel mean and std (in [0, 1] units); whiten's PatchWhitening its filters, from the first
    WHITENING_IMAGES images as the layer sees them (standardised where the model standardises)."""
    from fashionbench.core.models import PatchWhitening, Standardize

    standardize = next((m for m in model.modules() if isinstance(m, Standardize)), None)
    whitening = next((m for m in model.modules() if isinstance(m, PatchWhitening)), None)
    if standardize is None and whitening is None:
        return
    pixels = train_images.float().div_(255.0)
    if standardize is not None:
        standardize.mean.fill_(pixels.mean())
        standardize.std.fill_(pixels.std())
    if whitening is not None:
        x = pixels[:WHITENING_IMAGES].unsqueeze(1)
        whitening.fit(standardize(x) if standardize is not None else x)


def train_seed(cfg: RunConfig, data: dict[str, torch.Tensor], seed: int, device: torch.device,
               on_epoch: Callable[[dict], None] | None = None, progress: bool = True,
               state_path: Path | None = None) -> dict:
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
    model, amp, channels_last = place_model(model_from_config(cfg), device, cfg.precision)
    train_x, train_y = data["train_images"], data["train_labels"]
    set_input_statistics(model, train_x)
    optimizer = make_optimizer(cfg, model.parameters())
    shuffle = torch.Generator().manual_seed(seed)
    n, eval_bs = len(train_y), eval_batch_size(cfg, device)
    scheduler = make_scheduler(cfg, optimizer, steps_per_epoch=math.ceil(n / cfg.batch_size))
    ema = make_ema(cfg, model)
    augmenting = cfg.augment != "none" or cfg.random_erasing > 0
    # Its own stream: the batch order and dropout masks stay those of a run without augmentation.
    augment_rng = torch.Generator().manual_seed(seed + (1 << 32)) if augmenting else None
    extras = {"scheduler": scheduler, "ema": ema, "augment_rng": augment_rng}
    evaluated = lambda: ema.module if ema is not None else model  # noqa: E731 - what is evaluated and saved
    tta = cfg.tta
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
    epochs = range(len(history) + 1, cfg.epochs + 1) if not done["finished"] else range(0)
    bar = tqdm(epochs, desc=f"{cfg.name} seed {seed}", unit="epoch", initial=len(history), total=cfg.epochs,
               disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        start = time.perf_counter()
        model.train()
        if cfg.shuffle:
            images, labels = shuffled(train_x, train_y, epoch_order(n, shuffle, device))
        else:  # the same order every epoch; the generator is not drawn from
            images, labels = train_x, train_y
        draws = augmentation_draws(n, cfg, augment_rng, device) if augment_rng is not None else None
        size = cfg.progressive_size if epoch <= cfg.progressive_epochs else None
        loss_sum, correct = train_epoch(model, optimizer, images, labels, cfg, amp, channels_last,
                                        scheduler, ema, draws, size)
        train_loss = float(loss_sum) / n  # the one host sync of the epoch: the device is done
        seconds += time.perf_counter() - start
        row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": int(correct) / n}
        if not math.isfinite(train_loss):
            status, diverged_epoch = "diverged", epoch
        # The curves are single-view: test-time augmentation's views (6 for flip_shift, a third of
        # an epoch's training work) only for the last epoch, whose numbers the run reports.
        views = tta if epoch == cfg.epochs or status == "diverged" else "none"
        if has_val:
            val = evaluate_split(evaluated(), data["val_images"], data["val_labels"], cfg.loss, eval_bs,
                                 cfg.precision, views)
            row.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        test = evaluate_split(evaluated(), data["test_images"], data["test_labels"], cfg.loss, eval_bs,
                              cfg.precision, views)
        row.update(test_loss=test["loss"], test_accuracy=test["accuracy"], seconds=seconds)
        history.append(row)
        bar.set_postfix(loss=f"{train_loss:.4f}", test_acc=f"{test['accuracy']:.4f}")
        if on_epoch:
            on_epoch(row)  # logged before the state is saved: a saved epoch is always a logged one
        finished = status == "diverged" or epoch == cfg.epochs
        if state_path is not None:
            save_state(state_path, model, optimizer, shuffle,
                       {"history": history, "status": status, "diverged_epoch": diverged_epoch,
                        "seconds": seconds, "finished": finished}, extras)
        if status == "diverged":
            bar.write(f"{cfg.name} seed {seed}: loss is {train_loss} at epoch {epoch}: diverged, stopping")
            break
    bar.close()
    return {"model": evaluated(), "history": history, "status": status, "diverged_epoch": diverged_epoch,
            "seconds": seconds, "precision": precision_name(amp), "resumed_at_epoch": resumed_at}


def seed_summary(seed: int, result: dict) -> dict:
    last = result["history"][-1] if result["history"] else {}
    return {
        "seed": seed,
        "status": result["status"],
        "diverged_epoch": result["diverged_epoch"],
        "epochs_run": len(result["history"]),
        "resumed_at_epoch": result["resumed_at_epoch"],
        "train_seconds": round(result["seconds"], 3),
        "final": {k: v for k, v in last.items() if k not in ("epoch", "seconds")},
    }


def train_run(cfg: RunConfig, device: torch.device, tracker=None, progress: bool = True,
              resume: bool = True) -> tuple[dict, nn.Module]:
    """Train every seed of the run (resuming a saved state) and save each state dict. Returns the
    summary (train.json) and the first seed's model (what MLflow logs)."""
    set_determinism(cfg.deterministic, device)
    data = load_run_data(cfg, device)
    state_dir = resume_dir(cfg.name)
    seeds, histories, models = [], {}, {}
    for seed in cfg.seeds:
        # With several seeds each seed is a child MLflow run; with one, the run itself.
        seed_tracker = tracker.child(seed) if tracker and len(cfg.seeds) > 1 else tracker
        on_epoch = seed_tracker.log_epoch if seed_tracker else None
        result = train_seed(cfg, data, seed, device, on_epoch=on_epoch, progress=progress,
                            state_path=state_dir / f"seed{seed}.pt" if resume else None)
        write_tensors(checkpoint_path(cfg.name, seed), result["model"].state_dict())
        if seed_tracker and result["resumed_at_epoch"]:
            seed_tracker.set_tags({"resumed_at_epoch": result["resumed_at_epoch"]})
        summary = seed_summary(seed, result)
        if seed_tracker is not tracker:
            seed_tracker.finish(summary)
        seeds.append(summary)
        histories[str(seed)] = result["history"]
        models[seed] = result["model"]
    first = cfg.seeds[0]
    return {
        "run": cfg.name,
        "config": cfg.as_dict(),
        "device": str(device),
        "precision": result["precision"],  # what precision 'auto' became on this device
        "torch": torch.__version__,
        # On the CPU the count decides the order of float sums: the same count, the same bytes.
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "parameters": parameter_count(models[first]),
        "train_seconds": round(sum(s["train_seconds"] for s in seeds), 3),
        "status": "diverged" if any(s["status"] == "diverged" for s in seeds) else "completed",
        "seeds": seeds,
        "history": histories,
        "digest": data["digest"],
    }, models[first]
