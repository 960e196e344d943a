"""The report builder on fixture metrics: seed tables, verdicts, study layouts."""
import pytest

from fashionbench.reference import verdict
from fashionbench.report import study_figure, study_markdown


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
    seed = {r[0]: r[1:] for r in table_after(text, "Seed 003:")[2:]}
    assert seed["0.1"] == ["21.5 ± 2.5", "9.8 ± 2.3", "88.9 ± 2.5"]
    diffs = {r[0]: r[1:] for r in table_after(text, "Ours minus the seed's:")[2:]}
    assert diffs["0.001"][1] == "-1.7: reproduced (within ±4.47)"  # 87.9 ± 1.0 vs 89.6 ± 2.0: 2 sqrt(2² + 1²)


def test_seed003_heatmap_is_written(tmp_path):
    study_figure(fixture_optimizer_lr(), tmp_path / "heat.png")
    assert (tmp_path / "heat.png").stat().st_size > 1000


@pytest.mark.parametrize("ours, seed, pm, std, seeds, expected", [
    (88.0, 87.2, 2.1, 0.0, 1, "reproduced (within ±4.20)"),         # the seed's ± alone, twice
    (84.5, 87.2, 2.1, 0.5, 3, "reproduced (within ±4.32)"),         # 2 sqrt(2.1² + 0.5²)
    (87.5, 87.0, None, 0.2, 3, "reproduced (within ±0.57)"),        # no ±: the seed's run varies as ours, 2 sqrt(2) 0.2
    (86.0, 87.0, None, 0.2, 3, "lower than the seed (beyond ±0.57)"),
    (87.5, 87.0, None, 0.0, 1, "reproduced (one seed, within 1 point)"),
    (80.0, 87.0, None, 0.0, 1, "lower than the seed (one seed, beyond 1 point)"),
    (95.0, 87.0, 2.0, 1.0, 3, "higher than the seed (beyond ±4.47)"),
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
    from fashionbench.report import tuning_section

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
    import shutil

    from conftest import REPO
    from fashionbench.report import studies_section

    tuning_dir = fixture_tuning(tmp_path)
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(REPO / "studies" / "catalogue.yaml", studies / "catalogue.yaml")
    (studies / "optimizer_lr.json").write_text(json.dumps(fixture_optimizer_lr()))
    lines = studies_section(studies, tmp_path / "plots", tuning_dir)
    tuned = [line for line in lines if line.startswith("**Tuned**")]
    assert tuned == ["**Tuned** (`fashionbench tune fcn_400-fashion_mnist`, 3 trials, chosen on validation; see "
                     "*Tuning*): val accuracy 89.62, test 88.66, with lr 0.000867, optimizer adam."]
    assert lines.index(tuned[0]) > lines.index(next(line for line in lines if "| lr |" in line))
