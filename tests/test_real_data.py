"""On the real Fashion-MNIST, when ../shared/data (or FASHIONBENCH_DATA_MIRROR) has it."""
import os
from pathlib import Path

import pytest
import torch

from fashionbench.core.config import validate
from fashionbench.core.engine import train_seed
from fashionbench.core.splits import prepare
from fashionbench.stages.download import download

from conftest import REPO, base_params

MIRROR = Path(os.environ.get("FASHIONBENCH_DATA_MIRROR") or REPO.parent / "shared" / "data")
pytestmark = pytest.mark.skipif(not (MIRROR / "fashion_mnist").is_dir(), reason=f"no real data at {MIRROR}")


def test_one_epoch_of_a_small_mlp_on_real_fashion_mnist_reaches_80_percent(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHIONBENCH_DATA_MIRROR", str(MIRROR))
    monkeypatch.delenv("FASHIONBENCH_EXPECTED_MD5", raising=False)  # the real checksums
    download("fashion_mnist", raw_dir=tmp_path / "raw")
    data = prepare("fashion_mnist", 0.1, 0, raw_dir=tmp_path / "raw")
    assert (len(data["train_labels"]), len(data["val_labels"]), len(data["test_labels"])) == (54000, 6000, 10000)
    cfg = validate(base_params() | {"epochs": 1})["runs"]["mlp_64-fashion_mnist"]
    result = train_seed(cfg, data, 0, torch.device("cpu"), progress=False)
    assert result["history"][-1]["test_accuracy"] >= 0.80
