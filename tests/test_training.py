import math
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from fashionbench.core import engine as training
from fashionbench.core import runtime
from fashionbench.core.config import validate
from fashionbench.core.engine import predict, train_seed, train_step
from fashionbench.core.models import build_model
from fashionbench.core.recipe import compute_loss, make_optimizer
from fashionbench.core.runtime import eval_batch_size, fast_paths, to_input

from conftest import base_params


def config(**overrides) -> dict:
    params = base_params()
    params["runs"]["mlp_64-fashion_mnist"].update(overrides)
    return validate(params)["runs"]["mlp_64-fashion_mnist"]


@pytest.mark.parametrize("optimizer, lr, momentum", [("sgd", 0.1, 0.9), ("rmsprop", 0.001, 0.0),
                                                     ("adam", 0.001, 0.0), ("adamw", 0.001, 0.0)])
def test_a_few_optimizer_steps_lower_the_loss(tiny_data, optimizer, lr, momentum):
    cfg = config(optimizer=optimizer, lr=lr, momentum=momentum)
    torch.manual_seed(0)
    model = build_model("mlp_64")
    opt = make_optimizer(cfg, model.parameters())
    x, y = to_input(tiny_data["train_images"][:64]), tiny_data["train_labels"][:64]
    before = compute_loss(cfg.loss, model(x), y).item()
    for _ in range(10):
        train_step(model, opt, x, y, cfg)
    assert compute_loss(cfg.loss, model(x), y).item() < before


@pytest.mark.parametrize("loss", ["cross_entropy", "nll", "mse", "bce"])
def test_every_loss_can_be_minimised(tiny_data, loss):
    cfg = config(loss=loss, lr=0.01)
    torch.manual_seed(0)
    model = build_model("mlp_64")
    opt = make_optimizer(cfg, model.parameters())
    x, y = to_input(tiny_data["train_images"][:64]), tiny_data["train_labels"][:64]
    before = compute_loss(loss, model(x), y).item()
    for _ in range(10):
        train_step(model, opt, x, y, cfg)
    assert compute_loss(loss, model(x), y).item() < before


def test_nll_equals_cross_entropy_on_the_same_logits():
    logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert torch.allclose(compute_loss("nll", logits, labels), compute_loss("cross_entropy", logits, labels))


def test_l1_penalty_shrinks_weights(tiny_data):
    def weight_norm(l1):
        result = train_seed(config(l1=l1, epochs=2), tiny_data, 0, torch.device("cpu"), progress=False)
        return sum(p.abs().sum().item() for n, p in result["model"].named_parameters() if n.endswith("weight"))

    assert weight_norm(0.01) < weight_norm(0.0)


def test_training_records_every_epoch_curve(tiny_data):
    result = train_seed(config(epochs=3), tiny_data, 0, torch.device("cpu"), progress=False)
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3]
    assert set(result["history"][0]) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_accuracy"}
    assert result["status"] == "completed"
    assert result["history"][-1]["train_accuracy"] > 0.5  # the fake classes are easy


def test_training_seconds_leave_out_the_per_epoch_evaluation(tiny_data, monkeypatch):
    evaluate_split = training.evaluate_split

    def slow_evaluation(*args, **kwargs):
        time.sleep(0.25)
        return evaluate_split(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate_split", slow_evaluation)
    result = train_seed(config(epochs=2), tiny_data, 0, torch.device("cpu"), progress=False)
    seconds = [r["seconds"] for r in result["history"]]
    assert 0 < seconds[0] < seconds[1] == result["seconds"] < 0.5  # four evaluations slept 1 s


def epoch_label_orders(tiny_data, monkeypatch, **overrides) -> list[torch.Tensor]:
    """The training labels in the order each epoch's batches saw them."""
    seen, train_epoch = [], training.train_epoch

    def recording(model, optimizer, images, labels, *args, **kwargs):
        seen.append(labels.clone())
        return train_epoch(model, optimizer, images, labels, *args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", recording)
    train_seed(config(epochs=2, **overrides), tiny_data, 0, torch.device("cpu"), progress=False)
    return seen


def test_shuffle_draws_a_new_sample_order_every_epoch(tiny_data, monkeypatch):
    first, second = epoch_label_orders(tiny_data, monkeypatch)
    assert not torch.equal(first, tiny_data["train_labels"]) and not torch.equal(first, second)


def test_shuffle_false_keeps_the_prepared_order_every_epoch(tiny_data, monkeypatch):
    for labels in epoch_label_orders(tiny_data, monkeypatch, shuffle=False):
        assert torch.equal(labels, tiny_data["train_labels"])


def test_same_seed_on_the_cpu_gives_identical_results(tiny_data):
    cfg = config(epochs=2, dropout=0.2)
    first = train_seed(cfg, tiny_data, 7, torch.device("cpu"), progress=False)
    second = train_seed(cfg, tiny_data, 7, torch.device("cpu"), progress=False)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(first["history"]) == strip(second["history"])
    for a, b in zip(first["model"].parameters(), second["model"].parameters()):
        assert torch.equal(a, b)


def test_a_different_seed_gives_different_weights(tiny_data):
    cfg = config(epochs=1)
    a = train_seed(cfg, tiny_data, 0, torch.device("cpu"), progress=False)["model"]
    b = train_seed(cfg, tiny_data, 1, torch.device("cpu"), progress=False)["model"]
    assert not torch.equal(next(a.parameters()), next(b.parameters()))


def test_a_diverging_run_stops_early_with_status_diverged(tiny_data):
    cfg = config(optimizer="sgd", lr=1e12, epochs=5)
    result = train_seed(cfg, tiny_data, 0, torch.device("cpu"), progress=False)
    assert result["status"] == "diverged"
    assert result["diverged_epoch"] == len(result["history"]) < 5
    assert not math.isfinite(result["history"][-1]["train_loss"])


def test_eval_batch_size_null_picks_one_per_device_and_a_number_is_kept():
    assert eval_batch_size(config(eval_batch_size=None), torch.device("cpu")) == 256
    assert eval_batch_size(config(eval_batch_size=None), torch.device("cuda")) == 4096
    assert eval_batch_size(config(eval_batch_size=100), torch.device("cpu")) == 100


@pytest.mark.parametrize("model_name", ["mlp_64", "cnn_small"])
def test_predictions_do_not_depend_on_the_evaluation_batch_size(tiny_data, model_name):
    torch.manual_seed(0)
    model = build_model(model_name)
    images = tiny_data["test_images"]
    whole, batched = predict(model, images, len(images), "float32"), predict(model, images, 7, "float32")
    assert batched.shape == (len(images), 10)
    torch.testing.assert_close(batched, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_puts_only_convolutions_in_bf16_and_only_on_bf16_hardware(monkeypatch, native):
    monkeypatch.setattr(runtime, "bf16_native", lambda device: native)
    cpu = torch.device("cpu")
    assert fast_paths(build_model("cnn_small"), cpu, "auto") == (native, True)
    assert fast_paths(build_model("mlp_512"), cpu, "auto") == (False, False)


@pytest.mark.parametrize("avx512_bf16, amx, native", [(True, False, True), (False, True, True), (False, False, False)])
def test_a_cpu_multiplies_bf16_natively_with_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert runtime.bf16_native(torch.device("cpu")) is native


def test_precision_float32_and_bf16_hold_on_any_hardware(monkeypatch):
    monkeypatch.setattr(runtime, "bf16_native", lambda device: True)
    cpu = torch.device("cpu")
    assert fast_paths(build_model("cnn_small"), cpu, "float32") == (False, True)
    assert fast_paths(build_model("mlp_512"), cpu, "bf16") == (True, False)


def test_precision_bf16_really_trains_in_bf16_and_says_so(tiny_data):
    runs = {p: train_seed(config(model="cnn_small", epochs=1, precision=p), tiny_data, 0, torch.device("cpu"),
                          progress=False) for p in ("float32", "bf16")}
    assert runs["float32"]["precision"] == "float32" and runs["bf16"]["precision"] == "bf16 autocast"
    weights = {p: r["model"].state_dict()["0.weight"] for p, r in runs.items()}
    assert not torch.equal(weights["float32"], weights["bf16"])  # same seed and batches: only rounding differs
    torch.testing.assert_close(weights["bf16"], weights["float32"], rtol=0, atol=1e-2)


def test_predict_leaves_the_callers_model_as_it_was():
    torch.manual_seed(0)
    model = build_model("cnn_small").train()
    predict(model, torch.zeros(4, 28, 28, dtype=torch.uint8), 2, "float32")
    assert model.training
    assert model[3].weight.is_contiguous()  # the 16->32 conv: not switched to channels_last behind the caller's back


def test_flush_denormals_reaches_openmp_threads_started_before_it():
    # A fresh process: start the OpenMP workers first, then flush; x * 1.0 keeps a denormal
    # on any thread that still has gradual underflow (each thread multiplies its own chunk).
    script = textwrap.dedent("""
        import torch
        from fashionbench.core.runtime import flush_denormals
        torch.set_num_threads(2)
        torch.ones(1 << 20).mul(2.0)
        assert flush_denormals()
        denormal = torch.full((1 << 20,), 1e-39)
        print(int((denormal * 1.0).count_nonzero()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0"]
