from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_idx import write_mirror  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# One thread per training in every test and every process a test starts: the suite runs on
# several pytest-xdist workers at once, and trainings that each take every core spin against
# each other. Tests of the default (every core) unset it themselves.
os.environ.setdefault("FASHIONBENCH_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # torch in the test processes themselves, before it is imported
# Every MLflow process a test starts (stages, servers, clients): no usage telemetry, which offline
# waits on its sender at each exit; and no job runner in `mlflow server` (seven more processes of
# ~240 MB each, for GenAI features no test uses; `fashionbench server` turns it off itself).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


# The end-to-end modules that take longest, longest first (their summed test times under the full
# suite, 2-core AMD EPYC, 2026-12-07; test_pipeline.py since it took in the DVC-remote round trip, which
# had a tiny pipeline of its own): started last, one of them would finish alone after the rest.
LONGEST_END_TO_END = ("test_pipeline.py", "test_pipeline_trust.py", "test_team_server.py", "test_mlflow.py",
                      "test_same_bytes_under_load.py", "test_run_lifecycle.py", "test_mlflow_layout.py", "test_mlflow_ui.py")


def pytest_collection_modifyitems(items):
    """The order pytest-xdist hands modules out in (`make test`: `--dist loadscope
    --no-loadscope-reorder`): the Ray parts first (minutes each, mostly waiting on Ray), so they
    run beside everything else; then the quick modules, one of which xdist queues behind each
    Ray part; then the end-to-end modules, the longest first, which keep the other workers busy
    to the end."""
    def rank(item) -> tuple[int, int]:
        name = Path(str(item.fspath)).name
        if name == "test_ray.py":
            return 0, 0
        if not item.get_closest_marker("slow"):
            return 1, 0
        return 2, LONGEST_END_TO_END.index(name) if name in LONGEST_END_TO_END else len(LONGEST_END_TO_END)

    items.sort(key=rank)  # stable: each module keeps its own order


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch) -> Path:
    """A local mirror of small generated datasets, with their checksums substituted."""
    mirror = tmp_path / "mirror"
    md5_file = write_mirror(mirror)
    monkeypatch.setenv("FASHIONBENCH_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("FASHIONBENCH_EXPECTED_MD5", str(md5_file))
    return mirror


@pytest.fixture
def tiny_data():
    """Prepared-format tensors of a small learnable dataset, on the CPU."""
    import numpy as np
    import torch

    from fake_idx import make_images

    rng = np.random.default_rng(0)
    out = {"digest": "test"}
    for split, n in (("train", 256), ("val", 64), ("test", 64)):
        labels = rng.integers(0, 10, size=n)
        out[f"{split}_images"] = torch.from_numpy(make_images(labels, rng))
        out[f"{split}_labels"] = torch.from_numpy(labels.astype(np.int64))
    return out


def base_params() -> dict:
    """A valid params dict, as params.yaml would give it, with one tiny run."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runs"] = {"mlp_64-fashion_mnist": {"model": "mlp_64", "dataset": "fashion_mnist"}}
    return params


@pytest.fixture
def workspace(fake_mirror, tmp_path, monkeypatch):
    """A scratch repo root: params.yaml with two tiny runs, data downloaded and prepared."""
    import yaml

    from fashionbench.stages import download, preprocess

    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.chdir(root)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(epochs=1, batch_size=32)
    params["runs"] = {
        "mlp_64-fashion_mnist": {"model": "mlp_64", "dataset": "fashion_mnist"},
        "lenet5_modern-mnist": {"model": "lenet5_modern", "dataset": "mnist", "seeds": [0, 1]},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(REPO / "lab", root / "lab")  # the report reads the studies' catalogue
    for dataset in params["datasets"]:
        assert download.main([dataset]) == 0
        assert preprocess.main([dataset]) == 0
    return root


def set_run(root, name, **entry):
    import yaml

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["runs"][name].update(entry)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture
def store(workspace, monkeypatch) -> str:
    """The workspace logging to its own SQLite store, with no DVC experiment variables from outside."""
    for name in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)
    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
