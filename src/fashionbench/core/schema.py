"""The typed config: each setting's type, rule and message declared once.

`TrainingSettings` holds the training keys (params.yaml's top-level defaults, a run's overrides,
a study's grid values, a tuning space's values: all go through `check_setting` or the model);
`RunConfig` is one run as its stages train it; `Preprocess` is params.yaml's `preprocess`.

pydantic v2 (already installed by MLflow) rather than dataclasses: one declaration gives the
type, the rule and validation of a whole mapping or of one value (TypeAdapter), and a frozen
model cannot be changed by the code that trains it. The rules raise ValueError with the text
after the key ("expected > 0, got 0"); `ConfigError` puts the key in front, so every message is
one line naming the key, as before.
"""
from __future__ import annotations

import functools
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, TypeAdapter, ValidationError

OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw")
LOSSES = ("cross_entropy", "nll", "mse", "bce")
INITS = ("default", "normal", "xavier_uniform", "kaiming")
PRECISIONS = ("auto", "float32", "bf16")
ACTIVATIONS = ("relu", "sigmoid", "tanh", "leaky_relu")
NORMALIZATIONS = ("none", "standard")
AUGMENTATIONS = ("none", "crop", "crop_flip")
TTA_MODES = ("none", "flip", "shift", "flip_shift")  # the views test-time augmentation averages (models.tta_views)
LR_SCHEDULES = ("constant", "onecycle", "cosine")
MAX_STAGES = 5  # resnet_fast: 28, 14, 7, 4, 2 pixels; a sixth stride-2 stage would leave one pixel


class ConfigError(Exception):
    """params.yaml (or a catalogue or a search space) is wrong; the message is one line naming the key."""


def _number(v, *, lo=None, lo_open=False, hi=None, hi_open=False, integer=False, nullable=False):
    if v is None and nullable:
        return None
    kind = "an integer" if integer else "a number"
    if isinstance(v, bool):
        raise ValueError(f"expected {kind}, got {v!r}")
    if integer:
        if not isinstance(v, int):
            raise ValueError(f"expected {kind}, got {v!r}")
    else:
        # YAML 1.1 (PyYAML) reads `1e-3` as a string; YAML 1.2 (DVC's -S) as a float: accept both.
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise ValueError(f"expected {kind}, got {v!r}") from None
        if not isinstance(v, (int, float)):
            raise ValueError(f"expected {kind}, got {v!r}")
        v = float(v)
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"expected a finite number, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"expected {'>' if lo_open else '>='} {lo}, got {v!r}")
    if hi is not None and (v >= hi if hi_open else v > hi):
        raise ValueError(f"expected {'<' if hi_open else '<='} {hi}, got {v!r}")
    return v


def number(**bounds) -> BeforeValidator:
    return BeforeValidator(functools.partial(_number, **bounds))


def choice(choices: tuple[str, ...], nullable: bool = False) -> BeforeValidator:
    def check(v):
        if (v is None and nullable) or v in choices:
            return v
        raise ValueError(f"expected one of {', '.join(choices)}, got {v!r}")
    return BeforeValidator(check)


def _boolean(v):
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _optional_boolean(v):
    if v is not None and not isinstance(v, bool):
        raise ValueError(f"expected null, true or false, got {v!r}")
    return v


def _device(v):
    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
        raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got {v!r}")
    return v


def _seeds(v):
    if v is None:
        return None
    if not isinstance(v, list) or not v or any(isinstance(s, bool) or not isinstance(s, int) for s in v):
        raise ValueError(f"expected a non-empty list of integers, got {v!r}")
    if len(set(v)) != len(v):
        raise ValueError(f"expected distinct seeds, got {v!r}")
    return list(v)


def _blocks(v):
    if v is None:
        return None
    if (not isinstance(v, list) or not 1 <= len(v) <= MAX_STAGES
            or any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in v)):
        raise ValueError(f"expected null or a list of 1 to {MAX_STAGES} integers >= 0 "
                         f"(residual blocks per stage), got {v!r}")
    return list(v)


Boolean = Annotated[bool, BeforeValidator(_boolean)]


class TrainingSettings(BaseModel):
    """The training keys: valid at params.yaml's top level (the shared defaults, where every one
    is required) and in any run entry (overrides)."""
    model_config = ConfigDict(frozen=True, extra="forbid")

    lr: Annotated[float, number(lo=0, lo_open=True)]
    epochs: Annotated[int, number(lo=1, integer=True)]
    max_epochs: Annotated[int | None, number(lo=1, integer=True, nullable=True)]  # smoke runs: caps every run
    batch_size: Annotated[int, number(lo=1, integer=True)]
    eval_batch_size: Annotated[int | None, number(lo=1, integer=True, nullable=True)]
    optimizer: Annotated[str, choice(OPTIMIZERS)]
    momentum: Annotated[float, number(lo=0, hi=1, hi_open=True)]
    nesterov: Boolean
    weight_decay: Annotated[float, number(lo=0)]
    l1: Annotated[float, number(lo=0)]
    loss: Annotated[str, choice(LOSSES)]
    init: Annotated[str, choice(INITS)]
    seed: Annotated[int, number(integer=True)]
    seeds: Annotated[list[int] | None, BeforeValidator(_seeds)]
    device: Annotated[str, BeforeValidator(_device)]
    deterministic: Boolean
    precision: Annotated[str, choice(PRECISIONS)]
    # Model options; null means "as the zoo entry defines it".
    depth: Annotated[int | None, number(lo=1, integer=True, nullable=True)]
    width: Annotated[int | None, number(lo=1, integer=True, nullable=True)]
    activation: Annotated[str | None, choice(ACTIVATIONS, nullable=True)]
    dropout: Annotated[float | None, number(lo=0, hi=1, hi_open=True, nullable=True)]
    patch_stride: Annotated[int | None, number(lo=1, hi=7, integer=True, nullable=True)]  # patch_mlp's 7x7: < 7 overlaps
    blocks: Annotated[list[int] | None, BeforeValidator(_blocks)]  # resnet_fast: residual blocks per stage
    whiten: Annotated[bool | None, BeforeValidator(_optional_boolean)]  # resnet_fast: a frozen patch-whitening first layer
    # Beyond the write-ups (fast training); each off by default, so the write-ups' runs do not move.
    normalize: Annotated[str, choice(NORMALIZATIONS)]
    augment: Annotated[str, choice(AUGMENTATIONS)]
    random_erasing: Annotated[float, number(lo=0, hi=1)]
    label_smoothing: Annotated[float, number(lo=0, hi=1, hi_open=True)]
    lr_schedule: Annotated[str, choice(LR_SCHEDULES)]
    warmup_epochs: Annotated[int, number(lo=0, integer=True)]
    ema: Annotated[float | None, number(lo=0, lo_open=True, hi=1, hi_open=True, nullable=True)]
    tta: Annotated[str, choice(TTA_MODES)]
    # Progressive resizing: the first progressive_epochs train on images downscaled to
    # progressive_size pixels (models with global pooling only); evaluation is always at 28.
    progressive_size: Annotated[int | None, number(lo=8, hi=27, integer=True, nullable=True)]
    progressive_epochs: Annotated[int, number(lo=0, integer=True)]
    # The training set: null trains on the prepared split (preprocess.val_fraction held out); a
    # number re-splits every training image, 0 trains on all of them (as write-ups 000-002 and 004).
    val_fraction: Annotated[float | None, number(lo=0, hi=1, hi_open=True, nullable=True)]
    # true: a new order every epoch; false: the training images in their prepared order every
    # epoch, as the PyTorch quickstart's DataLoader (no shuffle=True) that write-up 000 followed.
    shuffle: Boolean


TRAIN_KEYS = tuple(TrainingSettings.model_fields)
# Keys added after results were stored: a stored config (train.json, a study's cell) without one
# trained as this value, the key's "off" (each was added off, so that older runs did not move).
BEFORE_KEY_EXISTED = {
    "shuffle": True, "eval_batch_size": None, "split_seed": 0, "val_fraction": None,
    "depth": None, "width": None, "activation": None, "dropout": None, "patch_stride": None, "blocks": None,
    "whiten": None, "normalize": "none", "augment": "none", "random_erasing": 0.0, "label_smoothing": 0.0,
    "lr_schedule": "constant", "warmup_epochs": 0, "ema": None, "tta": "none",
    "progressive_size": None, "progressive_epochs": 0,
}


class RunConfig(TrainingSettings):
    """One run as its stages train it: the shared defaults, the run's entry over them, and what
    the run is (its name, model, dataset, the pipeline's split seed). `seeds` is never null: a
    run without its own list trains its one `seed`; `epochs` is already capped by `max_epochs`."""
    name: str
    model: str
    dataset: str
    split_seed: int
    seeds: list[int]

    def as_dict(self) -> dict[str, Any]:
        """The plain values, as train.json, data/config/<run>.json and MLflow record them."""
        return self.model_dump()

    @classmethod
    def stored(cls, values: dict, where: str = "config.") -> "RunConfig":
        """A config read back from a trained run's train.json, written before a key existed or not;
        ConfigError names the first key it cannot read, under `where`."""
        values = {**BEFORE_KEY_EXISTED, **values}
        if isinstance(values.get("tta"), bool):  # before the modes, tta was true (a flip) or false
            values["tta"] = "flip" if values["tta"] else "none"
        return validated(cls, values, where)


class Preprocess(BaseModel):
    """params.yaml's `preprocess`: the validation split held out of the training images, seeded,
    and the smoke caps."""
    model_config = ConfigDict(frozen=True, extra="forbid")

    val_fraction: Annotated[float, number(lo=0, hi=1, hi_open=True)] = 0.1
    split_seed: Annotated[int, number(lo=0, integer=True)] = 0
    max_train: Annotated[int | None, number(lo=1, integer=True, nullable=True)] = None
    max_test: Annotated[int | None, number(lo=1, integer=True, nullable=True)] = None


def _cause(exc: ValidationError) -> tuple[str, str]:
    """The first failing key's place and its rule's text (pydantic's own text for its own checks)."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    return ".".join(str(part) for part in error["loc"]), str(cause if cause is not None else error["msg"])


def first_error(exc: ValidationError, where: str = "") -> ConfigError:
    """A pydantic error as one line: the first failing key, named with its place, and why."""
    key, text = _cause(exc)
    return ConfigError(f"{where}{key}: {text}")


def validated(model: type[BaseModel], values: dict, where: str = ""):
    """`model` built from `values`, or ConfigError naming the first bad key under `where`."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise first_error(exc, where) from None


@functools.cache
def _adapter(key: str) -> TypeAdapter:
    field = TrainingSettings.model_fields[key]
    return TypeAdapter(Annotated[(field.annotation, *field.metadata)])  # the field's type with its rule


def check_setting(name: str, key: str, value):
    """One training key's value checked as params.yaml checks it (a study's grid value, a search
    space's bound); `name` is how the message names it. Returns the value as validated."""
    try:
        return _adapter(key).validate_python(value)
    except ValidationError as exc:
        raise ConfigError(f"{name}: {_cause(exc)[1]}") from None
