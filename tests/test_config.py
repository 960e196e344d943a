import copy

import pytest
import yaml

from conftest import REPO, base_params
from fashionbench.config import TRAIN_KEYS, ConfigError, load_params, validate


def test_the_repository_params_file_is_valid():
    params = load_params(REPO / "params.yaml")
    assert len(params["runs"]) == 13


def test_default_runs_cover_the_zoo_on_fashion_mnist_and_lenets_and_ours_on_mnist():
    from fashionbench.models import BEYOND_SEEDS, known_models

    runs = load_params(REPO / "params.yaml")["runs"]
    assert {c["model"] for c in runs.values() if c["dataset"] == "fashion_mnist"} == set(known_models())
    assert {c["model"] for c in runs.values() if c["dataset"] == "mnist"} == {"lenet5_classic", "lenet5_modern",
                                                                              *BEYOND_SEEDS}


def test_the_runs_beyond_the_seeds_train_three_seeds():
    from fashionbench.models import BEYOND_SEEDS

    runs = load_params(REPO / "params.yaml")["runs"]
    assert all(len(c["seeds"]) == 3 for c in runs.values() if c["model"] in BEYOND_SEEDS)


def test_run_entry_overrides_top_level_defaults():
    params = base_params()
    params["lr"] = 0.5
    params["runs"]["mlp_64-fashion_mnist"]["epochs"] = 7
    cfg = validate(params)["runs"]["mlp_64-fashion_mnist"]
    assert (cfg["lr"], cfg["epochs"], cfg["name"]) == (0.5, 7, "mlp_64-fashion_mnist")


def test_seeds_default_to_the_single_seed():
    params = base_params()
    params["seed"] = 3
    assert validate(params)["runs"]["mlp_64-fashion_mnist"]["seeds"] == [3]


def test_exponent_written_lr_is_read_as_a_number():
    params = yaml.safe_load("lr: 1e-3")  # YAML 1.1 reads this as a string
    merged = base_params() | params
    assert validate(merged)["runs"]["mlp_64-fashion_mnist"]["lr"] == 0.001


def error_for(change) -> str:
    params = copy.deepcopy(base_params())
    change(params, params["runs"]["mlp_64-fashion_mnist"])
    with pytest.raises(ConfigError) as info:
        validate(params)
    message = str(info.value)
    assert "\n" not in message
    return message


BAD = {
    "unknown top-level key": (lambda p, r: p.update(learning_rate=0.1), "learning_rate: unknown key"),
    "unknown run key": (lambda p, r: r.update(lrr=0.1), "runs.mlp_64-fashion_mnist.lrr: unknown key"),
    "unknown model": (lambda p, r: r.update(model="resnet"), "runs.mlp_64-fashion_mnist.model: unknown model 'resnet', expected one of: cnn_baseline"),
    "unknown optimizer": (lambda p, r: r.update(optimizer="lion"), "runs.mlp_64-fashion_mnist.optimizer: expected one of sgd, rmsprop, adam, adamw"),
    "unknown loss": (lambda p, r: p.update(loss="hinge"), "loss: expected one of cross_entropy"),
    "unknown dataset": (lambda p, r: r.update(dataset="cifar10"), "runs.mlp_64-fashion_mnist.dataset: expected one of the datasets list"),
    "unknown dataset in list": (lambda p, r: p.update(datasets=["cifar10"]), "datasets[0]: expected one of fashion_mnist, mnist"),
    "wrong type": (lambda p, r: r.update(epochs="ten"), "runs.mlp_64-fashion_mnist.epochs: expected an integer, got 'ten'"),
    "bool is not an integer": (lambda p, r: p.update(batch_size=True), "batch_size: expected an integer"),
    "lr zero": (lambda p, r: r.update(lr=0), "runs.mlp_64-fashion_mnist.lr: expected > 0"),
    "lr negative": (lambda p, r: p.update(lr=-0.1), "lr: expected > 0"),
    "epochs zero": (lambda p, r: r.update(epochs=0), "runs.mlp_64-fashion_mnist.epochs: expected >= 1"),
    "dropout one": (lambda p, r: r.update(dropout=1.0), "runs.mlp_64-fashion_mnist.dropout: expected < 1"),
    "dropout negative": (lambda p, r: r.update(dropout=-0.1), "runs.mlp_64-fashion_mnist.dropout: expected >= 0"),
    "option the model lacks": (lambda p, r: r.update(model="lenet5_modern", depth=3), "runs.mlp_64-fashion_mnist.depth: model lenet5_modern has no 'depth' option"),
    "missing model": (lambda p, r: r.pop("model"), "runs.mlp_64-fashion_mnist.model: missing"),
    "missing default": (lambda p, r: p.pop("epochs"), "epochs: missing top-level default"),
    "bad seeds": (lambda p, r: r.update(seeds=[0, 0]), "runs.mlp_64-fashion_mnist.seeds: expected distinct seeds"),
    "bad device": (lambda p, r: p.update(device="gpu"), "device: expected auto, cpu, cuda"),
    "bad precision": (lambda p, r: r.update(precision="fp16"), "runs.mlp_64-fashion_mnist.precision: expected one of auto, float32, bf16, got 'fp16'"),
    "eval_batch_size zero": (lambda p, r: r.update(eval_batch_size=0), "runs.mlp_64-fashion_mnist.eval_batch_size: expected >= 1"),
    "bad val_fraction": (lambda p, r: p["preprocess"].update(val_fraction=1.5), "preprocess.val_fraction: expected < 1"),
    "run val_fraction one": (lambda p, r: r.update(val_fraction=1), "runs.mlp_64-fashion_mnist.val_fraction: expected < 1"),
    "run val_fraction negative": (lambda p, r: r.update(val_fraction=-0.1), "runs.mlp_64-fashion_mnist.val_fraction: expected >= 0"),
    "patch_stride past the patch": (lambda p, r: r.update(model="patch_mlp", patch_stride=8), "runs.mlp_64-fashion_mnist.patch_stride: expected <= 7"),
    "shuffle not a boolean": (lambda p, r: r.update(shuffle="no"), "runs.mlp_64-fashion_mnist.shuffle: expected true or false, got 'no'"),
    "blocks not a list": (lambda p, r: r.update(model="resnet_fast", blocks=2), "runs.mlp_64-fashion_mnist.blocks: expected null or a list of 1 to 5 integers >= 0"),
    "blocks empty": (lambda p, r: r.update(model="resnet_fast", blocks=[]), "runs.mlp_64-fashion_mnist.blocks: expected null or a list of 1 to 5 integers >= 0 (residual blocks per stage), got []"),
    "blocks past the 2-pixel stage": (lambda p, r: r.update(model="resnet_fast", blocks=[1] * 6), "runs.mlp_64-fashion_mnist.blocks: expected null or a list of 1 to 5"),
    "blocks negative": (lambda p, r: r.update(model="resnet_fast", blocks=[1, -1]), "runs.mlp_64-fashion_mnist.blocks: expected null or a list of 1 to 5 integers >= 0"),
    "blocks on an MLP": (lambda p, r: r.update(blocks=[1, 1]), "runs.mlp_64-fashion_mnist.blocks: model mlp_64 has no 'blocks' option"),
    "patch_stride on an MLP": (lambda p, r: r.update(patch_stride=3), "runs.mlp_64-fashion_mnist.patch_stride: model mlp_64 has no 'patch_stride' option"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_params_give_one_line_naming_the_key(case):
    change, expected = BAD[case]
    assert expected in error_for(change)


def test_resnet_fast_takes_its_blocks_per_stage_and_null_means_the_zoos():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runs"]["probe"] = {"model": "resnet_fast", "dataset": "mnist", "blocks": [0, 1, 2]}
    runs = validate(params)["runs"]
    assert runs["probe"]["blocks"] == [0, 1, 2]
    assert runs["resnet_fast-mnist"]["blocks"] is None


def test_a_run_keeps_the_prepared_split_unless_it_sets_its_own_val_fraction():
    runs = load_params(REPO / "params.yaml")["runs"]
    assert runs["fcn_400-fashion_mnist"]["val_fraction"] is None  # seed 003 held out a validation set
    assert runs["mlp_64-fashion_mnist"]["val_fraction"] == 0       # seed 000 trained on all 60,000
    assert runs["fcn_400-fashion_mnist"]["split_seed"] == 0


def test_invalid_yaml_is_reported_with_its_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("lr: 0.1\nruns: [\n")
    with pytest.raises(ConfigError, match="params.yaml: not valid YAML at line"):
        load_params(path)


def test_max_epochs_caps_every_run():
    params = base_params()
    params["max_epochs"] = 2
    params["runs"]["mlp_64-fashion_mnist"]["epochs"] = 40
    assert validate(params)["runs"]["mlp_64-fashion_mnist"]["epochs"] == 2


def test_every_training_setting_is_a_param_of_the_train_stage():
    # A key missing there would make `dvc exp run -S key=value` skip the retraining it asks for.
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["do"]
    assert set(TRAIN_KEYS) <= set(stage["params"])


CROSS_FIELD = {
    "nesterov without momentum": (lambda p, r: r.update(optimizer="sgd", nesterov=True, momentum=0.0),
                                  "runs.mlp_64-fashion_mnist.nesterov: nesterov needs optimizer sgd with momentum > 0"),
    "nesterov with adam": (lambda p, r: p.update(nesterov=True, momentum=0.9),
                           "nesterov: nesterov needs optimizer sgd with momentum > 0, got optimizer adam"),
    "negative split_seed": (lambda p, r: p["preprocess"].update(split_seed=-1), "preprocess.split_seed: expected >= 0, got -1"),
    "run named dot": (lambda p, r: p["runs"].update({".": {"model": "mlp_64", "dataset": "mnist"}}),
                      "runs..: expected a name of letters"),
    "hidden run name": (lambda p, r: p["runs"].update({".x": {"model": "mlp_64", "dataset": "mnist"}}),
                        "runs..x: expected a name of letters"),
}


@pytest.mark.parametrize("case", sorted(CROSS_FIELD))
def test_cross_field_rules_give_one_line_naming_the_key(case):
    change, expected = CROSS_FIELD[case]
    assert expected in error_for(change)


def test_nesterov_with_sgd_and_momentum_is_accepted():
    params = base_params()
    params["runs"]["mlp_64-fashion_mnist"].update(optimizer="sgd", momentum=0.9, nesterov=True)
    assert validate(params)["runs"]["mlp_64-fashion_mnist"]["nesterov"] is True


def test_val_fraction_zero_is_accepted():
    params = base_params()
    params["preprocess"]["val_fraction"] = 0
    assert validate(params)["preprocess"]["val_fraction"] == 0


def test_validate_stage_writes_its_output_only_for_a_valid_file(tmp_path, monkeypatch, capsys):
    from fashionbench.config import main
    from fashionbench.outputs import VALIDATED_PARAMS

    monkeypatch.chdir(tmp_path)
    params = base_params()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main([]) == 0 and VALIDATED_PARAMS.read_text() == "params.yaml is valid\n"
    VALIDATED_PARAMS.unlink()
    params["learning_rate"] = 0.1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main([]) == 1
    assert capsys.readouterr().err.strip().startswith("error: learning_rate: unknown key")
    assert not VALIDATED_PARAMS.exists()
