"""DVC stage `download@<dataset>`: fetch the four IDX files into data/raw/<dataset>/.

Sources, in order: the local mirror named by FASHIONBENCH_DATA_MIRROR
(`<mirror>/<dataset>/<file>.gz` or `<mirror>/<dataset>/<file>`), then the official
mirrors that torchvision lists. Every file is verified against the md5 of its extracted
IDX bytes and written atomically (temp file + rename), so a half-downloaded file never
stands where the next stage looks.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import tempfile
from pathlib import Path

from fashionbench.core.files import atomic_path
from fashionbench.core.idx import FILES, DataError, expected_md5, known_datasets, md5_hex, read_idx_bytes
from fashionbench.core.paths import RAW_DIR

MIRROR_ENV = "FASHIONBENCH_DATA_MIRROR"


def official_urls(dataset: str, name: str) -> list[str]:
    """The official download addresses, as torchvision keeps them (first that answers wins)."""
    from torchvision import datasets as tvd  # slow import: only on the network path

    cls = {"fashion_mnist": tvd.FashionMNIST, "mnist": tvd.MNIST}[dataset]
    return [f"{mirror}{name}.gz" for mirror in cls.mirrors]


def mirror_dir() -> Path | None:
    """The local mirror, or None when FASHIONBENCH_DATA_MIRROR is unset; a mirror that is
    not a directory is an error (a typo in it should not send us to the network)."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return None
    if not Path(mirror).is_dir():
        raise DataError(f"{MIRROR_ENV}={mirror}: not a directory; expected one holding <dataset>/<file>.gz")
    return Path(mirror)


def mirror_candidates(dataset: str, name: str) -> list[Path]:
    mirror = mirror_dir()
    if mirror is None:
        return []
    base = mirror / dataset
    return [p for p in (base / f"{name}.gz", base / name) if p.is_file()]


def verified_idx(path: Path, dataset: str, name: str) -> bytes:
    """The extracted bytes of `path` if their md5 is the expected one, else DataError."""
    data = read_idx_bytes(path)
    got, want = md5_hex(data), expected_md5(dataset, name)
    if got != want:
        raise DataError(f"{path}: md5 of the extracted IDX is {got}, expected {want} ({dataset}/{name})")
    return data


def write_atomically(dest: Path, source: Path, data: bytes) -> None:
    """Store `source` as `dest` (.gz): copied as-is when already gzipped, else compressed."""
    with atomic_path(dest) as tmp:
        if source.read_bytes()[:2] == b"\x1f\x8b":
            shutil.copyfile(source, tmp)
        else:
            tmp.write_bytes(gzip.compress(data, compresslevel=6, mtime=0))


def fetch_from_network(dataset: str, name: str, workdir: Path) -> Path:
    from torchvision.datasets.utils import download_url

    errors = []
    for url in official_urls(dataset, name):
        try:
            download_url(url, str(workdir), filename=f"{name}.gz")
            return workdir / f"{name}.gz"
        except Exception as exc:  # any network failure: try the next mirror
            errors.append(f"{url}: {type(exc).__name__}")
    tried = "; ".join(errors)
    mirror = mirror_dir()
    if mirror is not None:
        raise DataError(f"{mirror / dataset / (name + '.gz')}: not found in the mirror {MIRROR_ENV}={mirror} "
                        f"(expected <dataset>/<file>.gz, or the file uncompressed), and no official mirror answered ({tried})")
    raise DataError(f"could not download {dataset}/{name}.gz from the official mirrors ({tried}); "
                    f"offline? set {MIRROR_ENV}=<dir> holding <dataset>/<file>.gz")


def fetch_file(dataset: str, name: str, out_dir: Path) -> str:
    """Put a verified `<name>.gz` in out_dir; returns where it came from."""
    dest = out_dir / f"{name}.gz"
    problems = []
    for candidate in mirror_candidates(dataset, name):
        try:
            data = verified_idx(candidate, dataset, name)
        except DataError as exc:
            problems.append(str(exc))
            continue
        write_atomically(dest, candidate, data)
        return str(candidate)
    if problems:
        # A mirror that holds a corrupt file is a user error worth stopping for.
        raise DataError(problems[0])
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        downloaded = fetch_from_network(dataset, name, Path(tmp))
        data = verified_idx(downloaded, dataset, name)
        write_atomically(dest, downloaded, data)
    return "official mirror"


def download(dataset: str, raw_dir: Path = RAW_DIR) -> None:
    if dataset not in known_datasets():
        raise DataError(f"unknown dataset '{dataset}', expected one of: {', '.join(known_datasets())}")
    out_dir = raw_dir / dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        source = fetch_file(dataset, name, out_dir)
        print(f"{dataset}/{name}.gz  verified  (from {source})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=known_datasets())
    args = parser.parse_args(argv)
    try:
        download(args.dataset)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
