import copy
import json

import pytest
import yaml

from fashionbench.core.config import ConfigError, load_params, validate
from fashionbench.core.schema import TRAIN_KEYS

from conftest import REPO, base_params


def test_the_repository_params_file_is_valid():
    params = load_params(REPO / "params.yaml")
    assert len(params["runs"]) == 13


def test_default_runs_cover_the_zoo_on_fashion_mnist_and_lenets_and_ours_on_mnist():
    from fashionbench.core.models import BEYOND_WRITEUPS, known_models

    runs = load_params(REPO / "params.yaml")["runs"]
    assert {c.model for c in runs.values() if c.dataset == "fashion_mnist"} == set(known_models())
    assert {c.model for c in runs.values() if c.dataset == "mnist"} == {"lenet5_classic", "lenet5_modern",
                                                                              *BEYOND_WRITEUPS}


def test_the_runs_beyond_the_write_ups_get_three_seeds_from_the_pipeline_and_an_extra_seeds_study():
    from fashionbench.core.catalogue import load_studies
    from fashionbench.core.models import BEYOND_WRITEUPS

    runs = load_params(REPO / "params.yaml")["runs"]
    studies = load_studies(REPO / "lab" / "studies.yaml").values()
    for name, cfg in runs.items():
        if cfg.model in BEYOND_WRITEUPS:
            extra = {seed for study in studies if study.extra_seeds and name in study.runs for seed in study.seeds}
            assert len(set(cfg.seeds) | extra) >= 3, name


def test_run_entry_overrides_top_level_defaults():
    params = base_params()
    params["lr"] = 0.5
    params["runs"]["mlp_64-fashion_mnist"]["epochs"] = 7
    cfg = validate(params)["runs"]["mlp_64-fashion_mnist"]
    assert (cfg.lr, cfg.epochs, cfg.name) == (0.5, 7, "mlp_64-fashion_mnist")


def test_seeds_default_to_the_single_seed():
    params = base_params()
    params["seed"] = 3
    assert validate(params)["runs"]["mlp_64-fashion_mnist"].seeds == [3]


def test_exponent_written_lr_is_read_as_a_number():
    params = yaml.safe_load("lr: 1e-3")  # YAML 1.1 reads this as a string
    merged = base_params() | params
    assert validate(merged)["runs"]["mlp_64-fashion_mnist"].lr == 0.001


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
# What this machine cannot train (core.feasibility): refused by validate, before DVC deletes anything.
INFEASIBLE = {
    "a split that leaves no batch": (lambda p, r: p["preprocess"].update(val_fraction=0.9999),
                                     "preprocess.val_fraction: 0.9999 leaves 6 training images of fashion_mnist, "
                                     "fewer than one batch (batch_size 64)"),
    "a run's split that leaves no batch": (lambda p, r: r.update(val_fraction=0.999),
                                           "runs.mlp_64-fashion_mnist.val_fraction: 0.999 leaves 60 training images"),
    "a smoke cap under one batch": (lambda p, r: p["preprocess"].update(max_train=50),
                                    "preprocess.max_train: 50 leaves 45 training images of fashion_mnist"),
    "an MLP too deep to build": (lambda p, r: r.update(depth=10_000_000),
                                 "runs.mlp_64-fashion_mnist.depth: 10000000 layers, expected at most 1000"),
    "an MLP too wide to build": (lambda p, r: r.update(width=2**63),
                                 "runs.mlp_64-fashion_mnist.width: 9223372036854775808, expected at most 1048576"),
    "an MLP too large for memory": (lambda p, r: r.update(width=1 << 20, depth=3),
                                    "runs.mlp_64-fashion_mnist.width: model mlp_64 would have"),
    "too many residual blocks": (lambda p, r: r.update(model="resnet_fast", blocks=[600, 600]),
                                 "runs.mlp_64-fashion_mnist.blocks: 1200 residual blocks, expected at most 1000"),
}


@pytest.mark.parametrize("case", sorted(INFEASIBLE))
def test_what_this_machine_cannot_train_gives_one_line_naming_the_key(case):
    change, expected = INFEASIBLE[case]
    assert expected in error_for(change)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("where", ["default", "run"])
def test_a_cuda_device_on_a_machine_without_one_is_refused_by_validation(where):
    change = (lambda p, r: p.update(device="cuda")) if where == "default" else (lambda p, r: r.update(device="cuda:1"))
    key = "device" if where == "default" else "runs.mlp_64-fashion_mnist.device"
    assert error_for(change).startswith(f"{key}: ") and "this machine has no CUDA device" in error_for(change)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_params_give_one_line_naming_the_key(case):
    change, expected = BAD[case]
    assert expected in error_for(change)


def test_resnet_fast_takes_its_blocks_per_stage_and_null_means_the_zoos():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runs"]["probe"] = {"model": "resnet_fast", "dataset": "mnist", "blocks": [0, 1, 2]}
    runs = validate(params)["runs"]
    assert runs["probe"].blocks == [0, 1, 2]
    assert runs["resnet_fast-mnist"].blocks is None


def test_a_run_keeps_the_prepared_split_unless_it_sets_its_own_val_fraction():
    runs = load_params(REPO / "params.yaml")["runs"]
    assert runs["fcn_400-fashion_mnist"].val_fraction is None  # seed 003 held out a validation set
    assert runs["mlp_64-fashion_mnist"].val_fraction == 0       # seed 000 trained on all 60,000
    assert runs["fcn_400-fashion_mnist"].split_seed == 0


def test_invalid_yaml_is_reported_with_its_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("lr: 0.1\nruns: [\n")
    with pytest.raises(ConfigError, match="params.yaml: not valid YAML at line"):
        load_params(path)


def test_max_epochs_caps_every_run():
    params = base_params()
    params["max_epochs"] = 2
    params["runs"]["mlp_64-fashion_mnist"]["epochs"] = 40
    assert validate(params)["runs"]["mlp_64-fashion_mnist"].epochs == 2


def test_every_training_setting_reaches_the_train_stage_in_its_resolved_config(tmp_path, monkeypatch):
    # A key missing there would make `dvc exp run -S key=value` skip the retraining it asks for.
    from fashionbench.stages import validate as validate_stage

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["do"]
    assert "data/config/${key}.json" in stage["deps"] and "params" not in stage
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base_params()))
    assert validate_stage.main([]) == 0
    resolved = json.loads((tmp_path / "data" / "config" / "mlp_64-fashion_mnist.json").read_text())
    assert set(TRAIN_KEYS) <= set(resolved)


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
    assert validate(params)["runs"]["mlp_64-fashion_mnist"].nesterov is True


def test_val_fraction_zero_is_accepted():
    params = base_params()
    params["preprocess"]["val_fraction"] = 0
    assert validate(params)["preprocess"].val_fraction == 0


def test_validate_stage_writes_its_output_only_for_a_valid_file(tmp_path, monkeypatch, capsys):
    from fashionbench.core.paths import VALIDATED_PARAMS
    from fashionbench.stages.validate import main

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


def test_a_config_stored_before_the_fast_options_existed_reads_as_they_were_off():
    from fashionbench.core.schema import RunConfig

    today = validate(base_params())["runs"]["mlp_64-fashion_mnist"].as_dict()
    old = {k: v for k, v in today.items() if k not in ("tta", "normalize", "shuffle", "blocks", "split_seed")}
    assert RunConfig.stored({**old, "tta": False}) == validate(base_params())["runs"]["mlp_64-fashion_mnist"]


def test_a_stored_config_that_cannot_be_read_gives_one_line_naming_the_key():
    from fashionbench.core.schema import RunConfig

    stored = validate(base_params())["runs"]["mlp_64-fashion_mnist"].as_dict() | {"lr": "fast"}
    with pytest.raises(ConfigError, match=r"^models/x/train.json: config.lr: expected a number, got 'fast'$"):
        RunConfig.stored(stored, "models/x/train.json: config.")


def test_a_runs_own_batch_larger_than_its_split_blames_the_batch():
    # 90 training images hold a batch of the shared 64, not the run's own 128.
    assert error_for(lambda p, r: (p["preprocess"].update(max_train=100), r.update(batch_size=128))) == (
        "runs.mlp_64-fashion_mnist.batch_size: 128 is more than the 90 training images of fashion_mnist it would batch")


def test_a_shared_split_too_small_for_any_batch_blames_the_split_not_a_runs_own_batch():
    assert error_for(lambda p, r: (p["preprocess"].update(val_fraction=0.9999), r.update(batch_size=128))) == (
        "preprocess.val_fraction: 0.9999 leaves 6 training images of fashion_mnist, fewer than one batch (batch_size 128)")
