"""The stage entry points, run in-process in a scratch workspace (no DVC, no MLflow)."""
import json

import pytest
import yaml

from fashionbench.core.files import read_json
from fashionbench.core.paths import (
    checkpoint_path,
    confusion_path,
    evaluation_path,
    figures_dir,
    history_path,
    metrics_path,
    train_summary_path,
)
from fashionbench.core.splits import load_prepared
from fashionbench.stages import evaluate, preprocess, report, train

from conftest import set_run


def test_preprocess_splits_train_into_train_and_validation(workspace):
    data = load_prepared("fashion_mnist")
    assert len(data["train_labels"]) + len(data["val_labels"]) == 200
    assert len(data["val_labels"]) == 20  # val_fraction 0.1
    assert data["train_images"].dtype.is_floating_point is False and data["train_images"].shape[1:] == (28, 28)


def test_preprocess_smoke_size_keeps_the_first_images(workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["preprocess"].update(max_train=50, max_test=30)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    assert preprocess.main(["mnist"]) == 0
    data = load_prepared("mnist")
    assert len(data["train_labels"]) + len(data["val_labels"]) == 50 and len(data["test_labels"]) == 30


def test_train_then_evaluate_writes_every_output(workspace):
    run = "mlp_64-fashion_mnist"
    assert train.main([run, "--no-mlflow"]) == 0
    assert checkpoint_path(run, 0).is_file() and history_path(run).is_file()
    assert evaluate.main([run]) == 0
    metrics = read_json(metrics_path(run))
    assert 0 <= metrics["test_accuracy"] <= 1
    details = read_json(evaluation_path(run))
    assert details["status"] == "completed" and len(details["per_class_accuracy"]) == 10
    matrix = details["confusion_matrix"]
    assert len(matrix) == 10 and sum(map(sum, matrix)) == 100
    assert len(details["misclassified_ids"]) == 100 - sum(matrix[i][i] for i in range(10))
    assert confusion_path(run).read_text().startswith("actual,predicted")
    for name in ("curves.png", "confusion.png", "misclassified.png"):
        assert (figures_dir(run) / name).stat().st_size > 1000


def test_metrics_file_holds_the_headline_numbers_only(workspace):
    run = "mlp_64-fashion_mnist"
    assert train.main([run, "--no-mlflow"]) == 0 and evaluate.main([run]) == 0
    metrics = read_json(metrics_path(run))
    assert list(metrics) == ["test_accuracy", "test_loss", "val_accuracy", "train_accuracy", "epochs_run", "train_seconds"]
    trained = read_json(train_summary_path(run))
    assert metrics["val_accuracy"] == trained["seeds"][0]["final"]["val_accuracy"]
    assert metrics["train_accuracy"] == trained["seeds"][0]["final"]["train_accuracy"]
    assert metrics["epochs_run"] == 1


def test_repeated_seeds_give_mean_std_and_per_seed_values(workspace):
    run = "lenet5_modern-mnist"
    assert train.main([run, "--no-mlflow"]) == 0
    assert evaluate.main([run]) == 0
    metrics = read_json(metrics_path(run))
    details = read_json(evaluation_path(run))
    assert details["seeds"] == 2 and len(details["test_accuracy_per_seed"]) == 2
    a, b = details["test_accuracy_per_seed"]
    assert metrics["test_accuracy"] == pytest.approx((a + b) / 2)
    assert metrics["test_accuracy_std"] == pytest.approx(abs(a - b) / 2 ** 0.5)


def test_forced_divergence_ends_with_status_diverged_and_valid_metrics(workspace):
    run = "mlp_64-fashion_mnist"
    set_run(workspace, run, optimizer="sgd", lr=1e12, epochs=5)
    assert train.main([run, "--no-mlflow"]) == 0
    assert evaluate.main([run]) == 0
    metrics = json.loads(metrics_path(run).read_text())  # strict JSON: no NaN
    details = json.loads(evaluation_path(run).read_text())
    assert details["status"] == "diverged" and 1 <= details["diverged_epoch"] < 5
    assert 0 <= metrics["test_accuracy"] <= 1


def test_bad_params_fail_before_training_with_one_line(workspace, capsys):
    run = "mlp_64-fashion_mnist"
    set_run(workspace, run, lr=-1)
    assert train.main([run, "--no-mlflow"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: runs.mlp_64-fashion_mnist.lr: expected > 0, got -1.0"
    assert not train_summary_path(run).exists()


def test_unknown_run_is_named(workspace, capsys):
    assert train.main(["nope", "--no-mlflow"]) == 1
    assert "runs.nope: no such run" in capsys.readouterr().err


def test_evaluate_before_train_says_what_to_run(workspace, capsys):
    assert evaluate.main(["mlp_64-fashion_mnist"]) == 1
    assert "dvc repro train@mlp_64-fashion_mnist" in capsys.readouterr().err


def test_report_puts_the_seed_number_beside_ours(workspace):
    for run in ("mlp_64-fashion_mnist", "lenet5_modern-mnist"):
        assert train.main([run, "--no-mlflow"]) == 0 and evaluate.main([run]) == 0
    assert report.main([]) == 0
    text = (workspace / "plots" / "report.md").read_text()
    ours = 100 * read_json(metrics_path("mlp_64-fashion_mnist"))["test_accuracy"]
    row = next(line for line in text.splitlines() if line.startswith("| mlp_64-fashion_mnist"))
    assert "| 000 |" in row and "| 87.10 |" in row and f"{ours:.2f}" in row and f"{ours - 87.1:+.2f}" in row
    assert (workspace / "plots" / "comparison.png").stat().st_size > 1000
    assert "Smoke settings" not in text


def test_report_sets_a_model_beyond_the_write_ups_in_its_own_section_beside_the_best_seed(workspace):
    run = "resnet_fast-mnist"
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["runs"][run] = {"model": "resnet_fast", "dataset": "mnist", "width": 4, "augment": "crop", "ema": 0.9}
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    assert train.main([run, "--no-mlflow"]) == 0 and evaluate.main([run]) == 0
    assert report.main([]) == 0
    zoo, beyond = (workspace / "plots" / "report.md").read_text().split("## Beyond the write-ups")
    assert f"| {run}" not in zoo
    row = next(line for line in beyond.splitlines() if line.startswith(f"| {run}"))
    ours = 100 * read_json(metrics_path(run))["test_accuracy"]
    assert "width 4, augment crop, EMA 0.9" in row and "| 99.07 (seed 002) |" in row  # lenet5_modern's
    assert f"{ours - 99.07:+.2f}" in row


def test_report_says_when_smoke_settings_cut_training_short(workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params.update(epochs=3, max_epochs=1)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    run = "mlp_64-fashion_mnist"
    assert train.main([run, "--no-mlflow"]) == 0 and evaluate.main([run]) == 0
    assert report.main([]) == 0
    text = (workspace / "plots" / "report.md").read_text()
    assert "**Smoke settings are on (max_epochs=1" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {run}"))
    assert row.endswith("(smoke settings) |")


@pytest.mark.parametrize("change, banner", [
    ({"max_epochs": 5}, None),  # above every run's epochs (1 here): cuts nothing
    ({"preprocess": {"val_fraction": 0.1, "split_seed": 0, "max_train": 50, "max_test": None}},
     "**Smoke settings are on (preprocess.max_train=50)"),
])
def test_the_smoke_banner_names_only_settings_that_cut_training(workspace, change, banner):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params.update(change)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    assert report.main([]) == 0
    text = (workspace / "plots" / "report.md").read_text()
    assert (banner in text) if banner else ("Smoke settings" not in text)


def test_a_metrics_file_without_its_details_still_gets_its_row(workspace):
    run = "mlp_64-fashion_mnist"
    assert train.main([run, "--no-mlflow"]) == 0 and evaluate.main([run]) == 0
    evaluation_path(run).unlink()
    assert report.main([]) == 0
    text = (workspace / "plots" / "report.md").read_text()
    assert next(line for line in text.splitlines() if line.startswith(f"| {run}"))


def test_val_fraction_zero_trains_on_every_image_with_no_validation_curves(workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["preprocess"]["val_fraction"] = 0
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    assert preprocess.main(["fashion_mnist"]) == 0
    assert len(load_prepared("fashion_mnist")["train_labels"]) == 200
    run = "mlp_64-fashion_mnist"
    assert train.main([run, "--no-mlflow"]) == 0
    header = history_path(run).read_text().splitlines()[0]
    assert "val_" not in header and "test_accuracy" in header
    assert evaluate.main([run]) == 0
    assert (figures_dir(run) / "curves.png").stat().st_size > 1000
    assert "val_accuracy" not in read_json(metrics_path(run))
    assert 0 <= read_json(metrics_path(run))["test_accuracy"] <= 1


def test_evaluate_rebuilds_the_model_train_json_records_not_todays_params(workspace):
    run = "mlp_64-fashion_mnist"
    assert train.main([run, "--no-mlflow"]) == 0
    set_run(workspace, run, width=128)  # params.yaml now asks for another model; not trained yet
    assert evaluate.main([run]) == 0
    assert read_json(evaluation_path(run))["parameters"] == read_json(train_summary_path(run))["parameters"]


def test_a_successful_training_leaves_no_resume_state(workspace):
    from fashionbench.core.paths import resume_dir

    run = "mlp_64-fashion_mnist"
    assert train.main([run, "--no-mlflow"]) == 0
    assert not resume_dir(run).exists()
