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
