"""On a CUDA GPU: training, resume, evaluate, predict and the on-device augmentation, and an
epoch that waits on the device only where the loop says it does. Skipped where CUDA is absent
(CI, the project's CPU machines); `benchmarks/gpu_check.sh` runs them on a GPU."""
import json

import pytest
import torch

from fashionbench.core.config import validate
from fashionbench.core.engine import train_epoch, train_seed
from fashionbench.core.recipe import augment_batch, augmentation_draws, make_ema, make_optimizer, make_scheduler
from fashionbench.core.runtime import bf16_native, place_model, set_determinism
from fashionbench.core.models import model_from_config

from conftest import base_params, set_run

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CUDA = torch.device("cuda")
RUN = "mlp_64-fashion_mnist"
FAST = {"model": "resnet_fast", "width": 4, "epochs": 3, "batch_size": 32, "optimizer": "sgd", "momentum": 0.9,
        "nesterov": True, "lr": 0.05, "lr_schedule": "onecycle", "normalize": "standard", "augment": "crop_flip",
        "label_smoothing": 0.1, "ema": 0.9, "tta": "flip_shift"}


def config(**changes):
    params = base_params()
    params["runs"][RUN].update({**FAST, **changes})
    return validate(params)["runs"][RUN]


def on_cuda(data: dict) -> dict:
    return {k: v.to(CUDA) if isinstance(v, torch.Tensor) else v for k, v in data.items()}


def weights(result) -> dict:
    return {k: v.detach().clone() for k, v in result["model"].state_dict().items()}


class Interrupted(Exception):
    pass


def test_resnet_fast_trains_on_the_gpu_in_bf16_where_it_has_it(tiny_data):
    cfg = config()
    result = train_seed(cfg, on_cuda(tiny_data), 0, CUDA, progress=False)
    assert result["status"] == "completed" and len(result["history"]) == 3
    assert all(p.device.type == "cuda" for p in result["model"].parameters())
    assert result["precision"] == ("bf16 autocast" if bf16_native(CUDA) else "float32")
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]


def test_a_resumed_gpu_training_ends_with_the_weights_of_an_uninterrupted_one(tiny_data, tmp_path):
    cfg = config(precision="float32")
    set_determinism(True, CUDA)  # as train_run does: deterministic kernels, a fixed cuBLAS workspace
    data = on_cuda(tiny_data)
    whole = train_seed(cfg, data, 0, CUDA, progress=False)

    def stop_after_2(row):
        if row["epoch"] == 2:
            raise Interrupted

    state = tmp_path / "seed0.pt"
    with pytest.raises(Interrupted):
        train_seed(cfg, data, 0, CUDA, progress=False, state_path=state, on_epoch=stop_after_2)
    resumed = train_seed(cfg, data, 0, CUDA, progress=False, state_path=state)
    assert resumed["resumed_at_epoch"] == 2
    expected, got = weights(whole), weights(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_the_augmentation_on_the_gpu_is_the_cpus_image_for_image(tiny_data):
    cfg = config(random_erasing=0.5)
    images = tiny_data["train_images"][:64]
    draws = augmentation_draws(len(images), cfg, torch.Generator().manual_seed(0), torch.device("cpu"))
    on_cpu = augment_batch(images, cfg, draws)
    on_gpu = augment_batch(images.to(CUDA), cfg, {k: d.to(CUDA) for k, d in draws.items()})
    assert torch.equal(on_gpu.cpu(), on_cpu)


def test_an_epoch_waits_on_the_device_only_where_the_loop_says_it_does(tiny_data):
    """train_epoch runs every step without a host sync (loss and accuracy stay on the device,
    the augmentation draws were copied before it, the weight average counts in Python): with
    CUDA's sync debug mode set to error, any op that waits on the device inside it raises."""
    cfg = config()
    data = on_cuda(tiny_data)
    torch.manual_seed(0)
    model, amp, channels_last = place_model(model_from_config(cfg), CUDA, cfg.precision)
    optimizer = make_optimizer(cfg, model.parameters())
    n = len(data["train_labels"])
    scheduler = make_scheduler(cfg, optimizer, steps_per_epoch=-(-n // cfg.batch_size))
    ema = make_ema(cfg, model)
    draws = augmentation_draws(n, cfg, torch.Generator().manual_seed(1), CUDA)  # once an epoch: a copy
    for epoch in range(2):  # the second epoch: every lazy initialisation is done
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loss_sum, correct = train_epoch(model, optimizer, data["train_images"], data["train_labels"], cfg, amp,
                                            channels_last, scheduler, ema, draws)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.isfinite(loss_sum).item() and 0 <= int(correct) <= n  # the epoch's one wait


def test_train_evaluate_and_predict_a_gpu_trained_run(workspace, tmp_path, capsys):
    from PIL import Image

    from fashionbench import predict
    from fashionbench.core.splits import load_prepared
    from fashionbench.stages import evaluate, train

    set_run(workspace, RUN, **{**FAST, "device": "cuda", "seeds": [0]})
    assert train.main([RUN, "--no-mlflow"]) == 0
    trained = json.loads((workspace / "models" / RUN / "train.json").read_text())
    assert trained["device"] == "cuda" and trained["threads"] is None
    assert evaluate.main([RUN]) == 0
    metrics = json.loads((workspace / "metrics" / f"{RUN}.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1
    images = load_prepared("fashion_mnist")["test_images"][:4].numpy()
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"t{i}.png")
    capsys.readouterr()
    assert predict.main([str(tmp_path), "--run", RUN, "--json"]) == 0  # a GPU checkpoint, predicted on the CPU
    assert len(json.loads(capsys.readouterr().out)["predictions"]) == 4
