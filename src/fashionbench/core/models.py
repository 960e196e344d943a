"""The model zoo of the five write-ups (docs/writeups.md), layer for layer. Every model maps (N, 1, 28, 28) floats to 10 logits.

A log-softmax head (seed 004's NLL setup) is applied by the loss, not stored in the
model, so every checkpoint has the same shape of output and the same state-dict keys.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from fashionbench.core.schema import RunConfig

ACTIVATION_LAYERS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


def mlp(depth: int = 2, width: int = 512, activation: str = "relu", dropout: float = 0.0) -> nn.Sequential:
    """784 -> `depth` hidden layers of `width` -> 10; dropout after each hidden activation."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = 28 * 28
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), ACTIVATION_LAYERS[activation]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    layers.append(nn.Linear(fan_in, 10))
    return nn.Sequential(*layers)


def cnn_small() -> nn.Sequential:
    """Seed 000: conv 16@5x5, ReLU, maxpool 2; conv 32@7x7, ReLU, maxpool 2; linear -> 10."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 5), nn.MaxPool2d(2), nn.ReLU(),   # 28 -> 24 -> 12
        nn.Conv2d(16, 32, 7), nn.MaxPool2d(2), nn.ReLU(),  # 12 -> 6 -> 3
        nn.Flatten(), nn.Linear(32 * 3 * 3, 10),
    )


def lenet5(modern: bool) -> nn.Sequential:
    """Seed 002's LeNet-5: classic = sigmoid + average pooling; modern = ReLU + max pooling.

    Sigmoid and average pooling do not commute: classic keeps the seed's activation-then-pool.
    """
    act = nn.ReLU if modern else nn.Sigmoid
    pool = nn.MaxPool2d if modern else nn.AvgPool2d

    def conv_block(conv: nn.Conv2d) -> list[nn.Module]:
        return [conv, pool(2), act()] if modern else [conv, act(), pool(2)]

    return nn.Sequential(
        *conv_block(nn.Conv2d(1, 6, 5, padding=2)),  # 28 -> 28 -> 14
        *conv_block(nn.Conv2d(6, 16, 5)),            # 14 -> 10 -> 5
        nn.Flatten(),
        nn.Linear(400, 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, 10),
    )


def cnn_seed004(dropout: float = 0.0) -> nn.Sequential:
    """Seed 004: conv 32@3x3 pad 1, ReLU, maxpool; conv 64@3x3, ReLU, maxpool; fc 2304-600-120-10.

    `dropout` acts on the two hidden fully connected layers only (not the last one).
    """
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),  # 28 -> 28 -> 14
        nn.Conv2d(32, 64, 3), nn.MaxPool2d(2), nn.ReLU(),            # 14 -> 12 -> 6
        nn.Flatten(),
        nn.Linear(64 * 6 * 6, 600), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(600, 120), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(120, 10),
    )


class PatchMLP(nn.Module):
    """Seed 001: a one-block MLP-Mixer.

    Stem: the 28x28 image is cut into `patch` x `patch` patches every `patch_stride` pixels
    (null: the patch size, i.e. non-overlapping: 7 -> 16 patches of 49 pixels; a smaller stride
    overlaps them, as the seed's reference on splitting tensors with overlap does; a stride that
    does not tile the 21 pixels leaves the last few border columns and rows unread), each
    embedded by one shared linear layer to `width` features. Backbone: a token-mixing MLP (w1,
    w2: across patches) then a channel-mixing MLP (w3, w4: across features, 2 x width hidden),
    ReLU inside each, as the seed describes (no norm, no skip connections).
    Head: mean over patches, linear -> 10 (softmax lives in the loss).
    """

    def __init__(self, patch: int = 7, width: int = 64, token_hidden: int = 64, patch_stride: int | None = None):
        super().__init__()
        self.patch, self.stride = patch, patch_stride or patch
        if self.stride > patch:
            raise ValueError(f"patch stride {self.stride} must be at most the patch size {patch}")
        tokens = ((28 - patch) // self.stride + 1) ** 2
        self.embed = nn.Linear(patch * patch, width)
        self.w1, self.w2 = nn.Linear(tokens, token_hidden), nn.Linear(token_hidden, tokens)
        self.w3, self.w4 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, s = self.patch, self.stride
        # (N,1,28,28) -> (N, tokens, p*p): unfold rows then columns into patches.
        patches = x.unfold(2, p, s).unfold(3, p, s).reshape(x.shape[0], -1, p * p)
        h = self.embed(patches)                                            # (N, T, D)
        h = self.w2(torch.relu(self.w1(h.transpose(1, 2)))).transpose(1, 2)  # token mixing
        h = self.w4(torch.relu(self.w3(h)))                                # channel mixing
        return self.head(h.mean(dim=1))


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias: batch norm follows), batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Residual(nn.Module):
    """x + f(x), f two conv_bn at the same width: the shortcut that lets a deeper net train fast."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PatchWhitening(nn.Module):
    """airbench's first layer: a frozen 3x3 convolution whose filters are the principal components
    of the training images' 3x3 patches, each scaled to unit variance, and their negatives (18
    channels); only its bias learns. `fit` sets the filters; they travel in the state dict."""

    size = 3
    channels = 2 * size * size
    eps = 5e-4  # airbench's: keeps the near-constant components from being scaled up without bound

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.zeros(self.channels, 1, self.size, self.size))  # a buffer: never trained
        self.bias = nn.Parameter(torch.zeros(self.channels))

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Filters from float images (N, 1, H, W), as this layer will see them."""
        patches = F.unfold(images, self.size).transpose(1, 2).reshape(-1, self.size ** 2)
        patches = patches - patches.mean(0)
        values, vectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (vectors.T / torch.sqrt(values + self.eps).unsqueeze(1)).reshape(-1, 1, self.size, self.size)
        self.weight.copy_(torch.cat([filters, -filters]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=self.size // 2)


def resnet_fast(width: int = 32, blocks: tuple[int, ...] = (1, 1, 1), whiten: bool = False) -> nn.Sequential:
    """Beyond the write-ups: a residual CNN with batch norm sized for 28x28 inputs. Stages at 28, 14,
    7, 4 and 2 pixels (as many as `blocks` has entries) with width, 2x, 4x... channels, a strided
    conv_bn between stages, `blocks[i]` residual blocks in stage i; global average pooling; a
    linear head. The default, one block in each of three stages, is the zoo's resnet_fast.
    With `whiten`, the first layer is PatchWhitening and a ReLU (its 18 channels are stage 0's)
    instead of a learned conv_bn."""
    stem = [PatchWhitening(), nn.ReLU()] if whiten else [conv_bn(1, width)]
    channels = PatchWhitening.channels if whiten else width
    layers = stem
    for stage, count in enumerate(blocks):
        if stage:
            layers.append(conv_bn(channels, width * 2 ** stage, stride=2))
            channels = width * 2 ** stage
        layers += [Residual(channels) for _ in range(count)]
    # One flat Sequential, so the default's state-dict keys are those of models trained before `blocks`.
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def tta_mode(value) -> str:
    """params' tta as a mode; `true`/`false`, as runs trained before the modes saved it, are flip/none."""
    return {True: "flip", False: "none", None: "none"}.get(value, value)


def tta_views(mode) -> list[tuple[int, int, bool, float]]:
    """The (dx, dy, mirrored, weight) views test-time augmentation averages, as airbench does:
    flip, each image and its mirror; shift, the image (half the weight) and its two one-pixel
    diagonal translations, up-left and down-right (zero filled, as the background); flip_shift,
    both (6 views)."""
    mode = tta_mode(mode)
    mirrors = (False, True) if "flip" in mode else (False,)
    groups = [[(0, 0)], [(-1, -1), (1, 1)]] if "shift" in mode else [[(0, 0)]]
    return [(dx, dy, mirrored, 1 / len(groups) / len(group) / len(mirrors))
            for group in groups for dx, dy in group for mirrored in mirrors]


def view(x: torch.Tensor, dx: int, dy: int, mirrored: bool) -> torch.Tensor:
    """Images (N, C, H, W) moved dx pixels right and dy down (zero filled), then mirrored."""
    if dx or dy:
        h, w = x.shape[-2:]
        x = F.pad(x, (1, 1, 1, 1))[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]
    return x.flip(-1) if mirrored else x


class ViewAveraged(nn.Module):
    """The mean of a model's logits over the views of params' tta, inside the model: what evaluate
    and predict score, and what a run with tta logs to MLflow, so the served model scores the same."""

    def __init__(self, model: nn.Module, mode):
        super().__init__()
        self.model = model
        self.views = tta_views(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # summed in float32: bf16 logits lose their last digits when added (the weights are powers of 2: exact)
        return sum(weight * self.model(view(x, dx, dy, mirrored)).float() for dx, dy, mirrored, weight in self.views)


# name -> (builder, the zoo entry's arguments). A run may override any builder argument
# that is one of RUN_OPTIONS (e.g. fcn_400's depth and width, cnn_baseline's dropout).
ZOO = {
    "mlp_512": (mlp, {"depth": 2, "width": 512}),
    "mlp_64": (mlp, {"depth": 1, "width": 64}),
    "fcn_400": (mlp, {"depth": 2, "width": 400}),
    "cnn_small": (cnn_small, {}),
    "patch_mlp": (PatchMLP, {}),
    "lenet5_classic": (lenet5, {"modern": False}),
    "lenet5_modern": (lenet5, {"modern": True}),
    "cnn_baseline": (cnn_seed004, {"dropout": 0.0}),
    "cnn_dropout": (cnn_seed004, {"dropout": 0.5}),
    "resnet_fast": (resnet_fast, {"width": 32}),  # beyond the write-ups
}


RUN_OPTIONS = ("depth", "width", "activation", "dropout", "patch_stride", "blocks", "whiten")


ANY_IMAGE_SIZE = ("resnet_fast",)  # global pooling before the head: trains at other sizes (progressive_size)
BEYOND_WRITEUPS = ("resnet_fast",)  # not from a write-up: fashionbench's own


def known_models() -> list[str]:
    return sorted(ZOO)


def model_options(name: str) -> list[str]:
    """The run options (of RUN_OPTIONS: depth, width, ..., blocks) this model accepts."""
    builder, _defaults = ZOO[name]
    signature = inspect.signature(builder)
    return [k for k in RUN_OPTIONS if k in signature.parameters]


def init_weights(model: nn.Module, scheme: str) -> None:
    """Re-initialise weights of linear and conv layers; 'default' keeps PyTorch's own.

    normal: N(0, 0.01^2) weights (the common "random normal" choice; seed 003 saw it hurt),
    xavier_uniform: Glorot uniform, kaiming: He normal for ReLU. Biases are zeroed.
    """
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if scheme == "normal":
                nn.init.normal_(module.weight, 0.0, 0.01)
            elif scheme == "xavier_uniform":
                nn.init.xavier_uniform_(module.weight)
            elif scheme == "kaiming":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:
                raise ValueError(f"unknown init scheme {scheme!r}")
            nn.init.zeros_(module.bias)


def build_model(name: str, init: str = "default", **options) -> nn.Module:
    """A zoo model; `options` (None values ignored) override the zoo entry's defaults."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}, expected one of: {', '.join(known_models())}")
    builder, fixed = ZOO[name]
    kwargs = dict(fixed)
    kwargs.update({k: v for k, v in options.items() if v is not None})
    model = builder(**kwargs)
    init_weights(model, init)
    return model


class Standardize(nn.Module):
    """(x - mean) / std with the training set's pixel statistics, which training sets and the
    state dict keeps, so every user of the model (evaluate, predict, MLflow) feeds [0, 1] images."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def model_from_config(cfg: RunConfig) -> nn.Module:
    model = build_model(cfg.model, cfg.init, **{k: getattr(cfg, k) for k in model_options(cfg.model)})
    if cfg.normalize == "standard":
        model = nn.Sequential(Standardize(), model)
    return model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def uses_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())
