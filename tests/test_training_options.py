"""Beyond the write-ups: the fast-training options (resnet_fast's), each off by default."""
import math

import pytest
import torch

from fashionbench.core.config import ConfigError, validate
from fashionbench.core import engine
from fashionbench.core.engine import predict, set_input_statistics, train_seed
from fashionbench.core.models import PatchWhitening, Standardize, build_model, model_from_config
from fashionbench.core.recipe import (
    augment_batch,
    augmentation_draws,
    compute_loss,
    make_ema,
    make_optimizer,
    make_scheduler,
)

from conftest import base_params

RUN = "mlp_64-fashion_mnist"


def config(dataset: str = "fashion_mnist", **overrides) -> dict:
    params = base_params()
    params["runs"][RUN].update(dataset=dataset, **overrides)
    return validate(params)["runs"][RUN]


def batch(n: int = 16) -> torch.Tensor:
    return torch.randint(1, 256, (n, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def augmented(images: torch.Tensor, cfg: dict, seed: int = 0) -> torch.Tensor:
    """The batch as one epoch of the run would augment it, from a generator seeded `seed`."""
    return augment_batch(images, cfg, augmentation_draws(len(images), cfg, torch.Generator().manual_seed(seed),
                                                         images.device))


def test_every_option_is_off_by_default():
    cfg = config()
    assert (cfg.normalize, cfg.augment, cfg.random_erasing, cfg.label_smoothing, cfg.lr_schedule,
            cfg.warmup_epochs, cfg.ema, cfg.tta, cfg.progressive_size, cfg.progressive_epochs) == (
        "none", "none", 0.0, 0.0, "constant", 0, None, "none", None, 0)


def test_a_crop_is_a_window_of_the_image_padded_by_two():
    images = batch()
    out = augmented(images, config(augment="crop"))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for img, pad in zip(out, padded):
        windows = [pad[r:r + 28, c:c + 28] for r in range(5) for c in range(5)]
        assert any(torch.equal(img, w) for w in windows)
    assert not torch.equal(out, images)  # some image moved


def test_crop_flip_mirrors_some_images_and_crop_none():
    images = batch(64)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))

    def mirrored(out):
        return sum(any(torch.equal(img, pad[r:r + 28, c:c + 28].flip(-1)) for r in range(5) for c in range(5))
                   for img, pad in zip(out, padded))

    assert mirrored(augmented(images, config(augment="crop"))) == 0
    assert 10 < mirrored(augmented(images, config(augment="crop_flip"))) < 54


def test_augmentation_is_reproducible_from_its_generator():
    cfg, images = config(augment="crop_flip", random_erasing=0.5), batch()
    a = augmented(images, cfg, 3)
    b = augmented(images, cfg, 3)
    assert torch.equal(a, b)


def test_random_erasing_zeroes_one_rectangle_per_image_at_probability_one():
    out = augmented(batch(), config(random_erasing=1.0))
    for img in out:
        rows, cols = torch.nonzero(img == 0, as_tuple=True)  # the batch has no zero pixels of its own
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert 0.02 * 784 * 0.5 <= len(rows) <= 0.33 * 784 * 1.5


def test_flips_are_refused_for_digits_with_one_line():
    with pytest.raises(ConfigError, match=r"^runs.mlp_64-fashion_mnist.augment: crop_flip mirrors images"):
        config(dataset="mnist", augment="crop_flip")
    for mode in ("flip", "flip_shift"):
        with pytest.raises(ConfigError, match=rf"^runs.mlp_64-fashion_mnist.tta: {mode} mirrors images, which is wrong "
                                              "for mnist .*; use shift or none$"):
            config(dataset="mnist", tta=mode)
    assert config(dataset="mnist", augment="crop", tta="shift").tta == "shift"


def test_tta_is_one_of_its_modes():
    with pytest.raises(ConfigError, match=r"^runs.mlp_64-fashion_mnist.tta: expected one of none, flip, shift, flip_shift, got True$"):
        config(tta=True)


def test_label_smoothing_needs_cross_entropy_and_raises_a_confident_loss():
    with pytest.raises(ConfigError, match="label_smoothing: needs loss cross_entropy, got nll"):
        config(loss="nll", label_smoothing=0.1)
    logits, labels = torch.tensor([[10.0] + [0.0] * 9]), torch.tensor([0])
    assert compute_loss("cross_entropy", logits, labels, 0.1) > compute_loss("cross_entropy", logits, labels) + 0.1


def scheduled_lrs(cfg: dict, steps_per_epoch: int) -> list[float]:
    """The learning rate of every step of the run, as its schedule sets it."""
    optimizer = make_optimizer(cfg, build_model("mlp_64").parameters())
    scheduler = make_scheduler(cfg, optimizer, steps_per_epoch)
    lrs = []
    for _ in range(cfg.epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_onecycle_warms_up_to_the_peak_lr_and_anneals_per_step():
    lrs = scheduled_lrs(config(lr_schedule="onecycle", lr=0.01, epochs=2), steps_per_epoch=50)
    assert lrs[0] == pytest.approx(0.01 / 25) and max(lrs) == pytest.approx(0.01, rel=1e-3) and lrs[-1] < 1e-4


def test_cosine_warms_up_linearly_then_decays_to_zero():
    lrs = scheduled_lrs(config(lr_schedule="cosine", warmup_epochs=1, lr=0.1, epochs=3), steps_per_epoch=10)
    assert lrs[:10] == pytest.approx([0.01 * (i + 1) for i in range(10)])
    assert lrs[10] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.002
    with pytest.raises(ConfigError, match="warmup_epochs: a warm-up is part of lr_schedule cosine"):
        config(warmup_epochs=1)


def test_ema_averages_the_weights_step_by_step():
    model = build_model("mlp_64")
    ema = make_ema(config(ema=0.9), model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)  # the first update copies the weights
    ema.update(model)
    for k, v in ema.module.state_dict().items():
        assert torch.allclose(v, before[k] + 1.0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)  # third update, n = 2: decay min(0.9, 3 / 12) = 0.25
    name, param = next(iter(ema.module.named_parameters()))
    assert torch.allclose(param, before[name] + 1.75)  # 0.25 * (w+1) + 0.75 * (w+2)


def test_the_ema_decay_warms_up_to_its_setting():
    model = build_model("mlp_64")
    ema = make_ema(config(ema=0.9), model)
    for _ in range(200):  # n large: (1 + n) / (10 + n) > 0.9, so the decay is 0.9
        ema.update(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    name, before = next(iter((k, v.clone()) for k, v in ema.module.named_parameters()))
    ema.update(model)
    assert torch.allclose(dict(ema.module.named_parameters())[name], before + 0.1)


def test_tta_averages_the_logits_of_each_image_and_its_mirror():
    torch.manual_seed(0)
    model, images = build_model("cnn_small").eval(), batch(8)
    x = images.unsqueeze(1).float() / 255
    with torch.no_grad():
        expected = (model(x) + model(x.flip(-1))) / 2
    assert torch.allclose(predict(model, images, 4, "float32", tta="flip"), expected, atol=1e-5)


def test_a_shifted_view_moves_every_pixel_one_place_and_fills_with_background():
    from fashionbench.core.models import view

    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 3] = 1.0
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        moved = view(x, dx, dy, False)
        assert moved.shape == x.shape and moved[0, 0, 2 + dy, 3 + dx] == 1.0 and moved.sum() == 1.0
    assert view(x, 0, 1, True)[0, 0, 3, 1] == 1.0  # moved down, then mirrored
    edge = torch.ones(1, 1, 5, 5)
    assert view(edge, 1, 0, False)[0, 0, :, 0].sum() == 0  # the column shifted in is background


def test_flip_shift_tta_weighs_the_image_and_its_mirror_as_its_four_diagonal_translations():
    from fashionbench.core.models import tta_views, view

    assert tta_views("flip_shift") == [(0, 0, False, 0.25), (0, 0, True, 0.25), (-1, -1, False, 0.125),
                                       (-1, -1, True, 0.125), (1, 1, False, 0.125), (1, 1, True, 0.125)]
    assert tta_views("shift") == [(0, 0, False, 0.5), (-1, -1, False, 0.25), (1, 1, False, 0.25)]
    assert tta_views("none") == [(0, 0, False, 1.0)]
    assert tta_views(True) == tta_views("flip") and tta_views(False) == tta_views("none")  # runs trained before the modes
    torch.manual_seed(0)
    model, images = build_model("cnn_small").eval(), batch(8)
    x = images.unsqueeze(1).float() / 255
    with torch.no_grad():
        untranslated = (model(x) + model(x.flip(-1))) / 2
        translated = sum(model(view(x, d, d, m)) for d in (-1, 1) for m in (False, True)) / 4
    assert torch.allclose(predict(model, images, 4, "float32", tta="flip_shift"), (untranslated + translated) / 2,
                          atol=1e-5)


def test_tta_adds_bf16_logits_in_float32():
    torch.manual_seed(0)
    model, images = build_model("cnn_small").eval(), batch(8)
    x = images.unsqueeze(1).float() / 255
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain, mirror = model(x), model(x.flip(-1))
    assert plain.dtype == torch.bfloat16
    assert torch.equal(predict(model, images, 8, "bf16", tta="flip"), (plain.float() + mirror.float()) / 2)


def test_standard_normalization_is_a_layer_holding_the_training_statistics(tiny_data):
    cfg = config(normalize="standard", epochs=1)
    result = train_seed(cfg, tiny_data, 0, torch.device("cpu"), progress=False)
    layer = next(m for m in result["model"].modules() if isinstance(m, Standardize))
    pixels = tiny_data["train_images"].float() / 255
    assert layer.mean.item() == pytest.approx(pixels.mean().item(), rel=1e-5)
    assert layer.std.item() == pytest.approx(pixels.std().item(), rel=1e-5)
    reloaded = model_from_config(cfg)
    reloaded.load_state_dict(result["model"].state_dict())  # the statistics travel in the checkpoint
    assert reloaded[0].mean.item() == layer.mean.item()


def test_the_options_together_train_resnet_fast_and_resume_bit_for_bit(tiny_data, tmp_path):
    params = base_params()
    params["runs"] = {"r": {"model": "resnet_fast", "dataset": "fashion_mnist", "width": 4, "epochs": 3,
                            "batch_size": 64, "normalize": "standard", "augment": "crop_flip", "random_erasing": 0.5,
                            "label_smoothing": 0.1, "lr_schedule": "onecycle", "ema": 0.9, "tta": "flip_shift",
                            "progressive_size": 20, "progressive_epochs": 2, "whiten": True}}
    cfg, cpu = validate(params)["runs"]["r"], torch.device("cpu")
    whole = train_seed(cfg, tiny_data, 0, cpu, progress=False)

    class Interrupted(Exception):
        pass

    def stop_at_2(row):
        if row["epoch"] == 2:
            raise Interrupted

    state = tmp_path / "seed0.pt"
    with pytest.raises(Interrupted):
        train_seed(cfg, tiny_data, 0, cpu, progress=False, state_path=state, on_epoch=stop_at_2)
    resumed = train_seed(cfg, tiny_data, 0, cpu, progress=False, state_path=state)
    assert resumed["resumed_at_epoch"] == 2
    expected, got = whole["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert all(math.isfinite(r["train_loss"]) for r in whole["history"])


def resnet_config(**overrides):
    params = base_params()
    params["runs"] = {"r": {"model": "resnet_fast", "dataset": "fashion_mnist", "width": 4, "batch_size": 64,
                            **overrides}}
    return validate(params)["runs"]["r"]


def test_whitening_makes_the_training_patches_uncorrelated_and_only_its_bias_trains(tiny_data):
    cfg = resnet_config(whiten=True, normalize="standard", epochs=1, blocks=[0, 1])
    model = train_seed(cfg, tiny_data, 0, torch.device("cpu"), progress=False)["model"]
    standardize, resnet = model
    layer = resnet[0]
    assert isinstance(layer, PatchWhitening) and resnet[2][0].in_channels == 18  # stage 0 is its 18 channels
    patches = torch.nn.functional.conv2d(standardize(tiny_data["train_images"].float().unsqueeze(1) / 255),
                                         layer.weight[:9])  # the 9 components (the other 9 are their negatives)
    cov = torch.cov(patches.permute(1, 0, 2, 3).reshape(9, -1))
    assert torch.allclose(cov, torch.eye(9), atol=0.01)  # uncorrelated, unit variance (eps dims the faintest a little)
    untrained = model_from_config(cfg)
    set_input_statistics(untrained, tiny_data["train_images"])
    assert torch.equal(untrained[1][0].weight, layer.weight)  # the filters did not train
    assert layer.bias.abs().sum() > 0  # the bias did
    reloaded = model_from_config(cfg)
    reloaded.load_state_dict(model.state_dict())  # the filters travel in the checkpoint
    assert torch.equal(reloaded[1][0].weight, layer.weight)


def test_whitening_is_a_resnet_fast_option_given_as_true_false_or_null():
    with pytest.raises(ConfigError, match=r"^runs.mlp_64-fashion_mnist.whiten: model mlp_64 has no 'whiten' option"):
        config(whiten=True)
    with pytest.raises(ConfigError, match=r"^runs.r.whiten: expected null, true or false, got 'yes'$"):
        resnet_config(whiten="yes")
    assert resnet_config().whiten is None and resnet_config(whiten=False).whiten is False


def test_progressive_resizing_is_refused_for_a_model_that_takes_28_pixels_only():
    with pytest.raises(ConfigError, match=r"^runs.mlp_64-fashion_mnist.progressive_size: model mlp_64 takes 28x28 "
                                          r"images only \(models that train at other sizes: resnet_fast\); set it to null$"):
        config(progressive_size=20, progressive_epochs=2)


def test_progressive_epochs_need_a_size_and_the_size_is_bounded():
    with pytest.raises(ConfigError, match=r"^runs.r.progressive_epochs: needs progressive_size .*got null$"):
        resnet_config(progressive_epochs=2)
    with pytest.raises(ConfigError, match=r"^runs.r.progressive_size: expected <= 27, got 28$"):
        resnet_config(progressive_size=28)


def test_progressive_epochs_leave_at_least_the_last_epoch_at_28_pixels():
    with pytest.raises(ConfigError, match=r"^runs.r.progressive_epochs: expected fewer than epochs \(3\), so that the "
                                          r"last epochs train at the 28 px the model is tested at, got 3$"):
        resnet_config(epochs=3, progressive_size=20, progressive_epochs=3)


@pytest.mark.parametrize("max_epochs, expected", [(1, 0), (5, 4), (30, 9)])
def test_a_smoke_runs_epoch_cap_still_ends_at_28_pixels(max_epochs, expected):
    params = base_params()
    params["max_epochs"] = max_epochs
    params["runs"] = {"r": {"model": "resnet_fast", "dataset": "fashion_mnist", "width": 4, "epochs": 18,
                            "progressive_size": 20, "progressive_epochs": 9}}
    assert validate(params)["runs"]["r"].progressive_epochs == expected


def test_progressive_epochs_train_on_smaller_images_and_the_rest_at_28(tiny_data, monkeypatch):
    cfg = resnet_config(epochs=3, progressive_size=20, progressive_epochs=2)
    sizes, evaluating = [], []
    monkeypatch.setattr(engine, "evaluate_split", lambda *a, **k: evaluating.append(True) or {"loss": 1.0, "accuracy": 0.5})
    real_step = engine.train_step

    def step(model, optimizer, x, y, cfg, amp=False):
        sizes.append((len(evaluating), tuple(x.shape[-2:])))
        return real_step(model, optimizer, x, y, cfg, amp)

    monkeypatch.setattr(engine, "train_step", step)
    train_seed(cfg, tiny_data, 0, torch.device("cpu"), progress=False)
    evaluations = 2  # val and test after each epoch
    assert {size for done, size in sizes if done < 2 * evaluations} == {(20, 20)}
    assert {size for done, size in sizes if done == 2 * evaluations} == {(28, 28)}


def test_the_curves_are_single_view_and_the_last_epoch_averages_the_tta_views(tiny_data, monkeypatch):
    cfg = resnet_config(epochs=3, tta="flip_shift")
    views = []
    real = engine.evaluate_split
    monkeypatch.setattr(engine, "evaluate_split", lambda *a, **k: views.append(a[-1]) or real(*a, **k))
    train_seed(cfg, tiny_data, 0, torch.device("cpu"), progress=False)
    assert views == ["none", "none", "none", "none", "flip_shift", "flip_shift"]  # val and test per epoch
