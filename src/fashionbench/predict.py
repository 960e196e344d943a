"""`fashionbench predict PATH...`: classify image files with a trained run or an MLflow model.

PATH is an image Pillow reads (PNG, JPEG, ...), a directory of them, or an IDX file of
28x28 images. Each picture is made into what the training data are: 28x28 grayscale, a
light object on a dark background, centred. A picture on a light background (a shirt
photographed on a white table) is inverted; `--invert auto` decides from the border,
and the choice is printed per image. An input that cannot be read gets one error line and
the others are still predicted (exit 1); a picture with almost no contrast gets a warning.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fashionbench.core.files import read_json
from fashionbench.core.idx import CLASS_NAMES, known_datasets
from fashionbench.core.paths import evaluation_path, metrics_path, run_dir, train_summary_path
from fashionbench.pictures import Picture, one_line, read_pictures

# Exit statuses: 0 every input predicted, 1 an input or the model failed, 2 a usage error (as argparse's).
FAILED, USAGE = 1, 2


class PredictError(Exception):
    """A bad run, model or params.yaml: one line naming it."""


def params_runs() -> list[str]:
    """The run names of params.yaml, read leniently: a key that validation would reject elsewhere
    in the file does not stop predict."""
    import yaml

    from fashionbench.core.config import PARAMS_FILE

    try:
        runs = (yaml.safe_load(PARAMS_FILE.read_text()) or {}).get("runs")
    except FileNotFoundError:
        raise PredictError(f"{PARAMS_FILE}: not found (run from the repository root, or pass --model-uri)") from None
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise PredictError(f"{PARAMS_FILE}: expected YAML with a runs mapping ({one_line(exc)})") from None
    if not isinstance(runs, dict):
        raise PredictError(f"{PARAMS_FILE}: runs: expected a mapping of <model>-<dataset> names to entries")
    return list(runs)


def is_trained(run: str) -> bool:
    """Whether this clone holds the run's model (models/ is DVC's, not git's: a fresh clone has none)."""
    return train_summary_path(run).is_file()


def check_run(run: str, runs: list[str]) -> None:
    """--run must name a run of params.yaml that is trained in this clone."""
    if run not in runs:
        left = f" ({run_dir(run)}/ is left from a run no longer in params.yaml)" if run_dir(run).is_dir() else ""
        raise PredictError(f"--run {run}: unknown run{left}; expected one of params.yaml's runs: {', '.join(runs) or 'none'}")
    if not is_trained(run):
        raise PredictError(f"--run {run}: not trained in this clone ({train_summary_path(run)} not found); "
                           f"train it with `dvc repro train@{run}`")


def read_record(path: Path) -> dict:
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        raise PredictError(f"{path}: expected a JSON object written by the pipeline ({one_line(exc)})") from None
    if not isinstance(record, dict):
        raise PredictError(f"{path}: expected a JSON object written by the pipeline, got {type(record).__name__}")
    return record


def best_run(dataset: str, runs: list[str]) -> str:
    """The best test accuracy on `dataset` among the runs of params.yaml trained and evaluated in
    this clone: metrics/ and plots/eval/ are committed, so they can outlive a run removed from
    params.yaml, and come with a clone whose models were never trained or pulled."""
    scored = []
    for run in runs:
        if not (is_trained(run) and metrics_path(run).is_file() and evaluation_path(run).is_file()):
            continue
        accuracy = read_record(metrics_path(run)).get("test_accuracy")
        if isinstance(accuracy, (int, float)) and read_record(evaluation_path(run)).get("dataset") == dataset:
            scored.append((accuracy, run))
    if not scored:
        raise PredictError(f"no run of params.yaml is trained and evaluated on {dataset} in this clone; "
                           "train and evaluate one with `dvc repro evaluate@<run>`, or every run with `make repro`")
    return max(scored)[1]


def local_model(run: str):
    """(predict function uint8 (N, 28, 28) -> logits, dataset) of a trained run's first seed."""
    import torch

    from fashionbench.core.engine import predict
    from fashionbench.core.evaluation import load_checkpoint
    from fashionbench.core.schema import ConfigError, RunConfig

    summary = train_summary_path(run)
    config = read_record(summary).get("config")
    try:
        if not isinstance(config, dict):
            raise ConfigError(f"{summary}: config: expected the run's config, as the train stage writes it")
        cfg = RunConfig.stored(config, f"{summary}: config.")
    except ConfigError as exc:
        raise PredictError(str(exc)) from None
    try:
        model = load_checkpoint(cfg, cfg.seeds[0], torch.device("cpu"))
    except Exception as exc:  # noqa: BLE001 - our loader, safetensors and torch each raise their own kind
        raise PredictError(f"{run_dir(run)}: expected a loadable checkpoint of seed {cfg.seeds[0]} ({one_line(exc)})") from None
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


def chosen_model(args):
    """(predict function, dataset, label) of --model-uri, --run, or the best run trained here."""
    if args.model_uri:
        return mlflow_model(args.model_uri), args.dataset, args.model_uri
    runs = params_runs()
    if args.run:
        check_run(args.run, runs)
    run = args.run or best_run(args.dataset, runs)
    classify, dataset = local_model(run)
    return classify, dataset, f"run {run}"


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


def print_predictions(label: str, dataset: str, pictures: list[Picture], results: list[list[dict]],
                      errors: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"model": label, "dataset": dataset, "predictions": [
            {"image": p.source, "inverted": p.inverted, "warning": p.warning, "top": r} for p, r in zip(pictures, results)],
            "errors": errors}, indent=2))
        return
    print(f"model: {label} ({dataset})")
    for picture, result in zip(pictures, results):
        how = "" if picture.inverted is None else (" (inverted: light background)" if picture.inverted
                                                   else " (as is: dark background)")
        warning = f"; warning: {picture.warning}" if picture.warning else ""
        print(f"{picture.source}{how}: " + ", ".join(f"{r['class']} {100 * r['probability']:.1f}%" for r in result) + warning)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fashionbench predict", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, directories of them, or IDX files")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", help="a run of params.yaml trained here (default: the best of them on --dataset)")
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
    if not 1 <= args.top_k <= 10:
        print(f"error: --top-k {args.top_k}: expected 1 to 10", file=sys.stderr)
        return USAGE
    try:
        classify, dataset, label = (None, args.dataset, None) if args.request_json else chosen_model(args)
    except PredictError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return FAILED
    pictures, errors = read_pictures(args.paths, args.invert, dataset)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if not pictures:
        return FAILED
    if args.request_json:
        print(json.dumps({"inputs": serving_inputs(np.stack([p.pixels for p in pictures])).tolist()}))
    else:
        probabilities = softmax(classify(np.stack([p.pixels for p in pictures])).astype(np.float64))
        print_predictions(label, dataset, pictures, top_k(probabilities, CLASS_NAMES[dataset], args.top_k), errors, args.json)
    return FAILED if errors else 0


if __name__ == "__main__":
    sys.exit(main())
