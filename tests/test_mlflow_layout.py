"""What a person sees in the MLflow UI, read back through MlflowClient: the experiment opens
on its training runs, names tell experiments apart, seeds nest under their run, metrics come
in train/val/test groups with one point per epoch, static numbers are params."""
import json
import warnings

import pytest

from fashionbench.stages import evaluate, train

SEEDS_RUN = "lenet5_modern-mnist"  # seeds [0, 1] in the workspace fixture


@pytest.fixture
def client(store):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=store)


def runs_by_name(client) -> dict:
    exp = client.get_experiment_by_name("fashionbench")
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id], max_results=100)}


def test_the_experiment_is_tagged_as_model_training(client):
    assert train.main(["mlp_64-fashion_mnist"]) == 0
    exp = client.get_experiment_by_name("fashionbench")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_run_name_is_the_run_then_its_dvc_experiment(client, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "lowlr")
    assert train.main(["mlp_64-fashion_mnist"]) == 0
    [r] = runs_by_name(client).values()
    assert r.info.run_name == "mlp_64-fashion_mnist (lowlr)" and r.data.tags["dvc_exp_name"] == "lowlr"


def test_seeds_are_child_runs_with_curves_under_a_parent_with_the_summary(client):
    assert train.main([SEEDS_RUN]) == 0 and evaluate.main([SEEDS_RUN]) == 0
    runs = runs_by_name(client)
    parent = runs[f"{SEEDS_RUN} (workspace)"]
    for seed in (0, 1):
        child = runs[f"{SEEDS_RUN} seed{seed} (workspace)"]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert set(child.data.metrics) == {f"{s}/{m}" for s in ("train", "val", "test") for m in ("loss", "accuracy")}
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val/accuracy")] == [1]
        assert float(child.data.params["train_seconds"]) > 0
    assert set(parent.data.metrics) == {"test/accuracy", "test/accuracy_std", "test/loss", "val/accuracy"}
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "test/accuracy")] == [1]
    assert int(parent.data.params["parameters"]) > 0
    listed = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"per_class_accuracy.json", "curves.png", "metrics.json", "evaluation.json"} <= listed


def test_a_cnn_is_logged_without_torch_export_warnings(client):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train.main([SEEDS_RUN]) == 0  # lenet5_modern: conv weights, channels_last where it helps
    assert not [w for w in caught if "No complete tensor" in str(w.message)]


def test_a_run_with_tta_logs_a_model_that_averages_the_views_of_each_image(client, workspace):
    import mlflow.pyfunc
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from fashionbench.core.config import run_config
    from fashionbench.core.engine import predict
    from fashionbench.core.models import model_from_config
    from fashionbench.core.paths import checkpoint_path

    from conftest import set_run

    set_run(workspace, "mlp_64-fashion_mnist", model="resnet_fast", width=4, tta="flip_shift", precision="float32")
    assert train.main(["mlp_64-fashion_mnist"]) == 0
    parent = runs_by_name(client)["mlp_64-fashion_mnist (workspace)"]
    served = mlflow.pyfunc.load_model(parent.data.tags["model_uri"])
    images = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cfg = run_config("mlp_64-fashion_mnist")
    model = model_from_config(cfg)
    model.load_state_dict(load_file(checkpoint_path(cfg.name, 0)))
    expected = predict(model, images, 8, "float32", tta="flip_shift")
    got = served.predict(images.unsqueeze(1).float().numpy() / 255)
    assert np.allclose(got, expected.numpy(), atol=1e-5)
    assert not np.allclose(got, predict(model, images, 8, "float32").numpy(), atol=1e-5)


def test_evaluating_again_replaces_the_table_and_adds_no_second_summary_point(client):
    import json
    from pathlib import Path

    assert train.main([SEEDS_RUN]) == 0
    assert evaluate.main([SEEDS_RUN]) == 0 and evaluate.main([SEEDS_RUN]) == 0  # e.g. after a figure change
    parent = runs_by_name(client)[f"{SEEDS_RUN} (workspace)"]
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "test/accuracy")] == [1]
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "per_class_accuracy.json")).read_text())
    assert len(table["data"]) == 10
    assert json.loads(parent.data.tags["mlflow.loggedArtifacts"]) == [{"path": "per_class_accuracy.json", "type": "table"}]


def test_each_logged_model_is_named_after_its_run(client):
    assert train.main(["mlp_64-fashion_mnist"]) == 0 and train.main([SEEDS_RUN]) == 0
    exp = client.get_experiment_by_name("fashionbench")
    assert sorted(m.name for m in client.search_logged_models([exp.experiment_id])) == [SEEDS_RUN, "mlp_64-fashion_mnist"]


def test_the_printed_links_open_views_that_rank_whole_runs_by_test_accuracy(client):
    from fashionbench.tracking import ui

    assert train.main(["mlp_64-fashion_mnist"]) == 0 and train.main([SEEDS_RUN]) == 0
    assert evaluate.main(["mlp_64-fashion_mnist"]) == 0 and evaluate.main([SEEDS_RUN]) == 0
    links = ui.ui_links("http://127.0.0.1:5000")
    exp = client.get_experiment_by_name("fashionbench")
    assert links["fashionbench-ranked"] == (f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
                                           "?viewStateShareKey=fashionbench-ranked&workflowType=machine_learning")
    expected = {"fashionbench-ranked": {"mlp_64-fashion_mnist (workspace)", f"{SEEDS_RUN} (workspace)"},
                "fashionbench-fashion_mnist": {"mlp_64-fashion_mnist (workspace)"},
                "fashionbench-mnist": {f"{SEEDS_RUN} (workspace)"}}
    for key, names in expected.items():
        envelope = json.loads(exp.tags[ui.VIEW_TAG_PREFIX + key])
        state = ui.decode_state(envelope["state"])
        assert state["orderByKey"] == "metrics.`test/accuracy`" and state["orderByAsc"] is False
        assert state["selectedColumns"][0] == "metrics.`test/accuracy`"
        # The view's filter, as the UI sends it to the store: whole runs of its dataset, no seeds.
        found = client.search_runs([exp.experiment_id], filter_string=state["searchFilter"])
        assert {r.info.run_name for r in found} == names


def test_printing_the_links_again_updates_the_views_in_place(client):
    from fashionbench.tracking import ui

    assert train.main(["mlp_64-fashion_mnist"]) == 0
    ui.ui_links("http://127.0.0.1:5000")
    first = client.get_experiment_by_name("fashionbench").tags
    ui.ui_links("http://127.0.0.1:5000")
    again = client.get_experiment_by_name("fashionbench").tags
    views = sorted(k for k in again if k.startswith(ui.VIEW_TAG_PREFIX))
    assert views == sorted(ui.VIEW_TAG_PREFIX + key for key in ui.VIEWS)
    assert all(json.loads(again[k])["createdAt"] == json.loads(first[k])["createdAt"] for k in views)
