"""A tune trial's checkpoints (lab/tune/checkpoints.py) without a Ray cluster: the --storage option,
and a trial that dies after a report and is retried from its last checkpoint, Ray Tune's calls
stood in for: each epoch reported once, and the same result as a trial never interrupted.
The real thing, a worker node killed mid-trial, is in ray_cases/test_tune_cluster.py."""
import json
import shutil
from types import SimpleNamespace

import pytest
import yaml

from fashionbench.lab.tune.checkpoints import RECORD_FILE, STATE_FILE, restore_checkpoint, storage_path
from fashionbench.lab.tune.space import TuneError

from conftest import base_params

RUN = "mlp_64-fashion_mnist"


def test_the_storage_is_a_uri_as_given_or_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FASHIONBENCH_RAY_STORAGE", raising=False)
    assert storage_path("s3://bucket/tune", "10.0.0.1:6379") == "s3://bucket/tune"
    assert storage_path("shared/ray", "10.0.0.1:6379") == str(tmp_path / "shared" / "ray")
    assert storage_path(None, None) == str(tmp_path / ".ray_results")  # embedded: this machine's directory
    monkeypatch.setenv("FASHIONBENCH_RAY_STORAGE", "/mnt/nfs/ray")
    assert storage_path(None, "10.0.0.1:6379") == "/mnt/nfs/ray"
    assert storage_path("/elsewhere", None) == "/elsewhere"


def test_a_cluster_without_storage_every_node_reaches_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    from fashionbench.lab.tune import session

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FASHIONBENCH_RAY_STORAGE", raising=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base_params()))
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "search_spaces.yaml").write_text(yaml.safe_dump({RUN: {"space": {"lr": {"loguniform": [0.001, 0.1]}}}}))
    assert session.main([RUN, "--no-mlflow", "--address", "127.0.0.1:6379"]) == 1
    err = capsys.readouterr().err
    assert err == ("error: --address 127.0.0.1:6379: trials checkpoint every epoch to storage every node reaches: "
                   "name it with --storage (a shared directory, or an s3:// URI)\n")
    assert not (tmp_path / "tuning").exists()


class NodeDied(Exception):
    pass


class StandInTune:
    """The Ray Tune calls a trial makes: each report's metrics kept, its checkpoint copied into a
    storage directory as Ray persists it (only the newest kept); after `die_after` reports the
    trial's process is as good as dead. `resume_from` is the checkpoint Ray hands a retried trial."""

    def __init__(self, storage, resume_from=None, die_after: int | None = None):
        self.storage, self.resume_from, self.die_after = storage, resume_from, die_after
        self.reports, self.latest = [], None

    def report(self, metrics, checkpoint=None):
        self.reports.append(dict(metrics))
        if checkpoint is not None:
            if self.latest:
                shutil.rmtree(self.latest)
            self.latest = self.storage / f"checkpoint_{len(self.reports):06d}"
            shutil.copytree(checkpoint.path, self.latest)
        if len(self.reports) == self.die_after:
            raise NodeDied

    def get_checkpoint(self):
        from ray import tune

        return tune.Checkpoint.from_directory(self.resume_from) if self.resume_from else None

    def get_context(self):
        return SimpleNamespace(get_trial_name=lambda: "train_trial_00000")


@pytest.fixture
def trial(tiny_data, monkeypatch, tmp_path):
    """Runs one attempt of a 5-epoch trial with a stand-in for Ray Tune; returns the stand-in."""
    tune = pytest.importorskip("ray.tune")
    from fashionbench.lab.tune.trials import train_trial

    params = base_params()
    params["runs"][RUN].update(epochs=5, batch_size=32)
    data = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in tiny_data.items()}  # as the object store holds them
    attempts = []

    def attempt(resume_from=None, die_after=None, config=None) -> StandInTune:
        storage = tmp_path / f"attempt{len(attempts)}"  # each attempt's checkpoints apart
        storage.mkdir()
        stand_in = StandInTune(storage, resume_from, die_after)
        attempts.append(stand_in)
        for name in ("report", "get_checkpoint", "get_context"):
            monkeypatch.setattr(tune, name, getattr(stand_in, name))
        try:
            train_trial(config or {"lr": 0.01}, run=RUN, raw_params=params, data=data, parent_run_id=None,
                        tracking_uri="", threads=1)
        except NodeDied:
            pass
        return stand_in

    return attempt


def epochs(stand_in) -> list[int]:
    return [r["epoch"] for r in stand_in.reports]


def test_a_retried_trial_reports_on_from_its_last_checkpoint_with_the_uninterrupted_result(trial):
    whole = trial()
    assert epochs(whole) == [1, 2, 3, 4, 5] and all(r["resumed_at_epoch"] is None for r in whole.reports)
    killed = trial(die_after=3)
    assert epochs(killed) == [1, 2, 3]
    saved = killed.latest  # the state epoch 3 started from, reported with epoch 3
    assert json.loads((saved / RECORD_FILE).read_text())["reported_epoch"] == 3
    assert (saved / STATE_FILE).stat().st_size < 2_000_000  # mlp_64: weights and Adam's moments
    retried = trial(resume_from=saved)
    assert epochs(retried) == [4, 5]  # epoch 3 is trained again, not reported again
    assert all(r["resumed_at_epoch"] == 3 for r in retried.reports)
    timeless = lambda r: {k: v for k, v in r.items() if k not in ("train_seconds", "resumed_at_epoch")}  # noqa: E731
    assert [timeless(r) for r in killed.reports + retried.reports] == [timeless(r) for r in whole.reports]  # bit for bit


def test_a_trial_that_dies_after_its_first_epoch_starts_over_reporting_on_from_the_second(trial):
    whole = trial()
    killed = trial(die_after=1)
    assert epochs(killed) == [1] and not (killed.latest / STATE_FILE).exists()  # no state before the first epoch
    retried = trial(resume_from=killed.latest)
    assert epochs(retried) == [2, 3, 4, 5] and retried.reports[0]["resumed_at_epoch"] == 1
    assert retried.reports[-1]["val_loss"] == whole.reports[-1]["val_loss"]


def test_a_checkpoint_of_another_config_is_not_resumed(trial, tmp_path):
    saved = trial(die_after=2).latest
    with pytest.raises(TuneError, match="a checkpoint of another config or data; not resumed"):
        trial(resume_from=saved, config={"lr": 0.02})
    with pytest.raises(TuneError):
        restore_checkpoint(saved, tmp_path / "state.pt", "another")
