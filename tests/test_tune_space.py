"""lab/search_spaces.yaml: the search spaces of `fashionbench tune`, validated like params.yaml (no Ray needed)."""
import pytest
import yaml

from fashionbench.lab.grid import override_value
from fashionbench.lab.tune.space import Search, TuneError, load_search, ray_space, reproduce_command, search_algorithm
from fashionbench.lab.tune.trials import best_trial

from conftest import REPO

RUN = "mlp_64-fashion_mnist"


def write_space(tmp_path, **entry) -> tuple:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runs"] = {RUN: {"model": "mlp_64", "dataset": "fashion_mnist"},
                      "lenet5_modern-mnist": {"model": "lenet5_modern", "dataset": "mnist"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    search = {"trials": 4, "space": {"lr": {"loguniform": [0.0001, 0.1]}}, **entry}
    (tmp_path / "spaces.yaml").write_text(yaml.safe_dump({RUN: search}))
    return tmp_path / "spaces.yaml", tmp_path / "params.yaml"


def load(tmp_path, run=RUN, **entry) -> Search:
    spaces, params = write_space(tmp_path, **entry)
    return load_search(run, spaces, params)


def test_the_repository_spaces_file_is_valid():
    search = load_search("fcn_400-fashion_mnist", REPO / "lab" / "search_spaces.yaml", REPO / "params.yaml")
    assert search.trials >= 32 and search.metric == "val_accuracy" and search.scheduler == "asha"


def test_a_space_gives_each_key_its_distribution(tmp_path):
    search = load(tmp_path, space={"lr": {"loguniform": [0.0001, 0.1]}, "optimizer": {"choice": ["sgd", "adam"]},
                                   "batch_size": {"integer": [32, 256]}, "momentum": {"uniform": [0.0, 0.9]}})
    assert search.space == {"lr": ("loguniform", [0.0001, 0.1]), "optimizer": ("choice", ["sgd", "adam"]),
                            "batch_size": ("integer", [32, 256]), "momentum": ("uniform", [0.0, 0.9])}
    assert (search.trials, search.metric, search.mode, search.concurrent, search.cpus_per_trial) == \
        (4, "val_accuracy", "max", 1, 1)


@pytest.mark.parametrize("entry, message", [
    ({"trails": 3}, r"spaces.yaml: mlp_64-fashion_mnist.trails: unknown key"),
    ({"trials": 0}, r"mlp_64-fashion_mnist.trials: expected an integer >= 1, got 0"),
    ({"metric": "test_accuracy"}, r"mlp_64-fashion_mnist.metric: expected one of: val_accuracy, val_loss \(validation only\)"),
    ({"scheduler": "pbt"}, r"mlp_64-fashion_mnist.scheduler: expected one of: asha, none"),
    ({"reduction_factor": 1}, r"mlp_64-fashion_mnist.reduction_factor: expected an integer >= 2"),
    ({"search_seed": -1}, r"mlp_64-fashion_mnist.search_seed: expected an integer >= 0, got -1"),
    ({"space": {"lr": {"loguniform": [0.0, 0.1]}}}, r"space.lr.loguniform: expected low > 0"),
    ({"space": {"lr": {"uniform": [0.1, 0.01]}}}, r"space.lr.uniform: expected \[low, high\] with low < high"),
    ({"space": {"lr": {"normal": [0, 1]}}}, r"space.lr: expected one distribution"),
    ({"space": {"seed": {"integer": [0, 9]}}}, r"space.seed: not a training key to search"),
    ({"space": {"colour": {"choice": ["red"]}}}, r"space.colour: not a training key to search"),
    ({"space": {"optimizer": {"choice": ["sgd", "lbfgs"]}}}, r"space.optimizer.choice\[1\]: expected one of sgd, rmsprop, adam, adamw, got 'lbfgs'"),
    ({"space": {"momentum": {"uniform": [0.0, 1.5]}}}, r"space.momentum.uniform\[1\]: expected < 1"),
    ({"space": {"batch_size": {"integer": [16.5, 64]}}}, r"space.batch_size.integer: expected integer bounds"),
])
def test_a_bad_entry_is_one_line_naming_the_key(tmp_path, entry, message):
    with pytest.raises(TuneError, match=message) as caught:
        load(tmp_path, **entry)
    assert "\n" not in str(caught.value)


def test_a_value_params_yaml_refuses_for_the_run_is_refused_in_the_space(tmp_path):
    spaces, params = write_space(tmp_path)
    raw = yaml.safe_load(spaces.read_text())
    raw["lenet5_modern-mnist"] = {"space": {"augment": {"choice": ["crop", "crop_flip"]}}}
    spaces.write_text(yaml.safe_dump(raw))
    with pytest.raises(TuneError, match=r"lenet5_modern-mnist.space.augment.choice\[1\]: crop_flip mirrors images"):
        load_search("lenet5_modern-mnist", spaces, params)


def test_a_run_without_a_search_or_not_in_params_is_named(tmp_path):
    spaces, params = write_space(tmp_path)
    with pytest.raises(TuneError, match=r"no search for 'lenet5_modern-mnist'; add an entry"):
        load_search("lenet5_modern-mnist", spaces, params)
    raw = yaml.safe_load(spaces.read_text())
    raw["cnn_small-fashion_mnist"] = raw[RUN]
    spaces.write_text(yaml.safe_dump(raw))
    with pytest.raises(TuneError, match=r"cnn_small-fashion_mnist: not a run of"):
        load_search("cnn_small-fashion_mnist", spaces, params)


def drawn(search: Search, trials: int) -> list[dict]:
    """The configurations the search's sampler draws, in order (Ray's generator, without a cluster)."""
    ray_tune = pytest.importorskip("ray.tune")
    ray_tune.register_trainable("draw", lambda config: None)
    sampler = search_algorithm(search)
    sampler.add_configurations({"draw": {"run": "draw", "config": ray_space(search), "num_samples": trials}})
    return [trial.config for trial in iter(sampler.next_trial, None)]


def test_the_same_search_seed_draws_the_same_configurations(tmp_path):
    search = load(tmp_path, space={"lr": {"loguniform": [0.0001, 0.1]}, "optimizer": {"choice": ["sgd", "adam"]}})
    first = drawn(search, 6)
    assert drawn(search, 6) == first and len({c["lr"] for c in first}) == 6
    reseeded = load(tmp_path, search_seed=7, space={"lr": {"loguniform": [0.0001, 0.1]}, "optimizer": {"choice": ["sgd", "adam"]}})
    assert drawn(reseeded, 6) != first


def test_the_reproducing_command_sets_every_sampled_key_exactly():
    command = reproduce_command(RUN, {"lr": 0.012345678901234567, "optimizer": "sgd", "nesterov": True})
    assert command == (f"dvc exp run -S '++runs.{RUN}.lr={0.012345678901234567!r}' -S '++runs.{RUN}.nesterov=true' "
                       f"-S '++runs.{RUN}.optimizer=sgd' train@{RUN} evaluate@{RUN}")
    assert float(override_value(0.1 + 0.2)) == 0.1 + 0.2  # repr round-trips every float


def test_the_best_trial_is_chosen_on_validation_among_trials_that_trained_every_epoch():
    rows = [{"status": "TERMINATED", "epochs_run": 2, "val_accuracy": 0.95, "test_accuracy": 0.99},  # stopped early
            {"status": "TERMINATED", "epochs_run": 4, "val_accuracy": 0.90, "test_accuracy": 0.80},
            {"status": "TERMINATED", "epochs_run": 4, "val_accuracy": 0.85, "test_accuracy": 0.95},
            {"status": "FAILED", "epochs_run": 4, "val_accuracy": 0.99, "test_accuracy": 0.99}]
    search = Search(run=RUN, space={})
    assert best_trial(rows, search, max_epochs=4) is rows[1]


def test_a_cluster_with_a_local_sqlite_store_is_refused_in_one_line(workspace, store, capsys):
    from fashionbench.lab.tune import session as tune

    (workspace / "tuning").mkdir()
    (workspace / "lab" / "search_spaces.yaml").write_text(yaml.safe_dump({RUN: {"space": {"lr": {"loguniform": [0.001, 0.1]}}}}))
    assert tune.main([RUN, "--address", "127.0.0.1:6379"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: MLFLOW_TRACKING_URI: --address 127.0.0.1:6379 needs a tracking server")
    assert err.count("\n") == 1 and not (workspace / "tuning" / f"{RUN}.json").exists()


def test_a_run_that_trains_on_every_image_cannot_be_tuned(tmp_path):
    spaces, params_path = write_space(tmp_path)
    params = yaml.safe_load(params_path.read_text())
    params["runs"][RUN]["val_fraction"] = 0
    params_path.write_text(yaml.safe_dump(params))
    with pytest.raises(TuneError, match=rf"runs.{RUN}.val_fraction: 0 leaves no validation split to tune on"):
        load_search(RUN, spaces, params_path)
