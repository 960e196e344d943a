"""The MLflow UI links that `make repro` prints: the runs ranked by test accuracy, all of them
and one dataset at a time, with the accuracy as a visible column.

The UI keeps a saved view ("Views" menu) as an experiment tag `mlflow.sharedViewState.<key>`:
a JSON envelope (name, createdAt, updatedAt) around the page's state, zlib-compressed and
base64-encoded after `deflate;`; a link with `viewStateShareKey=<key>` opens it. The format is
the pinned UI's own (3.17: what its "Save view" writes, read back by its share-link loader).
Written with fixed keys, so printing the links again updates the views instead of adding copies.
"""
from __future__ import annotations

import base64
import json
import time
import zlib

from fashionbench.tracking.store import EXPERIMENT, _setup_mlflow, tracking_uri

UI_PORT = 5000

VIEW_TAG_PREFIX = "mlflow.sharedViewState."

# The pinned UI opens an experiment on its GenAI pages unless the URL (or the browser's saved
# "Model training" switch) says workflowType=machine_learning; the experiment tag alone does not.
WORKFLOW = "workflowType=machine_learning"

ACCURACY = "metrics.`test/accuracy`"

COLUMNS = [ACCURACY, "metrics.`test/accuracy_std`", "params.`dataset`", "params.`model`", "params.`epochs`",
           "params.`train_seconds`", "tags.`dvc_exp_name`", "tags.`precision`"]

RUN_NAME_COLUMN = "attributes.`Run Name`"

# Whole runs only: a seed or a tune trial is a child run (`mlflow.parentRunId`), and its own
# accuracy next to its run's mean over seeds would rank one training twice.
WHOLE_RUNS = "tags.`mlflow.parentRunId` IS NULL"

# key: (name in the Views menu, search filter)
VIEWS = {
    "fashionbench-ranked": ("Runs by test accuracy, both datasets", WHOLE_RUNS),
    "fashionbench-fashion_mnist": ("Fashion-MNIST runs by test accuracy", f"{WHOLE_RUNS} and tags.dataset = 'fashion_mnist'"),
    "fashionbench-mnist": ("MNIST runs by test accuracy", f"{WHOLE_RUNS} and tags.dataset = 'mnist'"),
}


def view_state(search_filter: str) -> dict:
    """The runs table's state: the filter, best test accuracy first, the columns to read it by, and
    a run-name column wide enough for `<model>-<dataset> (<experiment>)`."""
    return {
        "searchFilter": search_filter, "orderByKey": ACCURACY, "orderByAsc": False,
        "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": COLUMNS, "columnOrder": [RUN_NAME_COLUMN, *COLUMNS],
        "columnWidths": {RUN_NAME_COLUMN: 360, ACCURACY: 110},
        "runsHiddenMode": "SHOW_ALL",
    }


def encode_state(state: dict) -> str:
    return "deflate;" + base64.b64encode(zlib.compress(json.dumps(state).encode())).decode()


def decode_state(value: str) -> dict:
    return json.loads(zlib.decompress(base64.b64decode(value.removeprefix("deflate;"))))


def install_views(client, experiment) -> None:
    """Write (or update in place) the saved views on the experiment."""
    now = int(time.time() * 1000)
    for key, (name, search_filter) in VIEWS.items():
        old = experiment.tags.get(VIEW_TAG_PREFIX + key)
        created = json.loads(old).get("createdAt", now) if old else now
        envelope = {"name": name, "createdAt": created, "updatedAt": now, "state": encode_state(view_state(search_filter))}
        client.set_experiment_tag(experiment.experiment_id, VIEW_TAG_PREFIX + key, json.dumps(envelope))


def ui_links(base_url: str) -> dict[str, str]:
    """View key -> its link in the UI at `base_url`, after installing the views; with no experiment
    yet (nothing tracked), the experiments list under the key of the ranked view."""
    mlflow = _setup_mlflow()
    client = mlflow.MlflowClient()
    base = f"{base_url.rstrip('/')}/#/"
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return {"fashionbench-ranked": f"{base}experiments?{WORKFLOW}"}
    install_views(client, experiment)
    runs = f"{base}experiments/{experiment.experiment_id}/runs"
    return {key: f"{runs}?viewStateShareKey={key}&{WORKFLOW}" for key in VIEWS}


def ui_link(base_url: str) -> str:
    """The ranked runs of both datasets: the link `make repro` prints first."""
    return ui_links(base_url)["fashionbench-ranked"]


def print_links(base_url: str) -> None:
    links = ui_links(base_url)
    print(f"  runs by test accuracy:   {links['fashionbench-ranked']}")
    for key, label in (("fashionbench-fashion_mnist", "Fashion-MNIST only:"), ("fashionbench-mnist", "MNIST only:")):
        if key in links:
            print(f"  {label:<24} {links[key]}")


def main() -> int:
    """`python -m fashionbench.tracking`: how to open the MLflow UI on this project's runs."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        print("MLflow UI (the same views are in its Views menu):")
        print_links(uri)
        return 0
    print(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {uri} --port {UI_PORT}")
    print("  then open (the same views are in its Views menu):")
    print_links(f"http://127.0.0.1:{UI_PORT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
