"""`fashionbench predict`: image files become what the training data are, and each bad input
gets one line naming it."""
import json

import numpy as np
import pytest
from PIL import Image

from fashionbench import predict
from fashionbench.core.paths import evaluation_path
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
    picture = predict.read_image(path, "auto", "fashion_mnist")
    assert picture.inverted is True
    assert picture.pixels.shape == (28, 28) and picture.pixels.dtype == np.uint8
    assert picture.pixels[14, 14] > 150 and picture.pixels[0, 0] < 30  # light object, dark corners
    ink = np.argwhere(picture.pixels > 32)
    assert ink[:, 1].min() == 0 and ink[:, 1].max() == 27  # longest side fills the frame (Fashion-MNIST)


def test_invert_flag_overrides_the_border_rule(tmp_path):
    path = tmp_path / "shirt.png"
    dark_shirt_on_white().save(path)
    assert predict.read_image(path, "no", "fashion_mnist").inverted is False


def test_the_choice_is_printed_per_image(trained, tmp_path, capsys):
    dark_shirt_on_white().save(tmp_path / "shirt.png")
    assert predict.main([str(tmp_path / "shirt.png"), "--run", RUN]) == 0
    assert "shirt.png (inverted: light background): " in capsys.readouterr().out


def test_a_digit_is_fitted_into_mnists_20_pixel_box(tmp_path):
    image = Image.new("L", (100, 100), 0)
    image.paste(255, (40, 10, 60, 90))
    image.save(tmp_path / "one.png")
    ink = np.argwhere(predict.read_image(tmp_path / "one.png", "auto", "mnist").pixels > 32)
    assert ink[:, 0].max() - ink[:, 0].min() + 1 == 20


def corrupt_png(path):
    """A real PNG cut in the middle of its image data."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


BAD_INPUTS = {
    "not an image": (lambda d: (d / "notes.txt").write_text("hello") and [d / "notes.txt"], "notes.txt: not an image Pillow can read"),
    "empty directory": (lambda d: (d / "empty").mkdir() or [d / "empty"], "empty: no images in this directory"),
    "missing path": (lambda d: [d / "nope.png"], "nope.png: no such file or directory"),
    "corrupt png": (lambda d: corrupt_png(d / "bad.png") or [d / "bad.png"], "bad.png: corrupt or truncated image"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_bad_input_gets_one_line_naming_the_file(trained, tmp_path, capsys, case):
    make, expected = BAD_INPUTS[case]
    paths = make(tmp_path)
    assert predict.main([str(p) for p in paths] + ["--run", RUN]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err


def test_an_unknown_run_is_named(trained, tmp_path, capsys):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    assert predict.main([str(tmp_path / "x.png"), "--run", "resnet-fashion_mnist"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --run resnet-fashion_mnist: not trained") and f"trained here: {RUN}" in err


def test_a_model_uri_that_does_not_resolve_is_named(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    assert predict.main([str(tmp_path / "x.png"), "--model-uri", "models:/fashionbench-nope@champion"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --model-uri models:/fashionbench-nope@champion: does not resolve")
