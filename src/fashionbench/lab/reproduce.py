"""`fashionbench reproduce RUN_ID`: from an MLflow run back to the workspace that made it.

The run's tags name its DVC run (`dvc_run`), its git commit and its DVC experiment. The
workspace is rebuilt in a NEW directory, never in yours: `git clone` of this repository, then
DVC's own commands: for a run of `dvc exp run`, `dvc exp pull` of the experiment's ref from
this repository and `dvc exp branch` of it; for a workspace run, the commit that recorded the
run's outputs (its `git_commit`, or the first later commit whose `models/<run>/train.json`
names this run, read with `dvc.api.read`). Your workspace, uncommitted changes included, your
DVC cache and your MLflow store are only read: the clone pulls from your cache (as a DVC remote,
`origin-cache`) and from the remote the commit configures, and logs to its own `mlflow.db`.

Then the run's outputs are pulled when that revision records them (`dvc status` clean and
`train.json` naming this run), or its train and evaluate stages run again (`--retrain`
always does), with the run's thread count (its `threads` tag as FASHIONBENCH_THREADS) and the
commit's own code (the clone's `src/` first on PYTHONPATH). The reproduced test metrics are
printed beside the run's; exit 0 when they are equal, 1 otherwise or on any error (one line).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

METRICS = (("test_accuracy", "test/accuracy"), ("test_loss", "test/loss"), ("val_accuracy", "val/accuracy"))
NOT_CONFIG = ("parameters", "train_seconds")  # params a run logs beside its config
DVC_VARIABLES = ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE")
CACHE_REMOTE = "origin-cache"
MAX_LATER_COMMITS = 50


class ReproduceError(Exception):
    """Why the run cannot be reproduced, in one line."""


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise ReproduceError(f"git {' '.join(args)} in {cwd} failed: {last_line(result)}")
    return result


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = ((result.stderr or "").strip() or (result.stdout or "").strip()).splitlines()
    return lines[-1] if lines else f"exit {result.returncode}"


def dvc(cwd: Path, env: dict | None, *args: str, check: bool = True, stream: bool = False) -> subprocess.CompletedProcess:
    """A dvc command; `stream`: its output goes to ours as it runs (a training takes minutes)."""
    from fashionbench.lab.dvc_experiments import dvc_executable

    sys.stdout.flush()
    result = subprocess.run([dvc_executable(), *args], cwd=cwd, env=env, capture_output=not stream, text=True)
    if check and result.returncode != 0:
        why = f"exit {result.returncode}, its output above" if stream else last_line(result)
        raise ReproduceError(f"dvc {' '.join(args)} in {cwd} failed: {why}")
    return result


# ---- the run ----

def read_run(run_id: str):
    """The MLflow run (a per-seed child run is traded for its parent, which trained every seed)
    and a note saying so; one line when it is not a fashionbench pipeline run."""
    from mlflow.exceptions import MlflowException

    from fashionbench.tracking.store import TrackingError, _setup_mlflow, check_reachable, tracking_uri

    try:
        check_reachable()
    except TrackingError as exc:
        raise ReproduceError(str(exc)) from None
    client = _setup_mlflow().MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ReproduceError(f"run {run_id}: no such MLflow run in {shown(tracking_uri())}; expected the id of a "
                             f"fashionbench run there (the MLflow UI's Run ID)") from None
    tags = run.data.tags
    if not tags.get("dvc_run"):
        raise ReproduceError(f"run {run_id} ({run.info.run_name}): not a fashionbench pipeline run; expected a run "
                             f"with the dvc_run tag that `dvc repro` or `dvc exp run` logs")
    parent_id = tags.get("mlflow.parentRunId")
    if parent_id:
        try:
            parent = client.get_run(parent_id)
        except MlflowException:
            raise ReproduceError(f"run {run_id}: its parent run {parent_id} is not in {shown(tracking_uri())}; expected "
                                 f"both there") from None
        same_run = parent.data.tags.get("dvc_run") == tags["dvc_run"]
        if same_run and config_of(parent, seeds=False) == config_of(run, seeds=False):
            return parent, f"run {run_id} is one seed of run {parent_id}, which trained every seed: reproducing that"
    return run, ""


def shown(uri: str) -> str:
    """The store's URI without a password (`postgresql://user:***@host/db`): error lines get printed."""
    import re

    return re.sub(r"^([^:/]+://[^:@/]+):[^@/]*@", r"\1:***@", uri)


def config_of(run, seeds: bool = True) -> dict:
    """The run's logged config (params minus the numbers logged beside it), optionally without its seeds."""
    drop = NOT_CONFIG + (() if seeds else ("seed", "seeds"))
    return {k: v for k, v in run.data.params.items() if k not in drop}


def check_repository(run, root: Path) -> None:
    commit = run.data.tags.get("git_commit", "")
    if not commit or commit == "unknown":
        raise ReproduceError(f"run {run.info.run_id}: no git_commit tag; expected the commit its pipeline ran at")
    if git(root, "cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode != 0:
        raise ReproduceError(f"run {run.info.run_id}: its git commit {commit} is not in the repository {root}; "
                             f"expected a commit of this repository (git fetch the branch that has it)")


def experiment_ref(run, root: Path) -> str | None:
    """refs/exps/<baseline>/<name> of the run's DVC experiment; None for a workspace run."""
    tags = run.data.tags
    name = tags.get("dvc_exp_name") or "workspace"
    if name == "workspace":
        return None
    baseline = tags.get("dvc_exp_baseline_rev") or tags["git_commit"]
    ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
    if git(root, "rev-parse", "--verify", "--quiet", ref, check=False).returncode != 0:
        raise ReproduceError(f"run {run.info.run_id}: its DVC experiment {name} (baseline {baseline[:7]}) is not in "
                             f"the repository {root}; expected it there (`dvc exp pull <git remote> {name}` first)")
    return ref


def recorded_in(root: Path, dvc_run: str, run_id: str, revisions: list[str]) -> str | None:
    """The first revision whose models/<run>/train.json (DVC-tracked) names this MLflow run."""
    import dvc.api

    for rev in revisions:
        try:
            trained = json.loads(dvc.api.read(f"models/{dvc_run}/train.json", repo=str(root), rev=rev))
        except Exception:  # noqa: BLE001 - no lock, no output, not in any cache: not this revision
            continue
        if trained.get("mlflow_run_id") == run_id:
            return rev
    return None


def revision_of(run, root: Path) -> dict:
    """What to restore: {ref: the experiment's ref or None, commit, recorded: whether that
    revision records the run's outputs}."""
    tags, run_id = run.data.tags, run.info.run_id
    ref = experiment_ref(run, root)
    if ref:
        commit = git(root, "rev-parse", ref).stdout.strip()
        return {"ref": ref, "commit": commit, "recorded": recorded_in(root, tags["dvc_run"], run_id, [commit]) is not None}
    later = git(root, "rev-list", "--reverse", "--ancestry-path", "--branches", "--tags",
                f"^{tags['git_commit']}").stdout.split()[:MAX_LATER_COMMITS]
    found = recorded_in(root, tags["dvc_run"], run_id, [tags["git_commit"], *later])
    return {"ref": None, "commit": found or tags["git_commit"], "recorded": found is not None}


# ---- the new workspace ----

def target_dir(into: Path | None, root: Path, run_id: str) -> Path:
    target = into or root.parent / f"{root.name}-reproduce-{run_id[:8]}"
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ReproduceError(f"{target}: exists and is not empty; expected a new directory (--into DIR)")
    return target


def child_env(target: Path, run) -> dict:
    """The clone's own code, MLflow store and the run's threads; no DVC variables from outside."""
    env = {k: v for k, v in os.environ.items() if k not in DVC_VARIABLES}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(target / "src"), env.get("PYTHONPATH")) if p)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{target / 'mlflow.db'}"
    threads = run.data.tags.get("threads")
    if threads:
        env["FASHIONBENCH_THREADS"] = threads
    return env


def restore(root: Path, target: Path, run, revision: dict, env: dict) -> list[str]:
    """Clone, check out the run's revision on a new branch, add the pull sources; the steps taken."""
    branch = f"reproduce-{run.info.run_id[:8]}"
    git(root, "clone", "--quiet", "--no-checkout", str(root), str(target))
    start = run.data.tags["git_commit"] if revision["ref"] else revision["commit"]
    if git(target, "cat-file", "-e", f"{start}^{{commit}}", check=False).returncode != 0:
        git(target, "fetch", "--quiet", "origin", start)  # on no branch: fetched by its id
    git(target, "checkout", "--quiet", "--detach", start)
    steps = [f"git clone {root} {target}"]
    if revision["ref"]:
        dvc(target, env, "exp", "pull", "--no-cache", "origin", revision["ref"])
        dvc(target, env, "exp", "branch", revision["ref"], branch)
        steps += [f"dvc exp pull --no-cache origin {revision['ref']}", f"dvc exp branch {revision['ref']} {branch}"]
    else:
        git(target, "branch", branch, start)
    git(target, "checkout", "--quiet", branch)
    steps.append(f"git checkout {branch} ({revision['commit'][:12]})")
    cache = dvc(root, None, "cache", "dir").stdout.strip()
    dvc(target, env, "remote", "add", "--local", CACHE_REMOTE, cache)
    return steps


def pull(target: Path, env: dict, dvc_run: str) -> list[str]:
    """The revision's outputs for this run (and its inputs) from your cache, then from the
    remote the revision configures; whatever neither has is rebuilt later. The sources that answered."""
    default = dvc(target, env, "remote", "default", check=False).stdout.strip()
    answered = []
    for remote in (CACHE_REMOTE, default):
        if remote and dvc(target, env, "pull", "--quiet", "-r", remote, "--with-deps", f"evaluate@{dvc_run}",
                          check=False).returncode == 0:
            answered.append(remote)
            break
    return answered


def outputs_are_the_runs(target: Path, env: dict, run) -> bool:
    dvc_run = run.data.tags["dvc_run"]
    status = dvc(target, env, "status", "--json", f"train@{dvc_run}", f"evaluate@{dvc_run}", check=False)
    train_json = target / "models" / dvc_run / "train.json"
    if status.returncode != 0 or json.loads(status.stdout or "{}") or not train_json.is_file():
        return False
    return json.loads(train_json.read_text()).get("mlflow_run_id") == run.info.run_id


def retrain(target: Path, env: dict, run) -> None:
    """validate, the data (pulled or rebuilt), then train and evaluate forced; each command printed first."""
    dvc_run, dataset = run.data.tags["dvc_run"], run.data.tags.get("dataset") or run.data.params.get("dataset")
    print(f"  dvc repro preprocess@{dataset}")
    dvc(target, env, "repro", f"preprocess@{dataset}", stream=True)
    differ = config_differences(target, run)
    if differ:
        raise ReproduceError(f"run {run.info.run_id}: its params differ from the restored ones ({differ}); it was "
                             f"not trained from committed params (uncommitted changes, or a tune trial)")
    forced = ("repro", "--force", "--single-item", f"train@{dvc_run}", f"evaluate@{dvc_run}")
    print("  dvc " + " ".join(forced))
    dvc(target, env, *forced, stream=True)


def config_differences(target: Path, run) -> str:
    """`key: run X, restored Y` for each key of the run's config that data/config/<run>.json sets otherwise."""
    restored = json.loads((target / "data" / "config" / f"{run.data.tags['dvc_run']}.json").read_text())
    logged = config_of(run)
    return ", ".join(f"{k}: run {logged[k]}, restored {v}" for k, v in restored.items()
                     if k in logged and logged[k] != str(v))


# ---- the comparison ----

def compare(run, reproduced: dict) -> tuple[list[str], bool]:
    rows, equal = [f"{'metric':<15}{'the run':<24}{'reproduced':<24}"], True
    for key, mlflow_key in METRICS:
        theirs, ours = run.data.metrics.get(mlflow_key), reproduced.get(key)
        if theirs is None and ours is None:
            continue
        same = theirs is not None and ours is not None and float(theirs) == float(ours)
        equal = equal and same
        rows.append(f"{key:<15}{theirs!r:<24}{ours!r:<24}{'equal' if same else 'DIFFERS'}")
    return rows, equal


def reproduce(run_id: str, into: str | None, force_retrain: bool) -> int:
    into_dir = Path(into).resolve() if into else None  # relative to where you are, before the chdir below
    root = Path(git(Path.cwd(), "rev-parse", "--show-toplevel", check=False).stdout.strip() or ".").resolve()
    if not (root / ".git").exists():
        raise ReproduceError(f"{Path.cwd()}: not in a git repository; expected the fashionbench repository the run came from")
    os.chdir(root)  # its default MLflow store is the repository's mlflow.db, wherever inside it you are
    run, note = read_run(run_id)
    if note:
        print(note)
    check_repository(run, root)
    run_id = run.info.run_id
    target = target_dir(into_dir, root, run_id)
    revision = revision_of(run, root)
    env = child_env(target, run)
    try:
        return rebuild(root, target, run, revision, env, force_retrain)
    except ReproduceError as exc:
        raise ReproduceError(f"{exc} (the new workspace so far: {target})") from None


def rebuild(root: Path, target: Path, run, revision: dict, env: dict, force_retrain: bool) -> int:
    tags, run_id = run.data.tags, run.info.run_id
    kind = f"DVC experiment {tags['dvc_exp_name']}" if revision["ref"] else "workspace run"
    print(f"run {run_id} ({run.info.run_name}): {kind} of {tags['dvc_run']} at {tags['git_commit'][:12]}, "
          f"{tags.get('precision', '?')} on {tags.get('device', '?')}, {tags.get('threads', '?')} thread(s)")
    for step in restore(root, target, run, revision, env):
        print(f"  {step}")
    answered = pull(target, env, tags["dvc_run"])
    print(f"  dvc pull --with-deps evaluate@{tags['dvc_run']}: " + (f"from {answered[0]}" if answered else
                                                                      "nothing complete to pull"))
    if not force_retrain and revision["recorded"] and outputs_are_the_runs(target, env, run):
        print(f"restored, not trained: {revision['commit'][:12]} records this run's outputs (dvc status: up to date)")
    else:
        retrain(target, env, run)
        print(f"trained again in {target} (FASHIONBENCH_THREADS={env.get('FASHIONBENCH_THREADS', 'unset')}, "
              f"MLflow store {target / 'mlflow.db'})")
    reproduced = json.loads((target / "metrics" / f"{tags['dvc_run']}.json").read_text())
    rows, equal = compare(run, reproduced)
    print("\n".join(rows))
    print(f"workspace: {target}")
    if not equal:
        print(f"error: run {run_id}: the reproduced metrics differ from the run's (bit-identical only on the CPU "
              f"in float32 with the same threads)", file=sys.stderr)
    return 0 if equal else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fashionbench reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="an MLflow run id of the pipeline (the MLflow UI's Run ID)")
    parser.add_argument("--into", metavar="DIR", help="the new directory (default: <repository>-reproduce-<id>)")
    parser.add_argument("--retrain", action="store_true", help="train and evaluate again even if the outputs can be pulled")
    args = parser.parse_args(argv)
    try:
        return reproduce(args.run_id, args.into, args.retrain)
    except ReproduceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
