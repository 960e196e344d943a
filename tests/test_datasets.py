import gzip

import numpy as np
import pytest

from fashionbench.core.idx import DataError, load_idx
from fashionbench.stages import download

from fake_idx import idx_bytes


def test_load_idx_reads_a_gzipped_file(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    assert np.array_equal(load_idx(path), images)


def test_load_idx_reads_an_uncompressed_file(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(labels))
    assert np.array_equal(load_idx(path), labels)


def test_load_idx_rejects_a_truncated_file(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros(10, dtype=np.uint8))[:-1])
    with pytest.raises(DataError, match="promises 10 values"):
        load_idx(path)


def test_load_idx_rejects_a_file_that_is_not_idx(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"hello world")
    with pytest.raises(DataError, match="not an IDX file"):
        load_idx(path)


def test_download_copies_verified_files_from_the_mirror(fake_mirror, tmp_path):
    download.download("mnist", raw_dir=tmp_path / "raw")
    for name in download.FILES:
        assert (tmp_path / "raw" / "mnist" / f"{name}.gz").is_file()
    assert list((tmp_path / "raw" / "mnist").glob("*.tmp")) == []


def test_download_accepts_an_uncompressed_mirror_and_stores_gzip(fake_mirror, tmp_path):
    for gz in (fake_mirror / "mnist").glob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    download.download("mnist", raw_dir=tmp_path / "raw")
    stored = tmp_path / "raw" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert stored.read_bytes()[:2] == b"\x1f\x8b"


def test_download_detects_an_md5_mismatch_and_writes_nothing(fake_mirror, tmp_path):
    path = fake_mirror / "mnist" / "train-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[-1] = (data[-1] + 1) % 10  # one altered label
    path.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DataError, match="md5 of the extracted IDX is .* expected"):
        download.download("mnist", raw_dir=tmp_path / "raw")
    assert not (tmp_path / "raw" / "mnist" / "train-labels-idx1-ubyte.gz").exists()


def test_real_checksums_reject_generated_data(fake_mirror, tmp_path, monkeypatch):
    monkeypatch.delenv("FASHIONBENCH_EXPECTED_MD5")
    with pytest.raises(DataError, match="expected f4a8712d7a061bf5bd6d2ca38dc4d50a"):
        download.download("fashion_mnist", raw_dir=tmp_path / "raw")


def test_offline_without_mirror_names_the_variable(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FASHIONBENCH_DATA_MIRROR", raising=False)
    # Port 9 on loopback refuses at once: stands in for "no internet".
    monkeypatch.setattr(download, "official_urls", lambda d, n: [f"http://127.0.0.1:9/{n}.gz"])
    monkeypatch.chdir(tmp_path)
    assert download.main(["fashion_mnist"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "FASHIONBENCH_DATA_MIRROR" in err


def test_official_urls_come_from_torchvision_mirrors():
    urls = download.official_urls("fashion_mnist", "train-images-idx3-ubyte")
    assert urls and all(u.endswith("/train-images-idx3-ubyte.gz") for u in urls)


def test_a_mirror_that_is_not_a_directory_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FASHIONBENCH_DATA_MIRROR", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    assert download.main(["mnist"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: FASHIONBENCH_DATA_MIRROR={tmp_path / 'nowhere'}: not a directory; "
                   "expected one holding <dataset>/<file>.gz")


def test_a_mirror_missing_one_file_names_that_file(fake_mirror, tmp_path, monkeypatch, capsys):
    missing = fake_mirror / "mnist" / "t10k-labels-idx1-ubyte.gz"
    missing.unlink()
    monkeypatch.setattr(download, "official_urls", lambda dataset, name: [])  # no network in tests
    monkeypatch.chdir(tmp_path)
    assert download.main(["mnist"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {missing}: not found in the mirror FASHIONBENCH_DATA_MIRROR={fake_mirror}")
    assert "\n" not in err
