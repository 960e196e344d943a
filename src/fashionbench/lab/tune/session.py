"""`fashionbench tune <run>`: the session: embedded Ray or a cluster, the search, tuning/<run>.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from fashionbench.core.config import PARAMS_FILE, ConfigError
from fashionbench.core.paths import TUNING_DIR
from fashionbench.core.schema import RunConfig
from fashionbench.lab.tune.checkpoints import DEFAULT_STORAGE, storage_path
from fashionbench.lab.tune.space import (
    Search,
    TuneError,
    load_search,
    positive_int,
    ray_space,
    read_yaml,
    reproduce_command,
    search_algorithm,
    with_keys,
)
from fashionbench.lab.tune.trials import (
    best_trial,
    end_trial_runs,
    mlflow_callback,
    prepared_arrays,
    train_trial,
    trial_rows,
)
from fashionbench.lab.tune.watchdog import INTERRUPT_GRACE_S, InterruptWatchdog


def check_tracking_for(address: str | None) -> None:
    """Trials on other nodes write to the tracking store: it must be a server there."""
    from fashionbench.tracking.store import tracking_uri

    uri = tracking_uri()
    if address and not uri.startswith(("http://", "https://", "databricks")):
        raise TuneError(f"MLFLOW_TRACKING_URI: --address {address} needs a tracking server (http://...); "
                        f"trials on other nodes cannot write this machine's store {uri}")


def run_search(search: Search, address: str | None, storage: str, parent_run_id: str | None) -> tuple[list, int]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from fashionbench.tracking.store import tracking_uri

    raw_params = read_yaml(PARAMS_FILE, "params.yaml")
    cfg = with_keys(raw_params, search.run, {})
    epochs = cfg.epochs if "epochs" not in search.space else max(search.space["epochs"][1])
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
            run_config=tune.RunConfig(name=f"{search.run}-{int(time.time())}", storage_path=storage,
                                      failure_config=tune.FailureConfig(max_failures=2),
                                      # each trial's newest checkpoint only: what a retry resumes
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      callbacks=[mlflow_callback(epochs)] if parent_run_id else [], verbose=1))
        results = tuner.fit()
    finally:
        ray.shutdown()  # embedded: stops it; a cluster: disconnects (its trials' actors end with the driver)
    return [results[i] for i in range(len(results))], epochs


def session_summary(search: Search, results: list, epochs: int, run_cfg: RunConfig, address: str | None,
                    seconds: float) -> dict:
    """What tuning/<run>.json holds: every trial, the best by validation, how to reproduce it."""
    rows = trial_rows(results, search)
    best = best_trial(rows, search, epochs)
    return {
        "run": search.run, "metric": search.metric, "mode": search.mode, "scheduler": search.scheduler,
        "epochs": epochs, "search_seed": search.search_seed, "address": address or "embedded", "wall_seconds": round(seconds, 1),
        "space": {k: {kind: args} for k, (kind, args) in search.space.items()},
        "default": {k: getattr(run_cfg, k) for k in search.space},
        "best": best and {"trial": best["trial"], "config": best["config"], search.metric: best[search.metric],
                          "test_accuracy": best["test_accuracy"],
                          "command": reproduce_command(search.run, best["config"])},
        "trials": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fashionbench tune", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run of params.yaml with a search in lab/search_spaces.yaml")
    parser.add_argument("--address", help="a Ray cluster to join (e.g. 127.0.0.1:6379); default: an embedded Ray")
    parser.add_argument("--storage", help="where the trials' results and checkpoints go: a directory (on a cluster one "
                                          "every node reaches at that path) or an s3:// URI; default: "
                                          f"$FASHIONBENCH_RAY_STORAGE, else {DEFAULT_STORAGE} (not with --address)")
    parser.add_argument("--trials", type=int, help="override the file's number of trials")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the trials to MLflow")
    parser.add_argument("--output", type=Path, help="default: tuning/<run>.json")
    args = parser.parse_args(argv)

    from fashionbench.core.files import write_json
    from fashionbench.tracking.runs import RunTracker, display_name, ended_on_failure
    from fashionbench.tracking.store import TrackingError, check_reachable

    try:
        search = load_search(args.run)
        if args.trials is not None:
            search = dataclasses.replace(search, trials=positive_int("--trials", args.trials))
        if not args.no_mlflow:
            check_tracking_for(args.address)
            check_reachable()
        storage = storage_path(args.storage, args.address)
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
    parent = None if args.no_mlflow else RunTracker.start(run_cfg, name=display_name(search.run, "tune"))
    out = args.output or TUNING_DIR / f"{search.run}.json"
    start = time.perf_counter()
    # Ray Tune's own Ctrl-C handler stops the search and returns as if it had finished: without
    # it Ctrl-C raises here, and every MLflow run of the session is ended KILLED below.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    # With num_to_keep set, Ray rewrites the session's state in the storage whenever a trial checkpoints
    # (every epoch here: some KB) and warns about it when that comes within 5 s of the last: not for us.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    try:
        with ended_on_failure(parent):
            if parent:
                parent.log_params({f"search.{k}": v for k, v in dataclasses.asdict(search).items() if k != "space"})
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
