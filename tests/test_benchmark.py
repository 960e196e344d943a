"""benchmarks/train_speed.py runs end to end on a tiny budget (no assertion on speed): it cannot rot."""
import importlib.util
import os
from pathlib import Path

import pytest
import torch

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "train_speed.py"
MIRROR = Path(os.environ.get("FASHIONBENCH_DATA_MIRROR") or REPO.parent / "shared" / "data")
MODELS = ["mlp_64", "cnn_small"]


def run_benchmark(output: Path, mirror: Path, capsys, monkeypatch) -> str:
    """The script's main() with command-line arguments, in this process (one torch import)."""
    monkeypatch.setenv("FASHIONBENCH_DATA_MIRROR", str(mirror))  # the script sets it; restored after
    spec = importlib.util.spec_from_file_location("train_speed", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--models", *MODELS, "--samples", "256", "--warmup", "1", "--threads", "1",
            "--data-mirror", str(mirror), "--output", str(output)]
    threads = torch.get_num_threads()
    try:
        code = script.main(argv)
    finally:
        torch.set_num_threads(threads)  # --threads 1 (light on a shared CI machine) must not leak
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


def markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return rows[0], rows[2:]  # header, (separator), body


def check_results(output: Path, stdout: str) -> None:
    text = output.read_text()
    assert "CPU:" in text and "torch " in text and "date:" in text
    header, body = markdown_table(text)
    assert "ratio b/a" in header
    assert [row[0].strip("`") for row in body] == MODELS  # a row per model
    ratio = header.index("ratio b/a")
    for row in body:
        assert float(row[ratio]) > 0
    for model in MODELS:
        assert model in stdout  # and it printed them


@pytest.mark.skipif(not (MIRROR / "fashion_mnist").is_dir(), reason=f"no real data at {MIRROR}")
def test_benchmark_writes_a_row_with_a_ratio_per_model_on_real_fashion_mnist(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FASHIONBENCH_EXPECTED_MD5", raising=False)  # the real checksums
    output = tmp_path / "RESULTS.md"
    check_results(output, run_benchmark(output, MIRROR, capsys, monkeypatch))


def test_benchmark_runs_on_generated_data_without_the_real_datasets(tmp_path, fake_mirror, capsys, monkeypatch):
    # 200 generated training images: the 256 samples also cross an epoch boundary in both loops.
    output = tmp_path / "out" / "RESULTS.md"
    check_results(output, run_benchmark(output, fake_mirror, capsys, monkeypatch))
