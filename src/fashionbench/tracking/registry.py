"""The MLflow Model Registry: each evaluated run's model as a version of `fashionbench-<run>`,
and the alias `champion` on the best version per dataset.

Called by evaluate (which knows the test accuracy) inside the store lock, like every other
MLflow call of the pipeline. Re-running a run adds a version to its registered model; the
alias moves only to a version at least as accurate as the dataset's current champion.
"""
from __future__ import annotations

MODEL_PREFIX = "fashionbench-"


CHAMPION = "champion"


def registered_name(run: str) -> str:
    return f"{MODEL_PREFIX}{run}"


def register_version(client, run_id: str, run: str, dataset: str, test_accuracy: float, tags: dict) -> str:
    """Register the model logged in MLflow run `run_id` as a new version; returns the version."""
    import mlflow

    name = registered_name(run)
    # mlflow.register_model creates the registered model on first use and resolves MLflow 3's
    # logged-model URIs (models:/m-<id>), which a server accepts only with their model id.
    version = mlflow.register_model(logged_model_source(client, run_id), name, await_registration_for=0,
                                    tags={**tags, "dataset": dataset, "test_accuracy": f"{test_accuracy:.6f}"})
    client.set_registered_model_tag(name, "dvc_run", run)
    client.set_registered_model_tag(name, "dataset", dataset)
    return str(version.version)


def logged_model_source(client, run_id: str) -> str:
    """Where the run's logged model lives: the `model_uri` tag training set (MLflow 3 keeps
    logged models apart from run artifacts, as models:/m-<id>)."""
    return client.get_run(run_id).data.tags.get("model_uri") or f"runs:/{run_id}/model"


def champion_of(client, dataset: str) -> tuple[str, str, float] | None:
    """(model name, version, test accuracy) of the dataset's champion, if any."""
    for model in client.search_registered_models(filter_string=f"name LIKE '{MODEL_PREFIX}%'"):
        if model.tags.get("dataset") != dataset or CHAMPION not in model.aliases:
            continue
        version = client.get_model_version(model.name, model.aliases[CHAMPION])
        return model.name, version.version, float(version.tags.get("test_accuracy", "nan"))
    return None


def crown_if_best(client, run: str, version: str, dataset: str, test_accuracy: float) -> bool:
    """Give `version` of the run's model the alias `champion` when it is at least as accurate
    as the dataset's current champion (the alias leaves the previous model). Returns whether it did."""
    current = champion_of(client, dataset)
    if current is not None and not test_accuracy >= current[2]:
        return False
    name = registered_name(run)
    if current is not None and current[0] != name:
        client.delete_registered_model_alias(current[0], CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, version)
    return True
