"""`fashionbench tune <run>`: search a run's hyperparameters with Ray Tune.

The search is data: the run's entry in tuning/spaces.yaml (a distribution per training key, the
number of trials, the validation metric, the scheduler, trials at once, CPUs per trial),
validated like params.yaml. Each trial trains the run as the pipeline does (params.yaml's entry,
its first seed, the prepared data) with the sampled keys set, reports its validation metric after
every epoch (ASHA stops the worst trials early on it) and is one MLflow run nested under the
session's run. The result, tuning/<run>.json, holds every trial's config with its validation and
test accuracy, the best config (chosen on validation only) and the `dvc exp run -S ...` command
that reproduces it through the pipeline; the report reads it.

With no --address the command starts an embedded Ray on this machine and shuts it down at the
end; --address joins a running cluster (`ray start`), whose trials then need a tracking server.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from fashionbench.config import PARAMS_FILE, TRAIN_KEYS, ConfigError, validate

TUNING_DIR = Path("tuning")  # spaces.yaml in, <run>.json out (a dependency of the report, like studies/)
SPACES_FILE = TUNING_DIR / "spaces.yaml"
METRICS = {"val_accuracy": "max", "val_loss": "min"}  # validation only: test numbers never steer a search
SCHEDULERS = ("asha", "none")
DISTRIBUTIONS = ("loguniform", "uniform", "integer", "choice")
ENTRY_KEYS = {"trials", "metric", "scheduler", "grace_epochs", "reduction_factor", "concurrent",
              "cpus_per_trial", "search_seed", "space"}
FIXED_KEYS = ("seed", "seeds", "device", "max_epochs")  # what a trial is, not what it searches
# Ctrl-C raises KeyboardInterrupt in the driver, and Ray usually lets go of it at once. But on a
# loaded 2-core machine the session was twice still alive 300 s after Ctrl-C, never caught in the
# act (a KeyboardInterrupt raised inside a finalizer or a Cython callback is printed and dropped,
# and the search trains on). After this grace the session ends its MLflow runs and exits itself;
# its trials' actors end with the driver.
INTERRUPT_GRACE_S = 60


class TuneError(ConfigError):
    """A bad search space or tuning request; one line naming the file and key."""


@dataclass(frozen=True)
class Search:
    run: str
    space: dict          # training key -> (distribution, arguments)
    trials: int = 16
    metric: str = "val_accuracy"
    scheduler: str = "asha"
    grace_epochs: int = 1
    reduction_factor: int = 3
    concurrent: int = 1
    cpus_per_trial: int = 1
    search_seed: int = 0  # the sampler's RNG: the same file draws the same configurations

    @property
    def mode(self) -> str:
        return METRICS[self.metric]


# ---- the search space: a file, validated -----------------------------------------------

def read_yaml(path: Path, what: str):
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise TuneError(f"{path}: not found ({what}; run from the repository root)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TuneError(f"{path}: not valid YAML" + (f" at line {mark.line + 1}" if mark else "")) from None


def positive_int(where: str, value, least: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise TuneError(f"{where}: expected an integer >= {least}, got {value!r}")
    return value


def with_keys(raw_params: dict, run: str, keys: dict) -> dict:
    """params.yaml (raw) with `keys` set in the run's entry, validated: the run's config."""
    params = dict(raw_params, runs={run: {**raw_params["runs"][run], **keys}})
    return validate(params)["runs"][run]


def check_value(where: str, raw_params: dict, run: str, key: str, value) -> None:
    """A value the space can produce must be one params.yaml accepts for the run (lr > 0, a
    known optimizer, crop_flip only on Fashion-MNIST, ...)."""
    try:
        with_keys(raw_params, run, {key: value})
    except ConfigError as exc:
        raise TuneError(f"{where}: {str(exc).split(': ', 1)[-1]}") from None


def space_entry(where: str, key: str, spec, raw_params: dict, run: str) -> tuple[str, list]:
    if key not in TRAIN_KEYS or key in FIXED_KEYS:
        searchable = sorted(set(TRAIN_KEYS) - set(FIXED_KEYS))
        raise TuneError(f"{where}: not a training key to search, expected one of: {', '.join(searchable)}")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise TuneError(f"{where}: expected one distribution, e.g. {{loguniform: [0.0001, 0.1]}}; "
                        f"one of: {', '.join(DISTRIBUTIONS)}")
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise TuneError(f"{where}.choice: expected a non-empty list of values")
    else:
        numeric = all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args or [])
        if not isinstance(args, list) or len(args) != 2 or not numeric or not args[0] < args[1]:
            raise TuneError(f"{where}.{kind}: expected [low, high] with low < high, got {args!r}")
        if kind == "loguniform" and args[0] <= 0:
            raise TuneError(f"{where}.loguniform: expected low > 0 (a log scale), got {args[0]!r}")
        if kind == "integer" and not all(isinstance(a, int) for a in args):
            raise TuneError(f"{where}.integer: expected integer bounds, got {args!r}")
    for i, value in enumerate(args):  # every choice, both ends of a range (ranges are convex)
        check_value(f"{where}.{kind}[{i}]", raw_params, run, key, value)
    return kind, list(args)


def load_search(run: str, path: Path = SPACES_FILE, params_path: Path = PARAMS_FILE) -> Search:
    raw_params = read_yaml(params_path, "params.yaml")
    runs = validate(raw_params)["runs"]  # a broken params.yaml is named as such, not as a space error
    spaces = read_yaml(path, "the search spaces")
    if not isinstance(spaces, dict):
        raise TuneError(f"{path}: expected a mapping of run names to searches")
    if run not in spaces:
        raise TuneError(f"{path}: no search for {run!r}; add an entry (searches: {', '.join(spaces) or 'none'})")
    if run not in raw_params["runs"]:
        raise TuneError(f"{path}: {run}: not a run of {params_path}")
    entry, where = spaces[run], f"{path}: {run}"
    if not isinstance(entry, dict):
        raise TuneError(f"{where}: expected a mapping with trials, metric and space")
    for key in entry:
        if key not in ENTRY_KEYS:
            raise TuneError(f"{where}.{key}: unknown key, expected one of: {', '.join(sorted(ENTRY_KEYS))}")
    space = entry.get("space")
    if not isinstance(space, dict) or not space:
        raise TuneError(f"{where}.space: expected a mapping of training keys to distributions")
    least = {"trials": 1, "grace_epochs": 1, "reduction_factor": 2, "concurrent": 1, "cpus_per_trial": 1, "search_seed": 0}
    fields = {k: positive_int(f"{where}.{k}", entry[k], least[k]) for k in least if k in entry}
    metric = entry.get("metric", "val_accuracy")
    if metric not in METRICS:
        raise TuneError(f"{where}.metric: expected one of: {', '.join(METRICS)} (validation only), got {metric!r}")
    scheduler = entry.get("scheduler", "asha")
    if scheduler not in SCHEDULERS:
        raise TuneError(f"{where}.scheduler: expected one of: {', '.join(SCHEDULERS)}, got {scheduler!r}")
    cfg = runs[run]
    if cfg["val_fraction"] == 0 or (cfg["val_fraction"] is None and raw_params["preprocess"].get("val_fraction") == 0):
        key = f"runs.{run}.val_fraction" if cfg["val_fraction"] == 0 else "preprocess.val_fraction"
        raise TuneError(f"{params_path}: {key}: 0 leaves no validation split to tune on")
    checked = {key: space_entry(f"{where}.space.{key}", key, spec, raw_params, run) for key, spec in space.items()}
    return Search(run=run, space=checked, metric=metric, scheduler=scheduler, **fields)


# ---- trials ------------------------------------------------------------------------------

def ray_space(search: Search) -> dict:
    from ray import tune

    make = {"loguniform": lambda a: tune.loguniform(*a), "uniform": lambda a: tune.uniform(*a),
            "integer": lambda a: tune.randint(a[0], a[1] + 1), "choice": tune.choice}
    return {key: make[kind](args) for key, (kind, args) in search.space.items()}


def search_algorithm(search: Search):
    """Random sampling from the space, seeded: the same entry draws the same configurations."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=search.search_seed)


def plain(value):
    """A sampled value as params.yaml would hold it (numpy scalars to Python numbers)."""
    return value.item() if hasattr(value, "item") else value


def override_value(value) -> str:
    """How `dvc exp run -S` (Hydra's grammar) must read the value back exactly: repr of floats."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)


def reproduce_command(run: str, config: dict) -> str:
    sets = " ".join(f"-S '++runs.{run}.{k}={override_value(v)}'" for k, v in sorted(config.items()))
    return f"dvc exp run {sets} train@{run} evaluate@{run}"


def train_trial(config: dict, run: str, raw_params: dict, data: dict, parent_run_id: str | None,
                tracking_uri: str, threads: int) -> None:
    """One trial, in a Ray worker: the run's config with the sampled keys, its first seed, the
    prepared data from the object store; a nested MLflow run; the metric reported every epoch."""
    import torch
    from ray import tune

    from fashionbench.cpu import configure_process
    from fashionbench.tracking import RunTracker
    from fashionbench.training import resolve_device, train_seed

    torch.set_num_threads(threads)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # the session's store, whatever this node was started with
    sampled = {k: plain(v) for k, v in config.items()}
    trial_name = tune.get_context().get_trial_name()
    try:
        cfg = with_keys(raw_params, run, sampled)
    except ConfigError as exc:  # a combination the space allows but params.yaml refuses: this trial fails
        if parent_run_id:
            failed = RunTracker.start({**with_keys(raw_params, run, {}), **sampled}, parent_run_id=parent_run_id,
                                      name=f"tune/{run}/{trial_name}")
            failed.set_tags({"error": str(exc)})
            failed.end("FAILED")
        raise
    device = resolve_device(cfg["device"])
    configure_process(device)  # as the train stage does: the same arithmetic (flushed denormals)
    tensors = {k: (torch.from_numpy(v.copy()) if hasattr(v, "dtype") else v) for k, v in data.items()}
    tensors = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}
    tracker = None
    if parent_run_id:
        tracker = RunTracker.start(cfg, parent_run_id=parent_run_id, name=f"tune/{run}/{trial_name}")
    epochs_done = [0]

    def report(row: dict) -> None:
        epochs_done[0] = row["epoch"]
        if tracker:
            tracker.log_epoch(row)
        tune.report({"epoch": row["epoch"], "val_accuracy": row["val_accuracy"], "val_loss": row["val_loss"],
                     "test_accuracy": row["test_accuracy"], "train_seconds": row["seconds"],
                     "mlflow_run_id": tracker.run_id if tracker else ""})

    try:
        result = train_seed(cfg, tensors, cfg["seeds"][0], device, on_epoch=report, progress=False)
    except SystemExit:  # Ray Tune stops a trial by sys.exit in its report: ASHA, not a failure
        if tracker:
            if epochs_done[0] < cfg["epochs"]:
                tracker.set_tags({"stopped_early": "true"})
            tracker.end()
        raise
    except BaseException:
        if tracker:
            tracker.end("FAILED")
        raise
    if tracker:
        tracker.set_tags({"status": result["status"]})
        tracker.end()


def mlflow_callback(epochs: int):
    """A Ray Tune callback on the driver that ends the MLflow run of a trial that did not end it
    itself: stopped early by ASHA (FINISHED, tagged), failed in a way the trial could not catch
    (its process or node died: FAILED), or retried (the failed attempt's run: KILLED)."""
    from ray.tune import Callback

    from fashionbench.tracking import RunTracker

    def end(trial, status: str, **tags) -> None:
        run_id = (trial.last_result or {}).get("mlflow_run_id")
        if not run_id:
            return
        try:
            tracker = RunTracker(run_id)
            if tracker.client.get_run(run_id).info.status == "RUNNING":
                if tags:
                    tracker.set_tags(tags)
                tracker.end(status)
        except Exception as exc:  # noqa: BLE001 - a store hiccup must not stop the search
            print(f"warning: could not end MLflow run {run_id} of {trial}: {exc}", file=sys.stderr)

    class EndTrialRuns(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            early = (trial.last_result or {}).get("epoch", epochs) < epochs  # ASHA also stops a trial at max_t
            end(trial, "FINISHED", **({"stopped_early": "true"} if early else {}))

        def on_trial_error(self, iteration, trials, trial, **info):
            end(trial, "FAILED")

        def on_trial_recover(self, iteration, trials, trial, **info):
            end(trial, "KILLED", retried="true")

    return EndTrialRuns()


# ---- the session -------------------------------------------------------------------------

def check_tracking_for(address: str | None) -> None:
    """Trials on other nodes write to the tracking store: it must be a server there."""
    from fashionbench.tracking import tracking_uri

    uri = tracking_uri()
    if address and not uri.startswith(("http://", "https://", "databricks")):
        raise TuneError(f"MLFLOW_TRACKING_URI: --address {address} needs a tracking server (http://...); "
                        f"trials on other nodes cannot write this machine's store {uri}")


def prepared_arrays(cfg: dict) -> dict:
    """The run's split of the prepared data as numpy arrays: Ray puts them in the object store once and every
    node reads them from there (zero-copy on the node), never preprocessing again."""
    import torch

    from fashionbench.preprocess import load_run_data

    data = load_run_data(cfg, torch.device("cpu"))
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in data.items()}


def trial_rows(results, search: Search) -> list[dict]:
    rows = []
    for result in results:
        history = result.metrics_dataframe
        last = result.metrics or {}
        rows.append({
            "trial": Path(result.path).name if result.path else None,
            "config": {k: plain(v) for k, v in (result.config or {}).items()},
            "status": "FAILED" if result.error else "TERMINATED",
            "error": str(result.error).strip().splitlines()[-1] if result.error else None,  # the exception, not Ray's header
            "epochs_run": int(last.get("epoch", 0)),
            "val_accuracy": last.get("val_accuracy"),
            "val_loss": last.get("val_loss"),
            "test_accuracy": last.get("test_accuracy"),
            "train_seconds": last.get("train_seconds"),
            "best_val_accuracy": float(history["val_accuracy"].max()) if history is not None and len(history) else None,
        })
    return rows


def best_trial(rows: list[dict], search: Search, max_epochs: int) -> dict | None:
    """The best trial by the search's metric at its last epoch, among those that trained every
    epoch (a trial ASHA stopped was measured at a shorter horizon than the pipeline trains)."""
    full = [r for r in rows if r["status"] != "FAILED" and r["epochs_run"] == max_epochs
            and r[search.metric] is not None and math.isfinite(r[search.metric])]
    if not full:
        return None
    sign = 1 if search.mode == "max" else -1
    return max(full, key=lambda r: sign * r[search.metric])


def run_search(search: Search, address: str | None, storage: Path, parent_run_id: str | None) -> tuple[list, int]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from fashionbench.tracking import tracking_uri

    raw_params = read_yaml(PARAMS_FILE, "params.yaml")
    cfg = with_keys(raw_params, search.run, {})
    epochs = cfg["epochs"] if "epochs" not in search.space else max(search.space["epochs"][1])
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=min(search.grace_epochs, epochs),
                               reduction_factor=search.reduction_factor)
                 if search.scheduler == "asha" else FIFOScheduler())
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError) as exc:
        raise TuneError(f"--address {address}: no Ray cluster there ({str(exc).splitlines()[0]})") from None
    try:
        trainable = tune.with_resources(
            tune.with_parameters(train_trial, run=search.run, raw_params=raw_params,
                                 data=prepared_arrays(cfg), parent_run_id=parent_run_id,
                                 tracking_uri=tracking_uri(), threads=search.cpus_per_trial),
            {"cpu": search.cpus_per_trial})
        tuner = tune.Tuner(
            trainable, param_space=ray_space(search),
            tune_config=tune.TuneConfig(metric=search.metric, mode=search.mode, scheduler=scheduler,
                                        search_alg=search_algorithm(search),
                                        num_samples=search.trials, max_concurrent_trials=search.concurrent),
            run_config=tune.RunConfig(name=f"{search.run}-{int(time.time())}", storage_path=str(storage.resolve()),
                                      failure_config=tune.FailureConfig(max_failures=2),
                                      callbacks=[mlflow_callback(epochs)] if parent_run_id else [], verbose=1))
        results = tuner.fit()
    finally:
        ray.shutdown()  # embedded: stops it; a cluster: disconnects (its trials' actors end with the driver)
    return [results[i] for i in range(len(results))], epochs


def session_summary(search: Search, results: list, epochs: int, run_cfg: dict, address: str | None,
                    seconds: float) -> dict:
    """What tuning/<run>.json holds: every trial, the best by validation, how to reproduce it."""
    rows = trial_rows(results, search)
    best = best_trial(rows, search, epochs)
    return {
        "run": search.run, "metric": search.metric, "mode": search.mode, "scheduler": search.scheduler,
        "epochs": epochs, "search_seed": search.search_seed, "address": address or "embedded", "wall_seconds": round(seconds, 1),
        "space": {k: {kind: args} for k, (kind, args) in search.space.items()},
        "default": {k: run_cfg[k] for k in search.space},
        "best": best and {"trial": best["trial"], "config": best["config"], search.metric: best[search.metric],
                          "test_accuracy": best["test_accuracy"],
                          "command": reproduce_command(search.run, best["config"])},
        "trials": rows,
    }


def end_trial_runs(parent_run_id: str, status: str = "KILLED") -> None:
    """End every child run of the session still RUNNING (best effort: the store may be down)."""
    from fashionbench.tracking import RunTracker

    try:
        tracker = RunTracker(parent_run_id)
        exp = tracker.client.get_run(parent_run_id).info.experiment_id
        for child in tracker.client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_run_id}'"
                                                       " and attributes.status = 'RUNNING'", max_results=10000):
            RunTracker(child.info.run_id).end(status)
    except Exception as exc:  # noqa: BLE001 - never hide the session's own outcome
        print(f"warning: could not end the trials' MLflow runs: {exc}", file=sys.stderr)


def end_session_runs(parent_run_id: str) -> None:
    """End the session's run KILLED, and its trials' runs, where they are still RUNNING."""
    from fashionbench.tracking import RunTracker

    end_trial_runs(parent_run_id)
    try:
        parent = RunTracker(parent_run_id)
        if parent.client.get_run(parent_run_id).info.status == "RUNNING":
            parent.end("KILLED")
    except Exception as exc:  # noqa: BLE001 - the store may be down; exit all the same
        print(f"warning: could not end MLflow run {parent_run_id}: {exc}", file=sys.stderr)


class InterruptWatchdog:
    """Bounds the time Ctrl-C takes to end a session, however Ray behaves.

    Used as `with watchdog:` around the search. Its SIGINT handler raises KeyboardInterrupt, as
    Python's own does, and notes the time of the first one. A thread started with the session
    (a signal handler must not start one: Thread.start takes a lock the interrupted code may
    hold) ends the session's MLflow runs and exits 130 if the search is still running `grace_s`
    after that first Ctrl-C. Only the main thread receives signals: elsewhere it does nothing.
    """

    poll_s = 0.2
    cleanup_s = 15.0  # what ending the runs may take before the exit goes ahead without them

    def __init__(self, run: str, parent_run_id: str | None, grace_s: float):
        self.run, self.parent_run_id, self.grace_s = run, parent_run_id, grace_s
        self.interrupted_at: float | None = None
        self.finished = threading.Event()  # set as the search ends, however it ends
        self.previous_handler = None
        self.installed = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous_handler = signal.signal(signal.SIGINT, self.handle)
            self.installed = True
            threading.Thread(target=self.watch, name="interrupt-watchdog", daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.finished.set()
        if self.installed:
            # None: the handler before was not set from Python; Python's default stands in for it.
            signal.signal(signal.SIGINT, self.previous_handler or signal.default_int_handler)

    def handle(self, signum, frame):
        if self.interrupted_at is None:
            self.interrupted_at = time.monotonic()
        raise KeyboardInterrupt

    def watch(self) -> None:
        while not self.finished.wait(self.poll_s):
            if self.interrupted_at is not None and time.monotonic() - self.interrupted_at >= self.grace_s:
                self.expire()

    def expire(self) -> None:
        print(f"{self.run}: interrupted; Ray had not let go {self.grace_s:g} s after Ctrl-C, so the session ends here",
              file=sys.stderr, flush=True)
        if self.parent_run_id:
            # A tracking server that does not answer could hold this for minutes: exit all the same.
            ending = threading.Thread(target=end_session_runs, args=(self.parent_run_id,), daemon=True)
            ending.start()
            ending.join(self.cleanup_s)
        sys.stdout.flush()
        os._exit(130)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fashionbench tune", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run of params.yaml with a search in tuning/spaces.yaml")
    parser.add_argument("--address", help="a Ray cluster to join (e.g. 127.0.0.1:6379); default: an embedded Ray")
    parser.add_argument("--trials", type=int, help="override the file's number of trials")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the trials to MLflow")
    parser.add_argument("--output", type=Path, help="default: tuning/<run>.json")
    args = parser.parse_args(argv)

    from fashionbench.outputs import write_json
    from fashionbench.tracking import RunTracker, TrackingError, check_reachable, ended_on_failure

    try:
        search = load_search(args.run)
        if args.trials is not None:
            search = dataclasses.replace(search, trials=positive_int("--trials", args.trials))
        if not args.no_mlflow:
            check_tracking_for(args.address)
            check_reachable()
    except (ConfigError, TrackingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        import ray  # noqa: F401
    except ImportError:
        print("error: fashionbench tune needs Ray: pip install -e '.[ray]'", file=sys.stderr)
        return 1
    raw_params = read_yaml(PARAMS_FILE, "params.yaml")
    run_cfg = with_keys(raw_params, search.run, {})
    parent = None if args.no_mlflow else RunTracker.start(run_cfg, name=f"tune/{search.run}")
    out = args.output or TUNING_DIR / f"{search.run}.json"
    start = time.perf_counter()
    # Ray Tune's own Ctrl-C handler stops the search and returns as if it had finished: without
    # it Ctrl-C raises here, and every MLflow run of the session is ended KILLED below.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    try:
        with ended_on_failure(parent):
            if parent:
                parent.log_params({f"search.{k}": v for k, v in dataclasses.asdict(search).items() if k != "space"})
            storage = Path(os.environ.get("FASHIONBENCH_RAY_STORAGE", ".ray_results"))
            with InterruptWatchdog(search.run, parent and parent.run_id, INTERRUPT_GRACE_S):
                results, epochs = run_search(search, args.address, storage, parent.run_id if parent else None)
            summary = session_summary(search, results, epochs, run_cfg, args.address, time.perf_counter() - start)
            write_json(out, summary)
            if parent:
                best = summary["best"]
                if best:
                    parent.log_metrics({"best/" + search.metric.replace("val_", "val/"): best[search.metric],
                                        "best/test_accuracy": best["test_accuracy"]})
                parent.end()
    except KeyboardInterrupt:
        print(f"{search.run}: interrupted; no {out} written", file=sys.stderr)
        return 130
    except TuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if parent:
            end_trial_runs(parent.run_id)  # a trial whose process died with the session
    rows, best = summary["trials"], summary["best"]
    failed = sum(r["status"] == "FAILED" for r in rows)
    print(f"{search.run}: {len(rows)} trials ({failed} failed) in {summary['wall_seconds']:.0f} s -> {out}")
    if best:
        print(f"best {search.metric} {best[search.metric]:.4f} (test {best['test_accuracy']:.4f}): {best['command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
