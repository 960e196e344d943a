"""`fashionbench predict PATH...`: classify image files with a trained run or an MLflow model.

PATH is an image Pillow reads (PNG, JPEG, ...), a directory of them, or an IDX file of
28x28 images. Each picture is made into what the training data are: 28x28 grayscale, a
light object on a dark background, centred. A picture on a light background (a shirt
photographed on a white table) is inverted; `--invert auto` decides from the border,
and the choice is printed per image.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashionbench.core.files import read_json
from fashionbench.core.idx import CLASS_NAMES, DataError, known_datasets, parse_idx, read_idx_bytes
from fashionbench.core.paths import METRICS_DIR, evaluation_path

# How big the object is drawn in the 28x28 frame, as each dataset was made: Fashion-MNIST
# resized each product's longest edge to 28; MNIST fitted each digit into a 20x20 box.
OBJECT_SIZE = {"fashion_mnist": 28, "mnist": 20}


IDX_SUFFIXES = ("-ubyte", "-ubyte.gz", ".idx", ".idx.gz")


class PredictError(Exception):
    """A bad input to predict: one line naming the file or the run."""


@dataclass
class Picture:
    source: str            # the file (and the index inside an IDX file)
    pixels: np.ndarray     # uint8 (28, 28), light object on dark
    inverted: bool | None  # None: IDX images, used as they are


def is_idx(path: Path) -> bool:
    return path.name.endswith(IDX_SUFFIXES)


def image_files(directory: Path) -> list[Path]:
    from PIL import Image

    readable = {ext.lower() for ext in Image.registered_extensions()}
    files = sorted(p for p in directory.iterdir() if p.is_file() and (p.suffix.lower() in readable or is_idx(p)))
    if not files:
        raise PredictError(f"{directory}: no images in this directory (expected files Pillow reads, or IDX)")
    return files


def light_background(gray: np.ndarray) -> bool:
    """Whether the picture's border is mostly light: the object is then dark on light."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border)) > 127


def to_training_format(gray: np.ndarray, invert: bool, dataset: str) -> np.ndarray:
    """Grayscale of any size -> uint8 28x28, object light on dark, cropped to it, its longest
    side scaled to the dataset's object size, centred. A 28x28 picture is taken as already
    framed (a dataset image saved as PNG comes back exactly)."""
    from PIL import Image

    if invert:
        gray = 255 - gray
    if gray.shape == (28, 28):
        return np.ascontiguousarray(gray, dtype=np.uint8)
    ink = np.argwhere(gray > 32)  # the object: what stands out of the dark background
    if len(ink):
        (top, left), (bottom, right) = ink.min(0), ink.max(0) + 1
        gray = gray[top:bottom, left:right]
    size = OBJECT_SIZE[dataset]
    scale = size / max(gray.shape)
    width, height = max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale))
    thumb = Image.fromarray(gray).resize((width, height), Image.Resampling.LANCZOS)
    frame = Image.new("L", (28, 28), 0)
    frame.paste(thumb, ((28 - width) // 2, (28 - height) // 2))
    return np.asarray(frame, dtype=np.uint8)


def read_image(path: Path, invert: str, dataset: str) -> Picture:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated or corrupt file fails here, not later
            gray = np.asarray(image.convert("L"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise PredictError(f"{path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow reports corrupt data as these
        raise PredictError(f"{path}: corrupt or truncated image ({exc})") from None
    flip = light_background(gray) if invert == "auto" else invert == "yes"
    return Picture(str(path), to_training_format(gray, flip, dataset), flip)


def read_idx_images(path: Path) -> list[Picture]:
    try:
        images = parse_idx(read_idx_bytes(path), str(path))
    except DataError as exc:
        raise PredictError(str(exc)) from None
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise PredictError(f"{path}: expected IDX images of shape (N, 28, 28), got {images.shape}")
    return [Picture(f"{path}[{i}]", images[i], None) for i in range(len(images))]


def read_pictures(paths: list[str], invert: str, dataset: str) -> list[Picture]:
    pictures = []
    for name in paths:
        path = Path(name)
        if not path.exists():
            raise PredictError(f"{path}: no such file or directory")
        files = image_files(path) if path.is_dir() else [path]
        for file in files:
            pictures += read_idx_images(file) if is_idx(file) else [read_image(file, invert, dataset)]
    return pictures


def best_run(dataset: str, metrics_dir: Path = METRICS_DIR) -> str:
    """The evaluated run with the best test accuracy on `dataset` (its dataset: plots/eval/<run>.json)."""
    scored = []
    for path in sorted(metrics_dir.glob("*.json")):
        m = read_json(path)
        details = evaluation_path(path.stem)
        if (isinstance(m.get("test_accuracy"), (int, float)) and details.is_file()
                and read_json(details).get("dataset") == dataset):
            scored.append((m["test_accuracy"], path.stem))
    if not scored:
        raise PredictError(f"{metrics_dir}: no evaluated run on {dataset}; run `dvc repro` first, or pass --run")
    return max(scored)[1]


def local_model(run: str):
    """(predict function uint8 (N, 28, 28) -> logits, dataset) of a trained run's first seed."""
    import torch

    from fashionbench.core.engine import predict
    from fashionbench.core.evaluation import load_checkpoint
    from fashionbench.core.paths import train_summary_path
    from fashionbench.core.schema import ConfigError, RunConfig

    summary = train_summary_path(run)
    if not summary.is_file():
        raise PredictError(f"--run {run}: not trained ({summary} not found); runs trained here: "
                           f"{', '.join(sorted(p.parent.name for p in summary.parent.parent.glob('*/train.json'))) or 'none'}")
    try:
        cfg = RunConfig.stored(read_json(summary)["config"], f"{summary}: config.")
    except ConfigError as exc:
        raise PredictError(str(exc)) from None
    model = load_checkpoint(cfg, cfg.seeds[0], torch.device("cpu"))
    return (lambda images: predict(model, torch.from_numpy(images), 256, cfg.precision, cfg.tta).numpy()), cfg.dataset


def mlflow_model(uri: str):
    """A predict function for any MLflow model URI (models:/name@alias, runs:/id/model, a path)."""
    import logging

    import mlflow.pyfunc

    from fashionbench.tracking.store import tracking_uri

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines (store setup) are not ours to print
    mlflow.set_tracking_uri(tracking_uri())
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # noqa: BLE001 - MLflow raises several kinds for a URI that does not resolve
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PredictError(f"--model-uri {uri}: does not resolve ({first})") from None
    return lambda images: np.asarray(model.predict(serving_inputs(images)))


def serving_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> what the logged model's signature takes: float32 (N, 1, 28, 28) in [0, 1]."""
    return (images[:, None] / np.float32(255.0)).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def top_k(probabilities: np.ndarray, names: list[str], k: int) -> list[list[dict]]:
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[{"class": names[c], "index": int(c), "probability": round(float(p[c]), 4)} for c in row]
            for row, p in zip(order, probabilities)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fashionbench predict", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, directories of them, or IDX files")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", help="a trained run (default: the best test accuracy on --dataset)")
    source.add_argument("--model-uri", help="any MLflow model URI, e.g. models:/fashionbench-<run>@champion")
    parser.add_argument("--dataset", default="fashion_mnist", choices=known_datasets(),
                        help="whose classes (and best run) to use (default fashion_mnist)")
    parser.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                        help="make a dark-on-light picture light-on-dark (auto: when its border is light)")
    parser.add_argument("--top-k", type=int, default=3, help="classes to print per image (default 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--request-json", action="store_true",
                        help="print the prepared images as an `mlflow models serve` request body and exit (no model)")
    args = parser.parse_args(argv)
    try:
        if not 1 <= args.top_k <= 10:
            raise PredictError(f"--top-k {args.top_k}: expected 1 to 10")
        if args.request_json:
            pictures = read_pictures(args.paths, args.invert, args.dataset)
            print(json.dumps({"inputs": serving_inputs(np.stack([p.pixels for p in pictures])).tolist()}))
            return 0
        if args.model_uri:
            classify, dataset, label = mlflow_model(args.model_uri), args.dataset, args.model_uri
        else:
            run = args.run or best_run(args.dataset)
            classify, dataset = local_model(run)
            label = f"run {run}"
        pictures = read_pictures(args.paths, args.invert, dataset)
        probabilities = softmax(classify(np.stack([p.pixels for p in pictures])).astype(np.float64))
    except PredictError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    results = top_k(probabilities, CLASS_NAMES[dataset], args.top_k)
    if args.json:
        print(json.dumps({"model": label, "dataset": dataset, "predictions": [
            {"image": p.source, "inverted": p.inverted, "top": r} for p, r in zip(pictures, results)]}, indent=2))
        return 0
    print(f"model: {label} ({dataset})")
    for picture, result in zip(pictures, results):
        how = "" if picture.inverted is None else (" (inverted: light background)" if picture.inverted
                                                   else " (as is: dark background)")
        print(f"{picture.source}{how}: " + ", ".join(f"{r['class']} {100 * r['probability']:.1f}%" for r in result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
