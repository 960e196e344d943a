"""benchmarks/time_to_accuracy.py: the threshold rule, and the script end to end on tiny data."""
import importlib.util
import re
import sys

import pytest
import torch

from fashionbench.stages import train

from conftest import REPO, set_run

sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its sibling train_speed
spec = importlib.util.spec_from_file_location("time_to_accuracy", REPO / "benchmarks" / "time_to_accuracy.py")
tta_bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tta_bench)

TINY = {"model": "resnet_fast", "dataset": "fashion_mnist", "width": 4, "epochs": 2, "seeds": [0, 1],
        "augment": "crop_flip", "lr_schedule": "onecycle", "ema": 0.9, "tta": "flip"}


LIGHT = ["--matmul-size", "512"]  # the reference multiply's size does not change what is tested


def rows(*pairs):
    return [{"seconds": s, "test_accuracy": a} for s, a in pairs]


def test_a_threshold_is_reached_when_the_mean_over_seeds_reaches_it():
    histories = {0: rows((10, 0.91), (20, 0.935)), 1: rows((12, 0.89), (22, 0.925))}
    hit = tta_bench.time_to_accuracy(histories, 0.90)
    assert (hit["epoch"], hit["seconds"], hit["seed_seconds"]) == (1, 11, [10, 12])
    assert tta_bench.time_to_accuracy(histories, 0.93)["epoch"] == 2  # mean 0.93 at epoch 2
    assert tta_bench.time_to_accuracy(histories, 0.94) is None


def check_table(text: str) -> None:
    for threshold in ("90.0%", "92.0%", "93.0%", "94.0%", "95.0%"):
        assert re.search(rf"^\| {threshold} \| (\d+|not reached) \|", text, re.M), threshold
    share = float(re.search(r"- share: \*\*([\d.e-]+)\*\*", text).group(1))
    assert 0 < share < 2


def test_a_thresholds_cost_is_its_counted_flops_and_its_seconds_at_the_float32_multiply_rate():
    throughput = {"flops_per_step": 2e9, "flops_per_step_small": 1e9, "batch_size": 100}  # 20 MFLOP an image
    counted, equivalent = tta_bench.costs(300.0, 5, 60_000, throughput, float32_rate=200e9)
    assert counted == pytest.approx(20e6 * 60_000 * 5 / 1e12)  # 6 TFLOP
    assert equivalent == pytest.approx(300 * 200e9 / 1e12)  # 60 TFLOP-eq: 300 s at 200 GFLOP/s


def test_progressive_resizings_small_epochs_count_their_own_flops():
    throughput = {"flops_per_step": 2e9, "flops_per_step_small": 1e9, "batch_size": 100}
    counted, _ = tta_bench.costs(300.0, 5, 60_000, throughput, float32_rate=200e9, small_epochs=2)
    assert counted == pytest.approx((2 * 10e6 + 3 * 20e6) * 60_000 / 1e12)
    assert tta_bench.costs(30.0, 1, 60_000, throughput, 200e9, small_epochs=2)[0] == pytest.approx(10e6 * 60_000 / 1e12)


def test_each_row_gives_seconds_counted_tflop_and_tflop_eq(workspace, tmp_path):
    set_run(workspace, "mlp_64-fashion_mnist", **TINY)
    out = tmp_path / "t.md"
    assert tta_bench.main(["--run", "mlp_64-fashion_mnist", "--throughput-steps", "2", *LIGHT, "--output", str(out)]) == 0
    text = out.read_text()
    assert "| test accuracy | reached at epoch | training time (mean over seeds) | counted TFLOP | TFLOP-eq |" in text
    assert re.search(r"- float32 512 x 512 matrix multiply on the training's threads: \*\*\d+ GFLOP/s\*\*", text)
    assert re.search(r"TFLOP counted, [\d.]+ TFLOP-eq\.$", text, re.M)


def test_the_benchmark_trains_its_seeds_and_writes_the_table(workspace, tmp_path, capsys):
    set_run(workspace, "mlp_64-fashion_mnist", **TINY)
    out = tmp_path / "t.md"
    assert tta_bench.main(["--run", "mlp_64-fashion_mnist", "--throughput-steps", "2", *LIGHT, "--output", str(out)]) == 0
    text = out.read_text()
    check_table(text)
    assert "seeds 0, 1 trained by this command" in text and "over seeds 0, 1 (" in text  # the run's seeds


def test_the_benchmark_reads_the_pipelines_seeds(workspace, tmp_path):
    set_run(workspace, "mlp_64-fashion_mnist", **TINY)
    assert train.main(["mlp_64-fashion_mnist", "--no-mlflow"]) == 0
    out = tmp_path / "t.md"
    assert tta_bench.main(["--run", "mlp_64-fashion_mnist", "--from-pipeline", "--throughput-steps", "2", *LIGHT,
                           "--output", str(out)]) == 0
    text = out.read_text()
    check_table(text)
    assert "seeds 0, 1 trained by `dvc repro`" in text


def extra_seeds_study(workspace, threads: int | None) -> None:
    """studies/strong_seeds.json as `fashionbench study` writes it: seed 2 of the run as params.yaml has it."""
    import json

    trained = json.loads((workspace / "models" / "mlp_64-fashion_mnist" / "train.json").read_text())
    history = [{**row, "test_accuracy": 1.0} for row in trained["history"]["0"]]
    cell = {"experiment": "strong_seeds-defaults", "params": {},
            "configs": {"mlp_64-fashion_mnist": {**trained["config"], "seeds": [2]}},
            "runs": {"mlp_64-fashion_mnist": {"metrics": {"precision": trained["precision"], "threads": threads},
                                             "history": {"2": history}}}}
    (workspace / "studies").mkdir(exist_ok=True)
    (workspace / "studies" / "strong_seeds.json").write_text(json.dumps(
        {"study": "strong_seeds", "extra_seeds": True, "seeds": [2], "cells": [cell]}))


@pytest.mark.parametrize("same_threads", [True, False])
def test_the_pipelines_seeds_pool_an_extra_seeds_studys_trained_on_the_same_threads(workspace, tmp_path, same_threads):
    import json

    set_run(workspace, "mlp_64-fashion_mnist", **TINY)
    assert train.main(["mlp_64-fashion_mnist", "--no-mlflow"]) == 0
    threads = json.loads((workspace / "models" / "mlp_64-fashion_mnist" / "train.json").read_text())["threads"]
    extra_seeds_study(workspace, threads if same_threads else threads + 1)  # other threads: seconds not comparable
    out = tmp_path / "t.md"
    assert tta_bench.main(["--run", "mlp_64-fashion_mnist", "--from-pipeline", "--throughput-steps", "2", *LIGHT,
                           "--output", str(out)]) == 0
    text = out.read_text()
    assert ("over seeds 0, 1, 2 (" in text) is same_threads
    assert ("2 by `fashionbench study strong_seeds` on the same" in text) is same_threads


@pytest.mark.parametrize("precision, native, reference, dtype", [
    ("float32", True, "float32", torch.float32),
    ("bf16", True, "bf16", torch.bfloat16),
    ("bf16", False, "float32", torch.float32),  # emulated bf16 is no limit of the machine's
])
def test_the_machine_share_is_against_a_multiply_in_the_trainings_precision_where_the_hardware_has_it(
        workspace, tmp_path, monkeypatch, precision, native, reference, dtype):
    set_run(workspace, "mlp_64-fashion_mnist", **{**TINY, "epochs": 1, "seeds": [0], "precision": precision})
    monkeypatch.setattr(tta_bench, "bf16_native", lambda device: native)
    multiplied, measure = [], tta_bench.matmul_flops_per_second
    monkeypatch.setattr(tta_bench, "matmul_flops_per_second",
                        lambda device, n, dtype: multiplied.append(dtype) or measure(device, n, dtype=dtype))
    out = tmp_path / "t.md"
    assert tta_bench.main(["--run", "mlp_64-fashion_mnist", "--throughput-steps", "2", *LIGHT, "--output", str(out)]) == 0
    assert multiplied == ([torch.float32] if dtype == torch.float32 else [torch.float32, dtype])  # float32: the TFLOP-eq
    assert f"- {reference} 512 x 512 matrix multiply (the training's precision where the hardware has it)" in out.read_text()

def test_pipeline_seeds_of_another_configuration_are_refused(workspace, tmp_path):
    set_run(workspace, "mlp_64-fashion_mnist", **TINY)
    assert train.main(["mlp_64-fashion_mnist", "--no-mlflow"]) == 0
    set_run(workspace, "mlp_64-fashion_mnist", epochs=3)
    with pytest.raises(SystemExit, match="trained with another configuration"):
        tta_bench.main(["--run", "mlp_64-fashion_mnist", "--from-pipeline", *LIGHT, "--output", str(tmp_path / "t.md")])


def test_a_bad_fashionbench_threads_stops_the_benchmark_in_one_line(workspace, monkeypatch, tmp_path):
    monkeypatch.setenv("FASHIONBENCH_THREADS", "two")
    with pytest.raises(SystemExit, match=r"^error: FASHIONBENCH_THREADS=two: expected a positive integer"):
        tta_bench.main([*LIGHT, "--output", str(tmp_path / "t.md")])
