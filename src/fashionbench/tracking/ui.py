"""The MLflow UI link that `make repro` prints: the runs table, best test accuracy first.
"""
from __future__ import annotations

from fashionbench.tracking.store import EXPERIMENT, _setup_mlflow, tracking_uri

UI_PORT = 5000


# The pinned UI (3.17) opens an experiment on its GenAI pages unless the URL (or the browser's
# saved "Model training" switch) says workflowType=machine_learning; the experiment tag alone
# does not. Sorted by test accuracy, best first, so the first row is the answer.
UI_RUNS_QUERY = "workflowType=machine_learning&orderByKey=metrics.%60test%2Faccuracy%60&orderByAsc=false"


def ui_link(base_url: str) -> str:
    """The experiment's training-runs table in the UI at `base_url` (the experiments list if none yet)."""
    mlflow = _setup_mlflow()
    exp = mlflow.MlflowClient().get_experiment_by_name(EXPERIMENT)
    where = f"experiments/{exp.experiment_id}/runs" if exp else "experiments"
    return f"{base_url.rstrip('/')}/#/{where}?{UI_RUNS_QUERY}"


def main() -> int:
    """`python -m fashionbench.tracking`: how to open the MLflow UI on this project's runs."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"MLflow UI: {ui_link(uri)}")
        return 0
    print(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {uri} --port {UI_PORT}")
    print(f"  then open {ui_link(f'http://127.0.0.1:{UI_PORT}')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
