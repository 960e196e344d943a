"""benchmarks/validation_probe.py: the tool that chose the fast runs' hyperparameters shows validation only."""
import importlib.util

from conftest import REPO

spec = importlib.util.spec_from_file_location("validation_probe", REPO / "benchmarks" / "validation_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_the_probe_prints_validation_accuracy_per_epoch_and_no_test_number(workspace, capsys):
    assert probe.main(["fashion_mnist", '{"width": 4, "epochs": 2, "augment": "crop_flip"}']) == 0
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch")] == ["1", "2"]
    assert "val accuracy" in out and "test" not in out


def test_a_bad_entry_is_named_in_one_line(workspace, capsys):
    assert probe.main(["mnist", '{"augment": "crop_flip"}']) == 1
    assert capsys.readouterr().err.startswith("error: runs.probe.augment: crop_flip mirrors images")


def test_the_probe_trains_on_the_threads_fashionbench_threads_fixes(workspace, monkeypatch):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setenv("FASHIONBENCH_THREADS", "1")
    try:
        assert probe.main(["fashion_mnist", '{"width": 4, "epochs": 1}']) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_bad_fashionbench_threads_stops_the_probe_in_one_line(workspace, monkeypatch, capsys):
    monkeypatch.setenv("FASHIONBENCH_THREADS", "two")
    assert probe.main(["fashion_mnist", '{"width": 4, "epochs": 1}']) == 1
    assert capsys.readouterr().err.startswith("error: FASHIONBENCH_THREADS=two: expected a positive integer")


tta_spec = importlib.util.spec_from_file_location("tta_probe", REPO / "benchmarks" / "tta_probe.py")
tta_probe = importlib.util.module_from_spec(tta_spec)
tta_spec.loader.exec_module(tta_probe)


def test_the_tta_probe_scores_every_mode_on_validation_with_the_pipelines_checkpoints(workspace, capsys):
    from fashionbench.stages import train

    assert train.main(["lenet5_modern-mnist", "--no-mlflow"]) == 0  # two seeds
    capsys.readouterr()  # training's own summary line
    assert tta_probe.main(["lenet5_modern-mnist"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert [row[0] for row in rows] == ["none", "shift"]  # no mirrors for digits
    assert all(len(row) == 5 for row in rows) and "validation" in out and "test" not in out


def test_the_tta_probe_of_an_untrained_run_is_one_line(workspace, capsys):
    assert tta_probe.main(["mlp_64-fashion_mnist"]) == 1
    assert capsys.readouterr().err.startswith("error: models/mlp_64-fashion_mnist/seed0")
