"""lab/studies.yaml: the studies as data, validated like params.yaml, read by the study
command and the report (which no longer import each other)."""
import shutil

import pytest
import yaml

from fashionbench.core.catalogue import CatalogueError, load_studies
from fashionbench.core.config import ConfigError
from fashionbench.lab import study
from fashionbench.report.studies import study_figure, study_markdown

from conftest import REPO

SEEDS_STUDIES = ["optimizer_lr", "dropout", "init", "epochs", "optimizer_patch_mlp", "regularised_cnn"]


@pytest.fixture
def catalogue(tmp_path):
    path = tmp_path / "catalogue.yaml"
    shutil.copy(REPO / "lab" / "studies.yaml", path)
    return path


def add(path, **entries):
    data = yaml.safe_load(path.read_text())
    data.update(entries)
    path.write_text(yaml.safe_dump(data))


def test_the_catalogue_holds_the_seeds_studies():
    studies = load_studies(REPO / "lab" / "studies.yaml")
    assert list(studies)[:len(SEEDS_STUDIES)] == SEEDS_STUDIES
    assert studies["optimizer_lr"].grid == {"optimizer": ["rmsprop", "adam", "sgd"], "lr": [0.1, 0.01, 0.001]}
    assert studies["optimizer_lr"].seeds == (0, 1) and studies["epochs"].seeds == (0,)


def test_the_zoo_seeds_study_adds_seeds_to_every_zoo_run():
    from fashionbench.core.config import load_params
    from fashionbench.core.models import BEYOND_WRITEUPS

    zoo_seeds = load_studies(REPO / "lab" / "studies.yaml")["zoo_seeds"]
    runs = {run for run, cfg in load_params(REPO / "params.yaml")["runs"].items() if cfg.model not in BEYOND_WRITEUPS}
    assert zoo_seeds.extra_seeds and not zoo_seeds.grid and set(zoo_seeds.runs) == runs
    assert zoo_seeds.seeds == (1, 2)  # with the pipeline's seed 0: three


def test_a_study_added_to_the_file_is_listed_by_the_study_command(catalogue, monkeypatch, capsys):
    add(catalogue, my_batch={"title": "Batch size", "runs": ["mlp_64-fashion_mnist"], "grid": {"batch_size": [32, 128]}})
    monkeypatch.chdir(catalogue.parent.parent)
    monkeypatch.setattr(study, "CATALOGUE_FILE", catalogue)
    monkeypatch.setattr(study, "load_studies", lambda: load_studies(catalogue))
    assert study.main(["--list"]) == 0
    assert "my_batch               yours: mlp_64-fashion_mnist; batch_size [32, 128]; seeds [0]" in capsys.readouterr().out


def test_a_study_of_your_own_gets_its_table_in_the_report(tmp_path):
    result = {"study": "my_batch", "seed": None, "title": "Batch size", "runs": ["mlp_64-fashion_mnist"],
              "grid": {"batch_size": [32, 128]}, "seeds": [0],
              "cells": [{"experiment": f"my_batch-{b}", "params": {"batch_size": b},
                         "runs": {"mlp_64-fashion_mnist": {"metrics": {"test_accuracy": acc, "seeds": 1}}}}
                        for b, acc in ((32, 0.86), (128, 0.84))]}
    text = study_markdown(result)
    assert "| batch_size | mlp_64-fashion_mnist |" in text and "| 32 | 86.0 |" in text and "| 128 | 84.0 |" in text
    study_figure(result, tmp_path / "my_batch.png")
    assert (tmp_path / "my_batch.png").stat().st_size > 1000


@pytest.mark.parametrize("entry, message", [
    ({"title": "t", "runs": ["r"], "colour": 1},
     "bad.colour: unknown key, expected one of: explains, extra_seeds, finding, grid, runs, seed, seeds, title"),
    ({"title": "t", "runs": ["r"], "explains": "cnn_small"}, "bad.explains: expected a list of run or study names"),
    ({"title": "t", "runs": ["r"], "finding": 3}, "bad.finding: expected one sentence on one line"),
    ({"title": "t", "runs": ["r"], "extra_seeds": "yes"}, "bad.extra_seeds: expected true or false"),
    ({"title": "t", "runs": ["r"], "extra_seeds": True, "grid": {"lr": [0.1]}}, "bad.extra_seeds: a study of extra seeds"),
    ({"title": "t", "runs": []}, "bad.runs: expected a non-empty list of params.yaml run names"),
    ({"title": "t", "runs": ["r"], "grid": {"learning_rate": [0.1]}}, "bad.grid.learning_rate: not a training key"),
    ({"title": "t", "runs": ["r"], "grid": {"lr": [0.1, -1]}}, "bad.grid.lr[1]: expected > 0, got -1"),
    ({"title": "t", "runs": ["r"], "grid": {"optimizer": ["sdg"]}}, "bad.grid.optimizer[0]: expected one of"),
    ({"title": "t", "runs": ["r"], "seeds": [0, "x"]}, "bad.seeds: expected a non-empty list of integers"),
    ({"runs": ["r"]}, "bad.title: expected a non-empty string"),
])
def test_a_bad_entry_is_one_line_naming_the_file_study_and_key(catalogue, entry, message):
    add(catalogue, bad=entry)
    with pytest.raises(ConfigError) as caught:
        load_studies(catalogue)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"{catalogue}: ") and message in text


def test_a_missing_catalogue_is_named(tmp_path):
    with pytest.raises(CatalogueError, match="catalogue.yaml: not found"):
        load_studies(tmp_path / "catalogue.yaml")


def test_the_report_reads_the_catalogue_not_the_study_command():
    from test_stage_deps import import_closure

    report = import_closure("fashionbench.stages.report")
    assert "fashionbench.core.catalogue" in report
    assert not any(module.startswith("fashionbench.lab") for module in report)
    assert "fashionbench.core.catalogue" in import_closure("fashionbench.lab.study")
