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
import os
import re
import threading
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
    """Fail in seconds, naming the URI, if an HTTP tracking server or a PostgreSQL store does not answer."""
    uri = uri or tracking_uri()
    if is_postgres_uri(uri):
        why = database_unreachable(uri, timeout)
        if why:
            raise TrackingError(f"MLflow tracking database {masked_uri(uri)} (MLFLOW_TRACKING_URI) {why}, or unset "
                                f"MLFLOW_TRACKING_URI to log to mlflow.db")
        return
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow server {uri} answered /health with HTTP {response.status}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) does not answer GET /health "
                            f"within {timeout:g} s: {reason}; start it, or unset MLFLOW_TRACKING_URI to log to "
                            f"mlflow.db") from None


def is_postgres_uri(uri: str) -> bool:
    """`postgresql://...` or `postgresql+<driver>://...` (SQLAlchemy's spelling, which MLflow takes)."""
    return "://" in uri and uri.split("://", 1)[0].split("+", 1)[0] == "postgresql"


def masked_uri(uri: str) -> str:
    """The URI with its password, if any, as ***: error lines are printed and logged."""
    return re.sub(r"^([^:/]+://[^:@/]+):[^@/]*@", r"\1:***@", uri)


def database_unreachable(uri: str, timeout: float = 5.0) -> str | None:
    """Why MLflow could not use the PostgreSQL database of `uri` (a missing driver, a refused or
    silent port, a wrong password, no such database), in one line that follows the URI; None when
    it can. The connection is the one MLflow's store would make: SQLAlchemy's, with the URI's driver."""
    import math

    try:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        engine = sqlalchemy.create_engine(uri, poolclass=NullPool,
                                          connect_args={"connect_timeout": max(2, math.ceil(timeout))})
    except ImportError as exc:
        return f"has no driver installed ({exc}): pip install -e '.[team]' installs psycopg (postgresql+psycopg://)"
    except Exception as exc:  # noqa: BLE001 - a malformed URI: say so in one line
        return " ".join(f"is not a database URI ({exc}): correct it".split())
    try:
        with engine.connect():
            return None
    except Exception as exc:  # noqa: BLE001 - OperationalError and kin: the driver's own message
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split()) or type(exc).__name__
        return f"cannot be connected to within {timeout:g} s: {reason}; start it"
    finally:
        engine.dispose()


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
# WORKFLOW in tracking.ui and docs/tracking.md "In the MLflow UI"); the tag is set for releases that read it.
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
