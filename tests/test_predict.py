"""`fashionbench predict`: image files become what the training data are, each bad input gets
one line naming it while the others are still predicted, and the default model is the best run
of params.yaml trained in this clone."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fashionbench import pictures, predict
from fashionbench.core.paths import evaluation_path, metrics_path
from fashionbench.core.splits import load_prepared
from fashionbench.stages import evaluate, train

RUN = "mlp_64-fashion_mnist"


@pytest.fixture
def trained(workspace):
    """The workspace with RUN trained and evaluated (no MLflow)."""
    assert train.main([RUN, "--no-mlflow"]) == 0
    assert evaluate.main([RUN]) == 0
    return workspace


def evaluation_predictions(run: str, labels: np.ndarray) -> np.ndarray:
    """What evaluate predicted for every test image: the label, except where it recorded a miss."""
    details = json.loads(evaluation_path(run).read_text())
    pred = labels.copy()
    pred[details["misclassified_ids"]] = details["misclassified_predictions"]
    return pred


def test_pngs_of_test_images_get_the_predictions_evaluate_made(trained, tmp_path, capsys):
    data = load_prepared("fashion_mnist")
    images, labels = data["test_images"].numpy(), data["test_labels"].numpy()
    ids = list(range(12))
    for i in ids:
        Image.fromarray(images[i]).save(tmp_path / f"test{i:02d}.png")
    assert predict.main([str(tmp_path), "--run", RUN, "--json", "--top-k", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    got = [p["top"][0]["index"] for p in out["predictions"]]
    assert got == evaluation_predictions(RUN, labels)[ids].tolist()
    assert all(p["inverted"] is False for p in out["predictions"])


def test_the_default_model_is_the_best_evaluated_run_on_the_dataset(trained, capsys, tmp_path):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    assert predict.main([str(tmp_path / "x.png")]) == 0
    assert capsys.readouterr().out.startswith(f"model: run {RUN} (fashion_mnist)")


def test_an_idx_file_is_read_as_its_images(trained, fake_mirror, capsys):
    path = fake_mirror / "fashion_mnist" / "t10k-images-idx3-ubyte.gz"
    assert predict.main([str(path), "--run", RUN, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["predictions"]) == 100 and out["predictions"][0]["image"] == f"{path}[0]"
    assert len(out["predictions"][0]["top"]) == 3


def dark_shirt_on_white(size=(300, 200)) -> Image.Image:
    """A colour photo-like picture: a dark object in the middle of a light background."""
    image = Image.new("RGB", size, (240, 238, 235))
    image.paste((40, 30, 90), (60, 50, 240, 150))
    return image


def test_a_light_background_picture_is_inverted_cropped_and_centred(tmp_path):
    path = tmp_path / "shirt.jpg"
    dark_shirt_on_white().save(path)
    picture = pictures.read_image(path, "auto", "fashion_mnist")
    assert picture.inverted is True
    assert picture.pixels.shape == (28, 28) and picture.pixels.dtype == np.uint8
    assert picture.pixels[14, 14] > 150 and picture.pixels[0, 0] < 30  # light object, dark corners
    ink = np.argwhere(picture.pixels > 32)
    assert ink[:, 1].min() == 0 and ink[:, 1].max() == 27  # longest side fills the frame (Fashion-MNIST)


def test_invert_flag_overrides_the_border_rule(tmp_path):
    path = tmp_path / "shirt.png"
    dark_shirt_on_white().save(path)
    assert pictures.read_image(path, "no", "fashion_mnist").inverted is False


def test_the_choice_is_printed_per_image(trained, tmp_path, capsys):
    dark_shirt_on_white().save(tmp_path / "shirt.png")
    assert predict.main([str(tmp_path / "shirt.png"), "--run", RUN]) == 0
    assert "shirt.png (inverted: light background): " in capsys.readouterr().out


def test_a_digit_is_fitted_into_mnists_20_pixel_box(tmp_path):
    image = Image.new("L", (100, 100), 0)
    image.paste(255, (40, 10, 60, 90))
    image.save(tmp_path / "one.png")
    ink = np.argwhere(pictures.read_image(tmp_path / "one.png", "auto", "mnist").pixels > 32)
    assert ink[:, 0].max() - ink[:, 0].min() + 1 == 20


def corrupt_png(path):
    """A real PNG cut in the middle of its image data."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


BAD_INPUTS = {
    "not an image": (lambda d: (d / "notes.txt").write_text("hello") and [d / "notes.txt"],
                     "notes.txt: not an image Pillow can read (expected PNG, JPEG"),
    "empty directory": (lambda d: (d / "empty").mkdir() or [d / "empty"], "empty: no images in this directory (expected"),
    "missing path": (lambda d: [d / "nope.png"], "nope.png: no such file or directory"),
    "corrupt png": (lambda d: corrupt_png(d / "bad.png") or [d / "bad.png"],
                    "bad.png: corrupt or truncated image (image file is truncated; expected a complete image file)"),
    "empty file": (lambda d: (d / "zero.png").write_bytes(b"") or [d / "zero.png"], "zero.png: empty file (expected"),
    "not an idx file": (lambda d: (d / "x-ubyte").write_bytes(b"hello") and [d / "x-ubyte"], "x-ubyte: not an IDX file"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_bad_input_gets_one_line_naming_the_file(trained, tmp_path, capsys, case):
    make, expected = BAD_INPUTS[case]
    paths = make(tmp_path)
    assert predict.main([str(p) for p in paths] + ["--run", RUN]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err


def test_bad_files_in_a_directory_get_a_line_each_and_the_others_are_predicted(trained, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    dark_shirt_on_white().save(photos / "a_shirt.png")
    corrupt_png(photos / "b_cut.png")
    (photos / "c_text.png").write_text("not a picture")
    (photos / "d_empty.png").write_bytes(b"")
    dark_shirt_on_white((120, 160)).save(photos / "e_shirt.jpg")
    assert predict.main([str(photos), "--run", RUN]) == 1  # some inputs failed
    out, err = capsys.readouterr()
    assert [line.split(" (")[0] for line in out.splitlines()[1:]] == [str(photos / "a_shirt.png"), str(photos / "e_shirt.jpg")]
    errors = err.splitlines()
    assert [line.split(": ")[1] for line in errors] == [str(photos / f) for f in ("b_cut.png", "c_text.png", "d_empty.png")]
    assert all(line.startswith("error: ") and "expected" in line for line in errors)


def test_bad_files_in_a_list_are_listed_under_errors_in_json(trained, tmp_path, capsys):
    dark_shirt_on_white().save(tmp_path / "shirt.png")
    (tmp_path / "notes.png").write_text("hello")
    paths = [tmp_path / "missing.png", tmp_path / "shirt.png", tmp_path / "notes.png"]
    assert predict.main([str(p) for p in paths] + ["--run", RUN, "--json"]) == 1
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert [p["image"] for p in result["predictions"]] == [str(tmp_path / "shirt.png")]
    assert result["errors"] == [line.removeprefix("error: ") for line in err.splitlines()]
    assert [e.split(": ")[0] for e in result["errors"]] == [str(tmp_path / "missing.png"), str(tmp_path / "notes.png")]


def test_the_request_body_leaves_out_a_bad_file_and_exits_1(tmp_path, capsys):
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(tmp_path / "good.png")
    corrupt_png(tmp_path / "bad.png")
    assert predict.main([str(tmp_path), "--request-json"]) == 1
    out, err = capsys.readouterr()
    assert len(json.loads(out)["inputs"]) == 1 and err.count("\n") == 1 and "bad.png: corrupt or truncated" in err


def test_a_picture_too_large_to_decode_safely_is_refused_by_name(tmp_path, monkeypatch):
    Image.new("L", (100, 100), 0).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses twice this: a decompression bomb
    with pytest.raises(pictures.UnreadableInput, match="huge.png: too large to decode safely"):
        pictures.read_image(tmp_path / "huge.png", "auto", "fashion_mnist")


def test_an_out_of_range_top_k_is_a_usage_error(tmp_path, capsys):
    assert predict.main([str(tmp_path), "--top-k", "0"]) == 2
    assert capsys.readouterr().err == "error: --top-k 0: expected 1 to 10\n"


def speck_on_white() -> Image.Image:
    image = Image.new("L", (200, 200), 255)
    image.putpixel((100, 100), 0)
    return image


NO_CONTRAST = {
    "1x1 grey": lambda: Image.new("L", (1, 1), 128),
    "uniform colour photo": lambda: Image.new("RGB", (300, 200), (90, 120, 60)),  # framing alone would draw a rectangle
    "grey noise": lambda: Image.fromarray((128 + np.random.default_rng(0).integers(-4, 5, (64, 64))).astype(np.uint8)),
    "black 28x28": lambda: Image.new("L", (28, 28), 0),
    "a speck on white": speck_on_white,  # cropped to the speck: a uniform 28x28 picture
}


@pytest.mark.parametrize("case", sorted(NO_CONTRAST))
def test_a_picture_with_almost_no_contrast_gets_a_warning(tmp_path, case):
    NO_CONTRAST[case]().save(tmp_path / "x.png")
    assert "almost no contrast" in pictures.read_image(tmp_path / "x.png", "auto", "fashion_mnist").warning


def test_pictures_of_an_object_get_no_warning(tmp_path):
    from fake_idx import make_images

    dark_shirt_on_white().save(tmp_path / "shirt.png")  # a solid object: uniform once cropped, not once framed
    Image.fromarray(make_images(np.arange(10), np.random.default_rng(0))[3]).save(tmp_path / "dataset_image.png")
    for name in ("shirt.png", "dataset_image.png"):
        assert pictures.read_image(tmp_path / name, "auto", "fashion_mnist").warning is None


def test_the_low_contrast_warning_is_printed_beside_the_prediction(trained, tmp_path, capsys):
    Image.new("L", (1, 1), 128).save(tmp_path / "grey.png")
    dark_shirt_on_white().save(tmp_path / "shirt.png")
    assert predict.main([str(tmp_path), "--run", RUN]) == 0  # a warning is no failure
    grey, shirt = capsys.readouterr().out.splitlines()[1:]
    assert "%; warning: almost no contrast (pixel std 0.0 of 255, below 10)" in grey and "; warning:" not in shirt
    assert predict.main([str(tmp_path), "--run", RUN, "--json"]) == 0
    grey, shirt = json.loads(capsys.readouterr().out)["predictions"]
    assert grey["warning"].startswith("almost no contrast") and shirt["warning"] is None


def test_an_unknown_run_is_named_with_the_runs_of_params(trained, tmp_path, capsys):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    assert predict.main([str(tmp_path / "x.png"), "--run", "resnet-fashion_mnist"]) == 1
    runs = ", ".join(yaml.safe_load(Path("params.yaml").read_text())["runs"])  # lenet5_modern-mnist and RUN
    expected = f"error: --run resnet-fashion_mnist: unknown run; expected one of params.yaml's runs: {runs}\n"
    assert capsys.readouterr().err == expected


def test_a_run_of_params_not_trained_here_says_how_to_train_it(trained, tmp_path, capsys):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    assert predict.main([str(tmp_path / "x.png"), "--run", "lenet5_modern-mnist"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --run lenet5_modern-mnist: not trained in this clone")
    assert "`dvc repro train@lenet5_modern-mnist`" in err


def evaluated(run: str, dataset: str, accuracy: float) -> None:
    """What evaluate leaves of a run in metrics/ and plots/eval/ (committed to git), without its model."""
    for path, record in ((metrics_path(run), {"test_accuracy": accuracy}), (evaluation_path(run), {"dataset": dataset})):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))


def test_a_run_no_longer_in_params_is_never_the_default(trained, tmp_path, capsys):
    evaluated("cnn_small-fashion_mnist", "fashion_mnist", 99.9)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    assert predict.main([str(tmp_path / "x.png")]) == 0
    assert capsys.readouterr().out.startswith(f"model: run {RUN} (fashion_mnist)")


def test_a_run_of_params_evaluated_but_not_trained_here_is_never_the_default(trained, tmp_path, capsys):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["runs"]["cnn_small-fashion_mnist"] = {"model": "cnn_small", "dataset": "fashion_mnist"}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    evaluated("cnn_small-fashion_mnist", "fashion_mnist", 99.9)  # as a fresh clone has it: no models/
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    assert predict.main([str(tmp_path / "x.png")]) == 0
    assert capsys.readouterr().out.startswith(f"model: run {RUN} (fashion_mnist)")


def test_with_no_run_trained_here_the_default_says_how_to_train_one(workspace, tmp_path, capsys):
    evaluated(RUN, "fashion_mnist", 85.0)  # a fresh clone: evaluations committed, models not
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    assert predict.main([str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run of params.yaml is trained and evaluated on fashion_mnist" in err
    assert "`dvc repro evaluate@<run>`" in err and "--run" not in err


def test_a_model_uri_that_does_not_resolve_is_named(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    assert predict.main([str(tmp_path / "x.png"), "--model-uri", "models:/fashionbench-nope@champion"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --model-uri models:/fashionbench-nope@champion: does not resolve")
