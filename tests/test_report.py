"""The report builder on fixture metrics: seed tables, verdicts, study layouts."""
import pytest

from fashionbench.report.studies import study_figure, study_markdown
from fashionbench.report.verdicts import verdict
from fashionbench.report.zoo import fast_setup_text


def fixture_optimizer_lr() -> dict:
    """Known numbers: 2 seeds per cell; Adam at 0.1 diverged."""
    cells = []
    for optimizer in ("rmsprop", "adam", "sgd"):
        for lr in (0.1, 0.01, 0.001):
            acc = {"rmsprop": 0.80, "adam": 0.88, "sgd": 0.85}[optimizer] - lr
            diverged = optimizer == "adam" and lr == 0.1
            metrics = {"test_accuracy": 0.1 if diverged else acc, "test_accuracy_std": 0.01, "seeds": 2,
                       "status": "diverged" if diverged else "completed", "diverged_epoch": 3 if diverged else None}
            cells.append({"experiment": f"x-{optimizer}-{lr}", "params": {"optimizer": optimizer, "lr": lr},
                          "runs": {"fcn_400-fashion_mnist": {"metrics": metrics}}})
    return {"study": "optimizer_lr", "seed": "003", "title": "Optimizer x learning rate",
            "runs": ["fcn_400-fashion_mnist"], "grid": {"optimizer": ["rmsprop", "adam", "sgd"], "lr": [0.1, 0.01, 0.001]},
            "seeds": [0, 1], "wall_seconds": 1.0, "cells": cells}


def table_after(text: str, heading: str) -> list[list[str]]:
    lines = text.splitlines()
    start = lines.index(heading) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_seed003_table_has_the_seeds_layout_lr_rows_and_optimizer_columns():
    rows = table_after(study_markdown(fixture_optimizer_lr()), "Ours:")
    assert rows[0] == ["lr", "RMSProp", "Adam", "SGD"]
    assert [r[0] for r in rows[2:]] == ["0.1", "0.01", "0.001"]


def test_seed003_table_cells_are_mean_and_std_in_percent():
    rows = table_after(study_markdown(fixture_optimizer_lr()), "Ours:")
    by_lr = {r[0]: r[1:] for r in rows[2:]}
    assert by_lr["0.01"] == ["79.0 ± 1.0", "87.0 ± 1.0", "84.0 ± 1.0"]
    assert by_lr["0.1"][1] == "10.0 ± 1.0 (diverged)"


def test_seed003_table_sets_the_seeds_numbers_beside_ours():
    text = study_markdown(fixture_optimizer_lr())
    seed = {r[0]: r[1:] for r in table_after(text, "Write-up 003:")[2:]}
    assert seed["0.1"] == ["21.5 ± 2.5", "9.8 ± 2.3", "88.9 ± 2.5"]
    diffs = {r[0]: r[1:] for r in table_after(text, "Ours minus the write-up's:")[2:]}
    assert diffs["0.001"][1] == "-1.7: reproduced (within ±9.83)"  # 87.9 ± 1.0 (2 seeds) vs 89.6 ± 2.0


def test_seed003_heatmap_is_written(tmp_path):
    study_figure(fixture_optimizer_lr(), tmp_path / "heat.png")
    assert (tmp_path / "heat.png").stat().st_size > 1000


@pytest.mark.parametrize("ours, seed, pm, std, seeds, expected", [
    (88.0, 87.2, 2.1, 0.0, 1, "reproduced (within ±4.20)"),         # one seed: the write-up's two stds
    (84.5, 87.2, 2.1, 0.5, 3, "reproduced (within ±4.38)"),         # sqrt((2 x 2.1)² + (4.303 x 0.5 / sqrt 3)²)
    (87.1, 86.9, None, 0.06, 3, "reproduced (within ±0.30)"),       # no ±: a new run, 4.303 x 0.06 x sqrt(4/3)
    (86.5, 86.9, None, 0.06, 3, "lower than the write-up (beyond ±0.30)"),
    (87.5, 87.0, None, 0.0, 1, "reproduced (one seed, within 1 point)"),
    (80.0, 87.0, None, 0.0, 1, "lower than the write-up (one seed, beyond 1 point)"),
    (95.0, 87.0, 2.0, 1.0, 3, "higher than the write-up (beyond ±4.71)"),
    (64.0, 76.9, 3.0, 0.5, 2, "lower than the write-up (beyond ±7.50)"),  # seed 003's SGD at 0.001: two seeds of ours
    (None, 87.0, None, 0.0, 3, "no result"),
])
def test_verdict_weighs_the_gap_against_both_spreads(ours, seed, pm, std, seeds, expected):
    assert verdict(ours, seed, pm, std, seeds) == expected


def fixture_tuning(tmp_path):
    """tuning/fcn_400-fashion_mnist.json as `fashionbench tune` writes it: 3 trials, one stopped early."""
    import json

    trial = {"status": "TERMINATED", "epochs_run": 40, "val_accuracy": 0.89, "test_accuracy": 0.88}
    tuned = {"run": "fcn_400-fashion_mnist", "metric": "val_accuracy", "epochs": 40,
             "best": {"config": {"optimizer": "adam", "lr": 0.000867123}, "val_accuracy": 0.8962,
                      "test_accuracy": 0.8866, "command": "dvc exp run -S '++runs.fcn_400-fashion_mnist.lr=0.000867123'"},
             "trials": [trial, {**trial, "epochs_run": 4}, {**trial, "status": "FAILED", "epochs_run": 0}]}
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "fcn_400-fashion_mnist.json").write_text(json.dumps(tuned))
    return tmp_path / "tuning"


def test_the_tuning_section_sets_the_best_trial_beside_the_seed_and_the_default(tmp_path):
    from fashionbench.report.tuning import tuning_section

    tuning_dir = fixture_tuning(tmp_path)
    cfg = {"model": "fcn_400", "dataset": "fashion_mnist"}
    lines = tuning_section(tuning_dir, {"fcn_400-fashion_mnist": {"test_accuracy": 0.8447}}, {"fcn_400-fashion_mnist": cfg})
    row = next(line for line in lines if line.startswith("| fcn_400"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "fcn_400-fashion_mnist" and "(003)" in cells[1]
    assert cells[2:6] == ["84.47", "3 (1 stopped early)", "89.62", "88.66"]
    assert cells[6] == "lr 0.000867, optimizer adam"
    assert "- fcn_400-fashion_mnist: `dvc exp run -S '++runs.fcn_400-fashion_mnist.lr=0.000867123'`" in lines


def test_a_study_of_a_tuned_run_says_what_tuning_found_under_its_table(tmp_path):
    import json

    from fashionbench.report.studies import studies_section

    from conftest import REPO

    tuning_dir = fixture_tuning(tmp_path)
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "optimizer_lr.json").write_text(json.dumps(fixture_optimizer_lr()))
    lines = studies_section(studies, tmp_path / "plots", tuning_dir, REPO / "lab" / "studies.yaml")
    tuned = [line for line in lines if line.startswith("**Tuned**")]
    assert tuned == ["**Tuned** (`fashionbench tune fcn_400-fashion_mnist`, 3 trials, chosen on validation; see "
                     "*Tuning*): val accuracy 89.62, test 88.66, with lr 0.000867, optimizer adam."]
    assert lines.index(tuned[0]) > lines.index(next(line for line in lines if "| lr |" in line))


# ---- the model zoo table: seeds pooled from an extra-seeds study, and the studies behind a gap ----

def zoo_fixture(tmp_path, study_cfg_change=None, finding=None, study_cfg_lacks=(), precisions=(None, None)):
    """cnn_small-fashion_mnist: the pipeline's seed 0 at 88.0%, zoo_seeds' seeds 1 and 2 at 88.2 and 88.4."""
    import json

    import yaml

    from fashionbench.core.config import load_params

    params = load_params()
    cfg = params["runs"]["cnn_small-fashion_mnist"].as_dict()  # the report reads configs as plain values
    configs = {"cnn_small-fashion_mnist": cfg}
    studies_dir = tmp_path / "studies"
    studies_dir.mkdir()
    catalogue = {"zoo_seeds": {"title": "More seeds", "runs": ["cnn_small-fashion_mnist"], "seeds": [1, 2],
                               "extra_seeds": True},
                 "training_set": {"title": "The training set", "runs": ["cnn_small-fashion_mnist"],
                                  "grid": {"val_fraction": [0.1, 0]}, "explains": ["cnn_small-fashion_mnist"],
                                  **({"finding": finding} if finding else {})}}
    (studies_dir / "catalogue.yaml").write_text(yaml.safe_dump(catalogue))
    trained = {**cfg, "seeds": [1, 2], **(study_cfg_change or {})}
    trained = {k: v for k, v in trained.items() if k not in study_cfg_lacks}
    metrics = {"test_accuracy": 0.883, "test_accuracy_per_seed": [0.882, 0.884], "seeds": 2, "status": "completed"}
    if precisions[1]:  # what the study's seeds computed in (its evaluation's details)
        metrics["precision"] = precisions[1]
    (studies_dir / "zoo_seeds.json").write_text(json.dumps({
        "study": "zoo_seeds", "extra_seeds": True, "seeds": [1, 2], "runs": ["cnn_small-fashion_mnist"], "grid": {},
        "cells": [{"experiment": "zoo_seeds-defaults", "params": {}, "configs": {"cnn_small-fashion_mnist": trained},
                   "runs": {"cnn_small-fashion_mnist": {"metrics": metrics}}}]}))
    evals = {"cnn_small-fashion_mnist": {"test_accuracy_per_seed": [0.880],
                                         **({"precision": precisions[0]} if precisions[0] else {})}}
    run_metrics = {"cnn_small-fashion_mnist": {"test_accuracy": 0.880, "status": "completed", "seeds": 1}}
    return configs, evals, run_metrics, studies_dir


def zoo_lines(tmp_path, **kwargs) -> list[str]:
    from fashionbench.core.catalogue import load_studies
    from fashionbench.report.zoo import pooled_seeds, zoo_table

    configs, evals, run_metrics, studies_dir = zoo_fixture(tmp_path, **kwargs)
    pooled = pooled_seeds(configs, evals, studies_dir)
    return zoo_table(run_metrics, configs, False, pooled, load_studies(studies_dir / "catalogue.yaml"), studies_dir)


def zoo_row(lines: list[str]) -> list[str]:
    row = next(line for line in lines if line.startswith("| cnn_small-fashion_mnist"))
    return [c.strip() for c in row.strip("|").split("|")]


def test_the_zoo_row_is_the_mean_and_std_of_the_pipelines_and_the_studys_seeds(tmp_path):
    row = zoo_row(zoo_lines(tmp_path))
    assert row[5:7] == ["88.20 ± 0.20", "3"]  # 88.0, 88.2, 88.4


def test_a_study_that_trained_other_settings_is_left_out_and_named(tmp_path):
    lines = zoo_lines(tmp_path, study_cfg_change={"epochs": 5})
    assert zoo_row(lines)[5:7] == ["88.00", "1"]
    assert any("`fashionbench study zoo_seeds` trained it with other settings" in line for line in lines)


def test_a_study_whose_seeds_computed_in_another_precision_is_left_out_and_named(tmp_path):
    # precision auto is bf16 autocast on one CPU and float32 on another: the same settings, other arithmetic.
    lines = zoo_lines(tmp_path, precisions=("bf16 autocast", "float32"))
    assert zoo_row(lines)[5:7] == ["88.00", "1"]
    assert any("`fashionbench study zoo_seeds` trained it with other settings" in line for line in lines)
    (tmp_path / "same").mkdir()
    assert zoo_row(zoo_lines(tmp_path / "same", precisions=("bf16 autocast", "bf16 autocast")))[5:7] == ["88.20 ± 0.20", "3"]


def test_a_runs_unknown_precision_pools_the_studys_seeds(tmp_path):
    # an evaluation from before the precision was recorded: nothing to compare, as for any other key
    assert zoo_row(zoo_lines(tmp_path, precisions=(None, "bf16 autocast")))[5:7] == ["88.20 ± 0.20", "3"]


def test_a_study_stored_before_a_key_existed_trained_as_its_old_behaviour(tmp_path):
    # zoo_seeds ran before `shuffle` existed, and every run reshuffled then, as shuffle: true does now.
    assert zoo_row(zoo_lines(tmp_path, study_cfg_lacks=("shuffle",)))[5:7] == ["88.20 ± 0.20", "3"]


def test_a_gap_names_the_study_that_tests_it_and_its_finding(tmp_path):
    lines = zoo_lines(tmp_path, finding="The held-out images cost 0.3 points.")
    assert zoo_row(lines)[8].startswith("lower than the write-up")  # 88.2 ± 0.2 against 90.7
    text = "\n".join(lines)
    assert "- cnn_small-fashion_mnist, lower than the write-up" in text
    assert "tested by `fashionbench study training_set` (The training set): not run yet." in text


def test_a_gap_shows_the_finding_of_the_study_once_it_has_run(tmp_path):
    from fashionbench.core.catalogue import load_studies
    from fashionbench.report.zoo import pooled_seeds, zoo_table

    configs, evals, run_metrics, studies_dir = zoo_fixture(tmp_path, finding="The held-out images cost 0.3 points.")
    (studies_dir / "training_set.json").write_text("{}")
    lines = zoo_table(run_metrics, configs, False, pooled_seeds(configs, evals, studies_dir),
                      load_studies(studies_dir / "catalogue.yaml"), studies_dir)
    assert "  tested by `fashionbench study training_set` (The training set): The held-out images cost 0.3 points." in lines


def test_a_gap_no_study_explains_says_so(tmp_path):
    configs, evals, run_metrics, studies_dir = zoo_fixture(tmp_path)
    from fashionbench.report.zoo import pooled_seeds, zoo_table

    lines = zoo_table(run_metrics, configs, False, pooled_seeds(configs, evals, studies_dir), {}, studies_dir)
    assert "  no study in lab/studies.yaml explains it yet." in lines


def test_a_gap_shows_where_our_test_curve_peaks(tmp_path):
    from fashionbench.report.zoo import pooled_seeds, zoo_table

    configs, evals, run_metrics, studies_dir = zoo_fixture(tmp_path)
    history = [{"epoch": 1, "test_accuracy": 0.85}, {"epoch": 2, "test_accuracy": 0.885}, {"epoch": 3, "test_accuracy": 0.88}]
    lines = zoo_table(run_metrics, configs, False, pooled_seeds(configs, evals, studies_dir), {}, studies_dir,
                      {"cnn_small-fashion_mnist": history})
    assert "  the best epoch of our seed 0's test curve: 88.50% at epoch 2 of 3 (the last: 88.00%)." in lines


def test_a_fast_runs_setup_names_the_options_it_turns_on_and_no_others():
    from fashionbench.core.config import load_params

    from conftest import REPO

    cfg = dict(load_params(REPO / "params.yaml")["runs"]["resnet_fast-mnist"], lr=0.1, blocks=[0, 1, 2], epochs=21,
               random_erasing=0.0, warmup_epochs=0, progressive_epochs=0)
    text = fast_setup_text(cfg)
    assert text.startswith("sgd nesterov 0.1, 21 epochs, batch 256, width 16, blocks [0, 1, 2], inputs standard")
    assert "erasing" not in text and "warm-up" not in text and " px" not in text  # off in this run
    assert fast_setup_text({**cfg, "progressive_size": 20, "progressive_epochs": 9}).endswith(", 9 epochs at 20 px")


# ---- beyond the write-ups: the strong runs' seeds pooled from an extra-seeds study too ----

def beyond_lines(tmp_path, study_cfg_change=None) -> list[str]:
    import json

    from fashionbench.core.config import load_params
    from fashionbench.report.zoo import beyond_writeups_section, pooled_seeds

    run = "resnet_fast-fashion_mnist"
    cfg = {**load_params()["runs"][run].as_dict(), "seeds": [0]}  # the pipeline trains seed 0
    studies_dir = tmp_path / "studies"
    studies_dir.mkdir()
    trained = {**cfg, "seeds": [1, 2], **(study_cfg_change or {})}
    metrics = {"test_accuracy": 0.941, "test_accuracy_per_seed": [0.940, 0.942], "seeds": 2, "status": "completed"}
    (studies_dir / "strong_seeds.json").write_text(json.dumps({
        "study": "strong_seeds", "extra_seeds": True, "seeds": [1, 2], "runs": [run], "grid": {},
        "cells": [{"experiment": "strong_seeds-defaults", "params": {}, "configs": {run: trained},
                   "runs": {run: {"metrics": metrics}}}]}))
    pooled = pooled_seeds({run: cfg}, {run: {"test_accuracy_per_seed": [0.938]}}, studies_dir)
    run_metrics = {run: {"test_accuracy": 0.938, "status": "completed", "seeds": 1, "val_accuracy": 0.94}}
    return beyond_writeups_section(run_metrics, {run: cfg}, pooled)


def beyond_row(lines: list[str]) -> list[str]:
    row = next(line for line in lines if line.startswith("| resnet_fast-fashion_mnist"))
    return [c.strip() for c in row.strip("|").split("|")]


def test_a_strong_runs_row_pools_the_pipelines_seed_with_the_studys(tmp_path):
    assert beyond_row(beyond_lines(tmp_path))[2:4] == ["3", "94.00 ± 0.20"]  # 93.8, 94.0, 94.2


def test_a_strong_runs_study_of_other_settings_is_left_out_and_named(tmp_path):
    lines = beyond_lines(tmp_path, study_cfg_change={"epochs": 5})
    assert beyond_row(lines)[2:4] == ["1", "93.80"]
    assert any("`fashionbench study strong_seeds` trained these runs with other settings" in line for line in lines)
