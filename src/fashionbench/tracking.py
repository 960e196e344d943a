"""MLflow: where runs go, and how the train and evaluate stages share one MLflow run.

Default store: `sqlite:///<repo>/mlflow.db` with artifacts in `<repo>/mlartifacts`, both
absolute. Queued DVC experiments run in temporary copies under `<repo>/.dvc/tmp/exps/`;
the store is resolved to the real repository above them (see `repo_root`), so nothing is
logged into a copy that DVC throws away. `MLFLOW_TRACKING_URI` overrides (e.g. a shared
server); a relative SQLite path in it is taken relative to the repository, not the copy.

mlflow is imported inside functions: it takes seconds to import, and stages that do not
log (download, preprocess) or a `dvc repro` with nothing to do should not pay for it.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import math
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

EXPERIMENT = "fashionbench"
DB_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"
_EXPS_PARTS = (".dvc", "tmp", "exps")


class TrackingError(Exception):
    """The tracking store cannot be used (one line naming the URI)."""


def repo_root(cwd: Path | None = None) -> Path:
    """The repository whose store we log to: the real repository, never a DVC temp copy.

    Checked against DVC 3.67 (dvc/repo/experiments/executor/local.py, queue/base.py,
    stage/run.py) and by experiment: `dvc repro` and `dvc exp run` run a stage in the
    stage's wdir inside the workspace; `dvc exp run --queue` + `dvc queue start` (and
    `--temp`) run it in a copy `<repo>/.dvc/tmp/exps/tmpXXXXXXXX` (`.../exps/standalone/...`
    for --temp), whose `git rev-parse HEAD` is the baseline commit. DVC exports DVC_ROOT to
    every stage: the repository root, and for queued/temp experiments explicitly the
    *parent* repository's root, not the copy's. So DVC_ROOT comes first, but only when the
    cwd lies inside it (a DVC_ROOT inherited from an unrelated outer pipeline, e.g. a stage
    that runs these tests, is ignored: DVC keeps an existing DVC_ROOT in a plain `repro`).
    Then the path itself: the part above `/.dvc/tmp/exps/`. Then the cwd (stages outside DVC).
    """
    here = (cwd or Path.cwd()).resolve()
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root:
        root = Path(dvc_root).resolve()
        if here == root or root in here.parents:
            return root
    parts = here.parts
    for i in range(1, len(parts) - len(_EXPS_PARTS) + 1):
        if parts[i:i + len(_EXPS_PARTS)] == _EXPS_PARTS:
            return Path(*parts[:i])
    return here


def default_uri() -> str:
    return f"sqlite:///{repo_root() / DB_NAME}"


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative paths: relative to the repository)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path) if os.path.isabs(path) else repo_root() / path


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, or the default store; relative local stores made absolute."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
    if uri.startswith("sqlite:///") and not os.path.isabs(uri[len("sqlite:///"):]):
        db = _sqlite_file(uri)
        if db is not None:
            query = uri.partition("?")[1] + uri.partition("?")[2]
            return f"sqlite:///{db}{query}"
    if "://" not in uri and not uri.startswith("file:") and uri != "databricks" and not os.path.isabs(uri):
        return (repo_root() / uri).as_uri()  # a bare relative path: a file store in the repository
    return uri


def uses_default_store() -> bool:
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI itself, so compare, not just test.
    return tracking_uri() == default_uri()


_lock = threading.local()  # per thread: tune's interrupt watchdog writes while the main thread may hold it


@contextlib.contextmanager
def store_lock():
    """Serialize writers of a SQLite store (the default one included) across processes.

    SQLite takes one writer at a time. MLflow's SQLAlchemy store turns a busy database
    into "database is locked" errors after a short timeout, and two processes that
    create the schema or the experiment at the same moment race each other (MlflowClient()
    itself creates the tables on first use). Parallel queued experiments
    (`dvc queue start -j 2`) do exactly that, so every group of calls that touches the
    store holds an exclusive flock on `<db>.lock` (`<repo>/mlflow.db.lock` by default).
    A call takes milliseconds; with one worker the lock is free and costs nothing.
    Re-entrant within a thread. A server (MLFLOW_TRACKING_URI=http://...) serializes by
    itself, so no lock is taken there.
    """
    depth = getattr(_lock, "depth", 0)
    db = _sqlite_file(tracking_uri())
    if db is None or depth:
        _lock.depth = depth + 1
        try:
            yield
        finally:
            _lock.depth = depth
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    # A file opened per call: flock excludes other open files, so another thread of this
    # process waits here as another process does.
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _lock.depth = 1
        try:
            yield
        finally:
            _lock.depth = 0
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_reachable(uri: str | None = None, timeout: float = 5.0) -> None:
    """Fail in seconds, naming the URI, if an HTTP tracking server does not answer."""
    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow server {uri} answered /health with HTTP {response.status}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) does not answer: {reason}") from None


def _setup_mlflow():
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def artifact_location() -> str | None:
    """Where a new experiment keeps its artifacts.

    A SQLite store: `mlartifacts/` beside the database file, as an absolute file URI (MLflow's
    own default, `./mlruns`, would be relative to a temp copy's cwd). A server: None, so the
    server decides (`mlflow server --artifacts-destination DIR` gives `mlflow-artifacts:/<id>`,
    uploaded through the server).
    """
    db = _sqlite_file(tracking_uri())
    return (db.parent / ARTIFACTS_NAME).as_uri() if db is not None else None


# What kind of experiment this is, for the MLflow UI: model training, not GenAI. The UI's own
# code reads this tag, but the pinned release (3.17) decides by `workflowType` alone (see
# UI_RUNS_QUERY below and README "Compare variants"); the tag is set for releases that read it.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def experiment_id() -> str:
    """The `fashionbench` experiment, created (or restored if deleted) on first use, and
    tagged as model training (see EXPERIMENT_KIND_TAG)."""
    mlflow = _setup_mlflow()
    from mlflow.exceptions import MlflowException

    with store_lock():
        client = mlflow.MlflowClient()
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            try:
                return client.create_experiment(EXPERIMENT, artifact_location=artifact_location(),
                                                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
            except MlflowException:
                # Another process created it first (a server does not take our lock).
                exp = client.get_experiment_by_name(EXPERIMENT)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:  # a store made before the tag
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return exp.experiment_id


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


def run_name(cfg: dict) -> str:
    """`<DVC experiment>/<run>`: the same run of two experiments must differ in the UI's tables
    and chart legends, and the experiment first survives the UI cutting long names short."""
    return f"{dvc_experiment()}/{cfg['name']}"


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


def process_start(pid: int) -> str:
    """When process `pid` started, in clock ticks since boot (Linux /proc), or "" if unknown.
    A pid together with its start time names one process: pids are reused, this pair is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime


def holder_alive(tags: dict) -> bool:
    """Whether the process named by a run's `pid` and `pid_start` tags still runs."""
    pid = tags.get("pid", "")
    if not pid.isdigit():
        return False
    if tags.get("pid_start"):
        return process_start(int(pid)) == tags["pid_start"]
    try:  # no start time recorded (not Linux): existence only
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_tags() -> dict[str, str]:
    return {"host": socket.gethostname(), "pid": str(os.getpid()), "pid_start": process_start(os.getpid())}


def end_stale_runs(cfg: dict) -> list[str]:
    """Mark KILLED the RUNNING runs (children included) of this DVC run and experiment that a
    process on this host left behind when it died by SIGKILL; returns their ids.

    Runs held by a live process, or started on another host (a shared server), are left alone.
    """
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
    def start(cls, cfg: dict, parent_run_id: str | None = None, name: str | None = None) -> "RunTracker":
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
        child = RunTracker.start(cfg, parent_run_id=self.run_id, name=f"{run_name(self.cfg)}/seed{seed}")
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
        self.set_tags({"status": summary["status"], "device": summary["device"], "precision": summary["precision"]})
        diverged = [s["diverged_epoch"] for s in summary["seeds"] if s["diverged_epoch"]]
        if diverged:
            self.set_tags({"diverged_epoch": min(diverged)})
        # Numbers with no curve are params (columns to sort by), not single-point metric charts.
        self.log_params({"parameters": summary["parameters"], "train_seconds": summary["train_seconds"]})
        self.log_dataset(summary["config"]["dataset"], summary["digest"])
        from fashionbench.models import ViewAveraged, tta_mode

        if tta_mode(summary["config"].get("tta")) != "none":  # the served model averages the views, as evaluate does
            model = ViewAveraged(model, summary["config"]["tta"])
        self.log_model(model)
        self.end()

    def log_dataset(self, dataset: str, digest: str, context: str = "training") -> None:
        """mlflow.log_input of the dataset; its digest comes from the raw files' md5s."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.http_dataset_source import HTTPDatasetSource

        url = {"fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist",
               "mnist": "https://yann.lecun.com/exdb/mnist/"}.get(dataset, dataset)
        ds = MetaDataset(source=HTTPDatasetSource(url=url), name=dataset, digest=digest)
        with store_lock(), self.mlflow.start_run(run_id=self.run_id):
            self.mlflow.log_input(ds, context=context)

    def log_model(self, model) -> None:
        """The model as an MLflow PyTorch model with signature and input example (pyfunc-loadable).

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
            info = mlflow.pytorch.log_model(model, name="model", signature=signature, input_example=example,
                                            pip_requirements=reqs)
        self.set_tags({"model_uri": info.model_uri})  # what evaluate registers (models:/m-<id>)

    def register_model(self, run: str, dataset: str, test_accuracy: float) -> tuple[str, bool]:
        """This run's logged model as a new version of `fashionbench-<run>`, tagged with its DVC
        experiment, git commit and test accuracy; `champion` if it is the dataset's best.
        Returns (version, whether it is the champion)."""
        from fashionbench import registry

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
    from fashionbench.stopping import Stopped

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


# ---- opening the UI --------------------------------------------------------------------

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
