"""One MLflow run per pipeline run: its name and tags, its params and per-epoch metrics, its
model, and the guarantee that a failure never leaves it RUNNING.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import subprocess
import time
from pathlib import Path

from fashionbench.tracking.holders import holder_alive, holder_tags
from fashionbench.tracking.store import _setup_mlflow, check_reachable, experiment_id, store_lock


@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    """HEAD of the cwd's repository: in a queued experiment's temp copy, the baseline commit."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dvc_experiment() -> str:
    """The DVC experiment a stage runs in (`dvc exp run -n NAME` exports it), else "workspace"."""
    return os.environ.get("DVC_EXP_NAME") or "workspace"


def plain(cfg) -> dict:
    """A run's config as plain values (a RunConfig, or a mapping such as a trial's)."""
    return cfg.as_dict() if hasattr(cfg, "as_dict") else dict(cfg)


def display_name(run: str, experiment: str, part: str = "") -> str:
    """`<run> [<part>] (<experiment>)`, e.g. `lenet5_modern-mnist seed1 (lowlr)`: the run first, so
    model and dataset survive the UI cutting long names short; the experiment after, so the same
    run of two experiments still differs in the UI's tables and chart legends."""
    return f"{run}{' ' + part if part else ''} ({experiment})"


def run_name(cfg: dict) -> str:
    """A pipeline run's name in its DVC experiment."""
    return display_name(cfg["name"], dvc_experiment())


def run_tags(cfg: dict) -> dict[str, str]:
    """Tags that link an MLflow run to git and DVC; filter one `dvc exp run` by `tags.dvc_exp_name`."""
    return {
        "mlflow.source.git.commit": git_commit(),
        "git_commit": git_commit(),
        "dvc_exp_name": dvc_experiment(),
        "dvc_exp_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "dvc_run": cfg["name"],
        "dataset": cfg["dataset"],
        "model": cfg["model"],
        # Who holds the run while it is RUNNING: how the next start finds a SIGKILLed one.
        **holder_tags(),
    }


def end_stale_runs(cfg) -> list[str]:
    """Mark KILLED the RUNNING runs (children included) of this DVC run and experiment that a
    process on this host left behind when it died by SIGKILL; returns their ids.

    Runs held by a live process, or started on another host (a shared server), are left alone.
    """
    cfg = plain(cfg)
    mlflow = _setup_mlflow()
    tags = run_tags(cfg)
    query = (f"tags.dvc_run = '{cfg['name']}' and tags.dvc_exp_name = '{tags['dvc_exp_name']}' "
             f"and tags.host = '{tags['host']}' and attributes.status = 'RUNNING'")
    ended = []
    with store_lock():
        client = mlflow.MlflowClient()
        for found in client.search_runs([experiment_id()], filter_string=query, max_results=1000):
            if not holder_alive(found.data.tags):
                client.set_terminated(found.info.run_id, "KILLED")
                ended.append(found.info.run_id)
    return ended


def metric_key(history_column: str) -> str:
    """`train_accuracy` -> `train/accuracy`: a history column as a grouped MLflow metric name."""
    split, _, name = history_column.partition("_")
    return f"{split}/{name}" if split in ("train", "val", "test") and name else history_column


def mlflow_params(cfg: dict) -> dict[str, str]:
    return {k: str(v) for k, v in cfg.items()}


class RunTracker:
    """One MLflow run (new, or resumed by id); every call holds the store lock."""

    def __init__(self, run_id: str, cfg: dict | None = None):
        self.mlflow = _setup_mlflow()
        with store_lock():  # the first MlflowClient of a process opens (and may create) the store
            self.client = self.mlflow.MlflowClient()
        self.run_id = run_id
        self.cfg = cfg
        self.open_children: list[RunTracker] = []
        self.ended = False

    @classmethod
    def start(cls, cfg, parent_run_id: str | None = None, name: str | None = None) -> "RunTracker":
        cfg = plain(cfg)
        exp = experiment_id()
        tags = run_tags(cfg)
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        with store_lock():
            client = _setup_mlflow().MlflowClient()
            run = client.create_run(exp, run_name=name or run_name(cfg), tags=tags)
        tracker = cls(run.info.run_id, cfg)
        tracker.log_params(mlflow_params(cfg))
        return tracker

    @staticmethod
    def exists(run_id: str) -> bool:
        """Whether this store holds the run: a training restored from DVC's cache (a remote, the run
        cache) was logged wherever it trained, and that store may not be this one."""
        from mlflow.exceptions import MlflowException

        check_reachable()
        try:
            with store_lock():
                _setup_mlflow().MlflowClient().get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    @classmethod
    def resume(cls, run_id: str) -> "RunTracker":
        check_reachable()  # evaluate: fail in seconds, not after minutes of HTTP retries
        tracker = cls(run_id)
        with store_lock():
            tracker.client.update_run(run_id, status="RUNNING")
        tracker.set_tags(holder_tags())  # this process holds it now
        return tracker

    def child(self, seed: int) -> "RunTracker":
        """A nested run for one seed of a repeated run; ended with its parent if still open."""
        cfg = dict(self.cfg, seed=seed, seeds=[seed])
        child = RunTracker.start(cfg, parent_run_id=self.run_id,
                                 name=display_name(self.cfg["name"], dvc_experiment(), f"seed{seed}"))
        self.open_children.append(child)
        return child

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        with store_lock():
            self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        """Finite numbers only: a NaN loss is recorded by the `status` tag, not as a metric."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(v)]
        with store_lock():
            self.client.log_batch(self.run_id, metrics=items)

    def log_epoch(self, row: dict) -> None:
        """One epoch of the history as `train/…`, `val/…`, `test/…` at step = epoch: the UI
        groups charts by the part before the slash. Elapsed seconds stay in the history CSV."""
        self.log_metrics({metric_key(k): v for k, v in row.items() if k not in ("epoch", "seconds")},
                         step=row["epoch"])

    def log_table(self, data: dict, artifact_file: str) -> None:
        """A table artifact (columns -> lists), shown as a table in the UI's artifact view.

        Written here, not with MlflowClient.log_table: that one appends to an existing file, so
        every re-run of `evaluate` would add the rows again. The file is what log_table writes
        (pandas' "split" orientation), and the `mlflow.loggedArtifacts` tag marks it a table.
        """
        import json
        import tempfile

        from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

        columns = list(data)
        table = {"columns": columns, "data": [list(row) for row in zip(*(data[c] for c in columns))]}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / artifact_file
            path.write_text(json.dumps(table))
            self.log_artifact(path)
        with store_lock():
            logged = json.loads(self.client.get_run(self.run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
            entry = {"path": artifact_file, "type": "table"}
            if entry not in logged:
                self.client.set_tag(self.run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps(logged + [entry]))

    def has_metric(self, key: str) -> bool:
        with store_lock():
            return bool(self.client.get_metric_history(self.run_id, key))

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        with store_lock():
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path | str) -> None:
        """A file at the artifact root."""
        with store_lock():
            self.client.log_artifact(self.run_id, str(path))

    def log_artifact_as(self, path: Path | str, name: str) -> None:
        """A file logged at the artifact root under another name (metrics/<run>.json as metrics.json)."""
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            renamed = Path(tmp) / name
            shutil.copyfile(path, renamed)
            self.log_artifact(renamed)

    def finish(self, seed_summary: dict) -> None:
        """End a per-seed child run with its status (its per-epoch metrics are already logged)."""
        self.log_params({"train_seconds": seed_summary["train_seconds"]})
        self.set_tags({"status": seed_summary["status"], "diverged_epoch": seed_summary["diverged_epoch"] or ""})
        self.end()

    def finish_training(self, summary: dict, model) -> None:
        """Training's part of the run: status, timing, dataset, model; evaluate adds the rest."""
        self.set_tags({"status": summary["status"], "device": summary["device"], "precision": summary["precision"],
                       "threads": summary.get("threads") or ""})
        diverged = [s["diverged_epoch"] for s in summary["seeds"] if s["diverged_epoch"]]
        if diverged:
            self.set_tags({"diverged_epoch": min(diverged)})
        # Numbers with no curve are params (columns to sort by), not single-point metric charts.
        self.log_params({"parameters": summary["parameters"], "train_seconds": summary["train_seconds"]})
        self.log_dataset(summary["config"]["dataset"], summary["digest"])
        from fashionbench.core.models import ViewAveraged, tta_mode

        if tta_mode(summary["config"].get("tta")) != "none":  # the served model averages the views, as evaluate does
            model = ViewAveraged(model, summary["config"]["tta"])
        self.log_model(model, summary["config"]["name"])
        self.end()

    def log_dataset(self, dataset: str, digest: str, context: str = "training") -> None:
        """mlflow.log_input of the dataset; its digest comes from the raw files' md5s."""
        from mlflow.data.http_dataset_source import HTTPDatasetSource
        from mlflow.data.meta_dataset import MetaDataset

        url = {"fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist",
               "mnist": "https://yann.lecun.com/exdb/mnist/"}.get(dataset, dataset)
        ds = MetaDataset(source=HTTPDatasetSource(url=url), name=dataset, digest=digest)
        with store_lock(), self.mlflow.start_run(run_id=self.run_id):
            self.mlflow.log_input(ds, context=context)

    def log_model(self, model, name: str) -> None:
        """The model as an MLflow PyTorch model named `name` (the UI's Models tab lists it by that
        name), with signature and input example (pyfunc-loadable).

        Input: float32 (N, 1, 28, 28) in [0, 1]; output: 10 logits per image.
        """
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        # Contiguous layout: torch.export's weight packing takes channels_last weights for slices of
        # a larger tensor and warns "No complete tensor found in the group!" for every CNN.
        model = model.to("cpu", memory_format=torch.contiguous_format).eval()
        example = np.zeros((2, 1, 28, 28), dtype=np.float32)
        with torch.no_grad():
            output = model(torch.from_numpy(example)).numpy()
        signature = infer_signature(example, output)
        # Explicit requirements: inferring them imports and scans the environment (slow).
        reqs = [f"torch=={torch.__version__.split('+')[0]}"]
        with store_lock(), self.mlflow.start_run(run_id=self.run_id):
            info = mlflow.pytorch.log_model(model, name=name, signature=signature, input_example=example,
                                            pip_requirements=reqs)
        self.set_tags({"model_uri": info.model_uri})  # what evaluate registers (models:/m-<id>)

    def register_model(self, run: str, dataset: str, test_accuracy: float) -> tuple[str, bool]:
        """This run's logged model as a new version of `fashionbench-<run>`, tagged with its DVC
        experiment, git commit and test accuracy; `champion` if it is the dataset's best.
        Returns (version, whether it is the champion)."""
        from fashionbench.tracking import registry

        tags = self.client.get_run(self.run_id).data.tags
        with store_lock():  # one registration at a time: the champion check reads, then writes
            version = registry.register_version(self.client, self.run_id, run, dataset, test_accuracy,
                                                {k: tags.get(k, "") for k in ("dvc_exp_name", "git_commit")})
            return version, registry.crown_if_best(self.client, run, version, dataset, test_accuracy)

    def end(self, status: str = "FINISHED") -> None:
        """End this run and any child still open with `status` (FINISHED, FAILED or KILLED)."""
        for child in self.open_children:
            if not child.ended:
                child.end(status)
        if not self.ended:
            with store_lock():
                self.client.set_terminated(self.run_id, status)
            self.ended = True

    def fail(self) -> None:
        self.end("FAILED")


@contextlib.contextmanager
def ended_on_failure(tracker: "RunTracker | None"):
    """Any exception inside ends the run and its open children as FAILED, a stop signal
    (`stopping.Stopped`, KeyboardInterrupt) as KILLED; then the exception goes on.
    Ending is best effort: a store that is down must not hide the original error."""
    from fashionbench.core.signals import Stopped

    try:
        yield tracker
    except BaseException as exc:
        if tracker is not None:
            status = "KILLED" if isinstance(exc, (Stopped, KeyboardInterrupt)) else "FAILED"
            try:
                tracker.end(status)
            except Exception as end_error:  # noqa: BLE001 - report, then re-raise the original
                print(f"warning: could not mark MLflow run {tracker.run_id} {status}: {end_error}")
        raise
