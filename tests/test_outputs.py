"""What the stages write: permissions from the umask, and the same bytes for the same inputs."""
import os
import stat

import pytest
import torch

from fashionbench.core.files import read_tensors, write_json, write_tensors
from fashionbench.core.models import build_model
from fashionbench.core.paths import prepared_path
from fashionbench.core.splits import load_prepared
from fashionbench.stages import download, preprocess

from conftest import REPO


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_permissions_the_umask_asks_for(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "out.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == mode


def test_prepared_data_written_twice_from_the_same_files_are_the_same_bytes(fake_mirror, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    assert download.main(["mnist"]) == 0
    assert preprocess.main(["mnist"]) == 0
    first = prepared_path("mnist").read_bytes()
    assert preprocess.main(["mnist"]) == 0
    assert prepared_path("mnist").read_bytes() == first


def test_a_checkpoint_written_twice_is_the_same_bytes_and_reads_back_equal(tmp_path):
    torch.manual_seed(0)
    model = build_model("lenet5_modern").to(memory_format=torch.channels_last)  # strided weights too
    write_tensors(tmp_path / "a.safetensors", model.state_dict())
    write_tensors(tmp_path / "b.safetensors", model.state_dict())
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    loaded, _ = read_tensors(tmp_path / "a.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_prepared_data_keep_the_raw_files_digest(tmp_path):
    data = {"digest": "abc123", "train_images": torch.zeros(3, 28, 28, dtype=torch.uint8),
            "val_images": torch.zeros(0, 28, 28, dtype=torch.uint8)}
    preprocess.save_prepared(data, tmp_path / "p.safetensors")
    loaded = load_prepared("x", path=tmp_path / "p.safetensors")
    assert loaded["digest"] == "abc123" and loaded["val_images"].shape == (0, 28, 28)
