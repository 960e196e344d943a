"""fashionbench's trainer computes what the seeds' plain PyTorch loop computes.

Same seed, same batch order, float32 on the CPU (params' precision: float32): the trainer (uint8 images resident and
gathered once per epoch into its order by `shuffled`, `train_epoch` slicing batches and scaling
them with `to_input`, channels_last for CNNs, `clear_grads`, the fused optimizer of
`make_optimizer`) and the quickstart-style loop (torchvision `ToTensor()` per PIL image, `model(x)`, `F.cross_entropy`,
the default non-fused `torch.optim` optimizer, `zero_grad`, `backward`, `step`) end with the
same weights. Small generated images: no real data needed.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import ToTensor

from fashionbench.core.config import validate
from fashionbench.core.engine import epoch_order, shuffled, train_epoch, train_seed
from fashionbench.core.models import build_model
from fashionbench.core.recipe import make_optimizer
from fashionbench.core.runtime import place_model, to_input

from conftest import base_params
from fake_idx import make_images

N, BATCH, EPOCHS, SEED = 200, 64, 2, 0  # 200 = three full batches and one of 8, per epoch
ATOL = 1e-5
CPU = torch.device("cpu")

OPTIMIZERS = {  # fashionbench's params -> the seeds' plain constructor, PyTorch defaults otherwise
    "adam": ({"optimizer": "adam", "lr": 1e-3},
             lambda params: torch.optim.Adam(params, lr=1e-3)),
    "sgd_momentum": ({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
                     lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)),
}


def config(model: str, **overrides) -> dict:
    params = base_params()
    # precision float32: 'auto' would put CNNs in bf16 on a CPU with AMX (as on CUDA)
    params["runs"]["mlp_64-fashion_mnist"].update(model=model, batch_size=BATCH, epochs=EPOCHS, precision="float32",
                                                  **overrides)
    return validate(params)["runs"]["mlp_64-fashion_mnist"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", N), ("val", 32), ("test", 32)):
        labels = rng.integers(0, 10, size=n)
        out[f"{split}_images"] = torch.from_numpy(make_images(labels, rng))
        out[f"{split}_labels"] = torch.from_numpy(labels.astype(np.int64))
    return out


def batch_order(n: int = N) -> list[torch.Tensor]:
    """The trainer's batches: each epoch's seeded order, cut into batches."""
    shuffle = torch.Generator().manual_seed(SEED)
    batches = []
    for _ in range(EPOCHS):
        order = epoch_order(n, shuffle, CPU)
        batches += [order[i:i + BATCH] for i in range(0, n, BATCH)]
    return batches


def reference_loop(model_name: str, make_opt, images, labels, batches) -> dict:
    """The quickstart: float images from ToTensor() on each PIL image, nothing fused."""
    torch.manual_seed(SEED)
    model = build_model(model_name)
    optimizer = make_opt(model.parameters())
    to_tensor = ToTensor()
    model.train()
    for idx in batches:
        x = torch.stack([to_tensor(Image.fromarray(images[i].numpy())) for i in idx.tolist()])
        loss = F.cross_entropy(model(x), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.state_dict()


def fashionbench_loop(cfg: dict, images, labels) -> dict:
    """train_seed's epochs without the evaluation: the same seeded orders as `batch_order`."""
    torch.manual_seed(SEED)
    model, amp, channels_last = place_model(build_model(cfg.model), CPU, cfg.precision)
    optimizer = make_optimizer(cfg, model.parameters())
    shuffle = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(EPOCHS):
        epoch_images, epoch_labels = shuffled(images, labels, epoch_order(len(labels), shuffle, CPU))
        train_epoch(model, optimizer, epoch_images, epoch_labels, cfg, amp, channels_last)
    return model.state_dict()


def assert_same_weights(ours: dict, reference: dict) -> None:
    assert ours.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(ours[key], reference[key], rtol=0, atol=ATOL, msg=lambda m: f"{key}: {m}")


def test_to_input_gives_exactly_what_torchvision_to_tensor_gives(data):
    images = data["train_images"][:16]
    expected = torch.stack([ToTensor()(Image.fromarray(img.numpy())) for img in images])
    assert to_input(images).dtype == torch.float32
    assert torch.equal(to_input(images), expected)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("model", ["mlp_64", "cnn_small"])
def test_trainer_and_plain_loop_end_with_the_same_weights(data, model, optimizer):
    overrides, plain_optimizer = OPTIMIZERS[optimizer]
    cfg = config(model, **overrides)
    images, labels, batches = data["train_images"], data["train_labels"], batch_order()
    ours = fashionbench_loop(cfg, images, labels)
    reference = reference_loop(model, plain_optimizer, images, labels, batches)
    assert_same_weights(ours, reference)

    # The tolerance means something: training moved the weights far more than ATOL,
    # and the same loop over another batch order ends elsewhere.
    torch.manual_seed(SEED)
    initial = build_model(model).state_dict()
    assert max((ours[k] - initial[k]).abs().max().item() for k in ours) > 100 * ATOL
    other = reference_loop(model, plain_optimizer, images, labels, batches[::-1])
    assert max((other[k] - reference[k]).abs().max().item() for k in other) > 100 * ATOL


def test_train_seed_ends_with_the_weights_of_the_plain_loop_fed_its_batch_order(data):
    cfg = config("cnn_small")
    result = train_seed(cfg, data, SEED, CPU, progress=False)
    reference = reference_loop("cnn_small", OPTIMIZERS["adam"][1], data["train_images"], data["train_labels"],
                               batch_order())
    assert_same_weights(result["model"].state_dict(), reference)
