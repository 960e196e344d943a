"""Resuming a training from its per-epoch state gives what an uninterrupted run gives, bit for bit."""
import pytest
import torch

from fashionbench.core.config import validate
from fashionbench.core.engine import train_seed

from conftest import base_params


class Interrupted(Exception):
    pass


def config(**changes) -> dict:
    params = base_params()
    params.update(epochs=4, batch_size=32, optimizer="adam", **changes)
    params["runs"]["mlp_64-fashion_mnist"]["dropout"] = 0.2  # uses the global RNG every step
    return validate(params)["runs"]["mlp_64-fashion_mnist"]


def stop_after(epoch: int):
    def on_epoch(row):
        if row["epoch"] == epoch:
            raise Interrupted
    return on_epoch


def weights(result) -> dict:
    return {k: v.clone() for k, v in result["model"].state_dict().items()}


def test_a_run_interrupted_and_resumed_ends_with_the_weights_of_an_uninterrupted_run(tiny_data, tmp_path):
    cfg, cpu = config(), torch.device("cpu")
    whole = train_seed(cfg, tiny_data, 0, cpu, progress=False)
    state = tmp_path / "seed0.pt"
    with pytest.raises(Interrupted):
        train_seed(cfg, tiny_data, 0, cpu, progress=False, state_path=state, on_epoch=stop_after(3))
    resumed = train_seed(cfg, tiny_data, 0, cpu, progress=False, state_path=state)
    assert resumed["resumed_at_epoch"] == 3  # epoch 3 was logged but its state not saved: redone
    expected, got = weights(whole), weights(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed["history"]) == strip(whole["history"])


def test_resuming_replays_the_saved_epochs_to_the_epoch_callback_first(tiny_data, tmp_path):
    cfg, cpu, state = config(), torch.device("cpu"), tmp_path / "seed0.pt"
    with pytest.raises(Interrupted):
        train_seed(cfg, tiny_data, 0, cpu, progress=False, state_path=state, on_epoch=stop_after(3))
    seen = []
    train_seed(cfg, tiny_data, 0, cpu, progress=False, state_path=state, on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [1, 2, 3, 4]


def test_a_finished_state_is_not_trained_again(tiny_data, tmp_path):
    cfg, cpu, state = config(), torch.device("cpu"), tmp_path / "seed0.pt"
    first = train_seed(cfg, tiny_data, 0, cpu, progress=False, state_path=state)
    again = train_seed(cfg, tiny_data, 0, cpu, progress=False, state_path=state)
    assert again["resumed_at_epoch"] == 5 and len(again["history"]) == 4
    assert all(torch.equal(first["model"].state_dict()[k], v) for k, v in again["model"].state_dict().items())


def test_a_state_for_another_config_is_discarded(tmp_path, monkeypatch):
    from fashionbench.core.files import write_json
    from fashionbench.core.paths import resume_dir
    from fashionbench.stages import train

    monkeypatch.chdir(tmp_path)
    write_json(resume_dir("r") / "attempt.json", {"fingerprint": "old", "mlflow_run_id": None})
    (resume_dir("r") / "seed0.pt").write_bytes(b"state")
    assert train.open_resume_state("r", "new") is None
    assert not resume_dir("r").exists()
    write_json(resume_dir("r") / "attempt.json", {"fingerprint": "same", "mlflow_run_id": "abc"})
    assert train.open_resume_state("r", "same") == {"fingerprint": "same", "mlflow_run_id": "abc"}


def test_the_fingerprint_changes_with_the_config_the_data_and_the_thread_count(tmp_path, monkeypatch, tiny_data):
    from fashionbench.core.paths import prepared_path
    from fashionbench.core.splits import save_prepared
    from fashionbench.stages import train

    monkeypatch.chdir(tmp_path)
    save_prepared(tiny_data, prepared_path("fashion_mnist"))
    cpu = torch.device("cpu")
    base = train.resume_fingerprint(config(), cpu, 2)
    assert train.resume_fingerprint(config(), cpu, 2) == base
    assert train.resume_fingerprint(config(lr=0.01), cpu, 2) != base
    assert train.resume_fingerprint(config(), cpu, 1) != base  # another order of float sums
    save_prepared(dict(tiny_data, train_labels=tiny_data["train_labels"].flip(0)), prepared_path("fashion_mnist"))
    assert train.resume_fingerprint(config(), cpu, 2) != base
