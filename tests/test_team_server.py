"""`fashionbench server`: a team's MLflow server on a real PostgreSQL (issue 30, part 1).

The slow tests share one repository and one `fashionbench server` (its own PostgreSQL under a
--data directory, on free loopback ports) for the whole module: a tiny pipeline's `dvc repro`, its
runs and artifacts, a dead database stopping `dvc repro` before anything is deleted, the registry
and `@champion`, `mlflow models serve` of the champion, `dvc queue start -j 2`, and last the stop
on SIGTERM, a restart on the same data and a stop on Ctrl-C. One more starts the server on an
existing PostgreSQL named by URL (tests/servers.py `postgres_server`). The fast tests check the
arguments and the one-line errors. Every process started here is stopped by its pid.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline_repo import BIN, generated_data_env, make_repo, run, run_two_queued_lrs, tiny_params, venv_env
from servers import (PG_TEST_PASSWORD, free_port, postgres_bin_dir, postgres_server, reachable_temp_dir,
                     served_predictions, stop_group)

FASHION, DIGITS = "mlp_64-fashion_mnist", "lenet5_modern-mnist"
OUTPUT_DIRS = ("models", "metrics", "plots/history", "plots/eval", "plots/runs", "plots/confusion")
HAS_PSYCOPG = importlib.util.find_spec("psycopg") is not None
needs_binaries = pytest.mark.skipif(postgres_bin_dir() is None, reason=(
    "no PostgreSQL binaries (initdb, pg_ctl, postgres) on PATH or in /usr/lib/postgresql/*/bin: "
    "apt-get install postgresql (.ci/run installs it)"))
needs_driver = pytest.mark.skipif(not HAS_PSYCOPG, reason="psycopg is not installed: pip install -e '.[team]' "
                                  "(make test installs it)")


def on_postgres(test):
    """An end-to-end test against a real PostgreSQL: slow, and skipped (with the reason) where it cannot run."""
    return pytest.mark.slow(needs_binaries(needs_driver(test)))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]  # a zombie has ended
    except OSError:
        return False


def postgres_alive(pid: int) -> bool:
    """Whether `pid` is still a PostgreSQL process (a pid of one that ended may serve another by now)."""
    return alive(pid) and b"postgres" in cmdline(pid)


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (Linux /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def descendants(pid: int) -> list[int]:
    found = children(pid)
    return found + [d for child in found for d in descendants(child)]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class TeamServer:
    """`fashionbench server --data DIR` started as a teammate would, on a free port; remembers the
    pids of the MLflow server and PostgreSQL it started, to check and, if need be, end them."""

    def __init__(self, data: Path, log: Path):
        self.data, self.log_path = data, log
        self.port = free_port()
        self.log = open(log, "w")
        env = dict(venv_env(), MLFLOW_DISABLE_TELEMETRY="true")  # offline: its flush at exit only waits
        env.pop("MLFLOW_TRACKING_URI", None)
        self.proc = subprocess.Popen([str(BIN / "fashionbench"), "server", "--data", str(data), "--port", str(self.port),
                                      "--workers", "1"], stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.mlflow_pid = self.postmaster_pid = None
        self.uri = self.wait_for_uri()
        # mlflow server leads a process group of its own (its uvicorn workers)
        self.mlflow_pid = next(p for p in children(self.proc.pid) if b"mlflow" in cmdline(p))
        pid_file = (data / "postgres" / "data" / "postmaster.pid").read_text().splitlines()
        self.postmaster_pid, self.db_port = int(pid_file[0]), int(pid_file[3])
        self.db_processes = [self.postmaster_pid, *children(self.postmaster_pid)]  # checkpointer, backends, ...

    def wait_for_uri(self) -> str:
        deadline = time.monotonic() + 240
        while True:
            found = re.search(r"export MLFLOW_TRACKING_URI=(\S+)", self.log_path.read_text())
            if found:
                return found.group(1)
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"fashionbench server did not start:\n{self.log_path.read_text()[-4000:]}")
            time.sleep(0.5)

    def signal_and_wait(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=90)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.mlflow_pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """The end of every test: the server by its pid, then by pid anything it left (still theirs)."""
        if self.proc.poll() is None:
            stop_group(self.proc)
        if self.mlflow_pid and self.group_alive() and b"mlflow" in cmdline(self.mlflow_pid):
            os.killpg(self.mlflow_pid, signal.SIGKILL)
        pid_file = self.data / "postgres" / "data" / "postmaster.pid"
        postmaster = self.postmaster_pid or (int(pid_file.read_text().split()[0]) if pid_file.is_file() else None)
        if postmaster and postgres_alive(postmaster):
            os.kill(postmaster, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
        self.log.close()

    def db_rows(self, sql: str) -> list[tuple]:
        """Rows straight from the PostgreSQL it started (not through MLflow)."""
        import psycopg

        password = (self.data / "postgres" / "password").read_text().strip()
        with psycopg.connect(host="127.0.0.1", port=self.db_port, user="mlflow", password=password, dbname="mlflow",
                             connect_timeout=5) as conn:
            return conn.execute(sql).fetchall()


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """One `fashionbench server` and one repository whose `dvc repro` of two tiny runs logged to it."""
    base = tmp_path_factory.mktemp("team")
    data = reachable_temp_dir("fashionbench-team-") / "server"  # as root, the postgres user must reach it
    mp = generated_data_env(base)
    server = None
    try:
        server = TeamServer(data, base / "server.log")
        root = make_repo(base / "repo", tiny_params())
        mp.setenv("MLFLOW_TRACKING_URI", server.uri)
        run(root, "dvc", "repro")
        run(root, "git", "add", "-A")
        run(root, "git", "commit", "-q", "-m", "results")
        yield {"server": server, "uri": server.uri, "root": root, "base": base, "data": data}
    finally:
        if server is not None:
            server.stop()
        mp.undo()
        shutil.rmtree(data.parent, ignore_errors=True)


def client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def workspace_runs(uri: str) -> dict:
    c = client(uri)
    exp = c.get_experiment_by_name("fashionbench")
    return {r.data.tags["dvc_run"]: r for r in c.search_runs([exp.experiment_id], "tags.dvc_exp_name = 'workspace'")}


@on_postgres
def test_the_pipelines_runs_and_artifacts_are_in_postgresql_and_the_servers_artifact_store(team):
    root, uri = team["root"], team["uri"]
    assert not (root / "mlflow.db").exists() and not (root / "mlartifacts").exists()  # nothing local
    runs = workspace_runs(uri)
    assert sorted(runs) == [DIGITS, FASHION]
    c = client(uri)
    assert c.get_experiment_by_name("fashionbench").artifact_location.startswith("mlflow-artifacts:/")
    for name, r in runs.items():
        metrics = json.loads((root / "metrics" / f"{name}.json").read_text())
        assert r.info.status == "FINISHED" and r.data.tags["status"] == "completed"
        assert r.data.metrics["test/accuracy"] == pytest.approx(metrics["test_accuracy"])
        assert {"curves.png", "confusion.png", "metrics.json", "evaluation.json"} <= {
            a.path for a in c.list_artifacts(r.info.run_id)}
        local = c.download_artifacts(r.info.run_id, "metrics.json", str(team["base"] / "dl" / name))
        assert json.loads(Path(local).read_text()) == metrics
    assert any((team["data"] / "artifacts").rglob("curves.png"))  # the server's --artifacts-destination
    in_db = dict(team["server"].db_rows("SELECT run_uuid, status FROM runs"))
    assert {r.info.run_id: "FINISHED" for r in runs.values()}.items() <= in_db.items()


def outputs(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for d in OUTPUT_DIRS for p in sorted((root / d).rglob("*")) if p.is_file()}


@on_postgres
def test_a_postgresql_store_that_does_not_answer_stops_dvc_repro_with_every_output_kept(team, monkeypatch):
    root = team["root"]
    before = outputs(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["runs"][FASHION]["lr"] = 0.002  # train@ would delete this run's model
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dead = f"postgresql://mlflow:secret@127.0.0.1:{free_port()}/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    try:
        result = run(root, "dvc", "repro", check=False)
    finally:
        run(root, "git", "checkout", "params.yaml")
    assert result.returncode != 0
    [line] = [x for x in (result.stdout + result.stderr).splitlines() if x.startswith("error: ")]
    assert line.startswith("error: MLflow tracking database postgresql://mlflow:***@127.0.0.1:") and "secret" not in line
    assert "Connection refused" in line
    assert "Running stage 'train@" not in result.stdout
    assert outputs(root) == before


@on_postgres
def test_each_run_is_a_registered_model_whose_version_1_is_the_champion(team):
    c = client(team["uri"])
    models = {m.name: m for m in c.search_registered_models()}
    assert sorted(models) == [f"fashionbench-{DIGITS}", f"fashionbench-{FASHION}"]
    runs = workspace_runs(team["uri"])
    for name in (FASHION, DIGITS):
        assert {k: int(v) for k, v in models[f"fashionbench-{name}"].aliases.items()} == {"champion": 1}  # REST: "1"
        version = c.get_model_version_by_alias(f"fashionbench-{name}", "champion")
        assert version.run_id == runs[name].info.run_id and version.tags["dvc_exp_name"] == "workspace"


@on_postgres
def test_mlflow_models_serve_of_the_champion_answers_invocations_as_the_trained_model(team, tmp_path):
    import torch

    from fashionbench.core.files import read_tensors
    from fashionbench.core.models import model_from_config
    from fashionbench.core.schema import RunConfig

    root = team["root"]
    tensors, _ = read_tensors(root / "data" / "prepared" / "fashion_mnist.safetensors")
    images = (tensors["test_images"][:8].numpy()[:, None] / np.float32(255)).astype(np.float32)
    served = served_predictions(f"models:/fashionbench-{FASHION}@champion", images, tmp_path,
                                dict(venv_env(), MLFLOW_TRACKING_URI=team["uri"]))
    trained = json.loads((root / "models" / FASHION / "train.json").read_text())
    net = model_from_config(RunConfig.stored(trained["config"]))
    net.load_state_dict(read_tensors(root / "models" / FASHION / "seed0.safetensors")[0])
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)


@on_postgres
def test_two_queued_experiments_on_two_workers_both_finish_in_the_server_with_their_metrics(team):
    root, uri = team["root"], team["uri"]
    # Each changes one run's lr: one training each, up to its evaluation (which logs and registers; the report does not)
    lr_of = run_two_queued_lrs(root, f"++runs.{FASHION}.lr", f"evaluate@{FASHION}")
    c = client(uri)
    exp = c.get_experiment_by_name("fashionbench")
    for name, lr in lr_of.items():
        [r] = c.search_runs([exp.experiment_id], f"tags.dvc_exp_name = '{name}'")
        assert r.data.tags["dvc_run"] == FASHION and r.info.status == "FINISHED"
        assert r.data.params["lr"] == lr and r.data.tags["status"] == "completed"
        assert {"train/loss", "val/accuracy", "test/accuracy"} <= set(r.data.metrics)
        assert "metrics.json" in {a.path for a in c.list_artifacts(r.info.run_id)}
    versions = c.search_model_versions(f"name = 'fashionbench-{FASHION}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]  # one per evaluation, none lost or doubled
    champion = c.get_model_version_by_alias(f"fashionbench-{FASHION}", "champion")
    assert float(champion.tags["test_accuracy"]) == max(float(v.tags["test_accuracy"]) for v in versions)
    assert not (root / "mlflow.db").exists() and not list((root / ".dvc").rglob("mlflow.db"))


@on_postgres
def test_sigterm_stops_both_servers_a_restart_keeps_the_runs_and_ctrl_c_stops_both_again(team):
    """Last in the module: it stops the module's server."""
    first = team["server"]
    kept = {r.info.run_id for r in workspace_runs(first.uri).values()}
    assert first.group_alive() and postgres_alive(first.postmaster_pid) and len(first.db_processes) > 1
    assert first.signal_and_wait(signal.SIGTERM) == 0
    assert not first.group_alive() and not any(postgres_alive(pid) for pid in first.db_processes)
    assert not (team["data"] / "postgres" / "data" / "postmaster.pid").exists()  # a clean shutdown
    again = TeamServer(team["data"], team["base"] / "server2.log")  # the same --data: the same database
    try:
        assert again.uri != first.uri and kept <= {r.info.run_id for r in workspace_runs(again.uri).values()}
        assert again.signal_and_wait(signal.SIGINT) == 0  # Ctrl-C
        assert not again.group_alive() and not any(postgres_alive(pid) for pid in again.db_processes)
    finally:
        again.stop()


@on_postgres
def test_an_existing_postgresql_named_by_url_keeps_its_password_out_of_argv_and_keeps_running(tmp_path):
    import mlflow
    import psycopg

    with postgres_server() as url:
        port = free_port()
        log = open(tmp_path / "server.log", "w")
        env = dict(venv_env(), MLFLOW_DISABLE_TELEMETRY="true")
        proc = subprocess.Popen([str(BIN / "fashionbench"), "server", "--backend-store-uri", url, "--artifacts-destination",
                                 str(tmp_path / "artifacts"), "--port", str(port), "--workers", "1"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while "export MLFLOW_TRACKING_URI=" not in (tmp_path / "server.log").read_text():
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-4000:]
                time.sleep(0.5)
            serving = descendants(proc.pid)  # mlflow server and its uvicorn worker: the URI reaches them by environment
            assert serving and not any(PG_TEST_PASSWORD.encode() in cmdline(pid) for pid in serving)
            c = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
            exp = c.create_experiment("team")
            r = c.create_run(exp)
            c.log_metric(r.info.run_id, "loss", 0.5)
            (tmp_path / "note.txt").write_text("served\n")
            c.log_artifact(r.info.run_id, str(tmp_path / "note.txt"))
            c.set_terminated(r.info.run_id)
            assert any((tmp_path / "artifacts").rglob("note.txt"))
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=90) == 0
        finally:
            stop_group(proc)
            log.close()
        assert PG_TEST_PASSWORD not in (tmp_path / "server.log").read_text()  # printed masked
        with psycopg.connect(url, connect_timeout=5) as conn:  # still up: not the server's to stop
            assert conn.execute("SELECT status FROM runs WHERE run_uuid = %s", (r.info.run_id,)).fetchone() == ("FINISHED",)


# ---- fast: arguments and one-line errors (no server, no database started) ----

def run_server(capsys, *args: str) -> tuple[int, list[str]]:
    from fashionbench.tracking import server

    code = server.main(list(args))
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("args, expected", [
    (("--data", "d", "--backend-store-uri", "sqlite:///mlflow.db"), "error: --backend-store-uri sqlite:///mlflow.db: "
                                                                    "expected a PostgreSQL URI"),
    (("--data", "d", "--backend-store-uri", "postgresql://u:pw@h/db", "--db-port", "5433"), "error: --db-port is for"),
    (("--backend-store-uri", "postgresql://u:pw@h/db"), "error: --data DIR is needed"),
    ((), "error: --data DIR is needed"),
    (("--data", "d", "--workers", "0"), "error: --workers: expected at least 1"),
])
def test_arguments_that_cannot_work_get_one_line_and_exit_2(capsys, tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    code, lines = run_server(capsys, *args)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(expected), lines
    assert "pw@" not in lines[0] and list(tmp_path.iterdir()) == []  # nothing made


def test_a_backend_store_uri_that_does_not_answer_gets_one_line_before_anything_starts(capsys, tmp_path):
    started = time.monotonic()
    code, lines = run_server(capsys, "--data", str(tmp_path / "d"), "--port", str(free_port()),
                             "--backend-store-uri", f"postgresql+psycopg://mlflow:secret@127.0.0.1:{free_port()}/mlflow")
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error: --backend-store-uri postgresql+psycopg://mlflow:***@127.0.0.1:")
    assert ("Connection refused" if HAS_PSYCOPG else "has no driver installed") in lines[0]
    assert time.monotonic() - started < 30 and not (tmp_path / "d").exists()


def test_a_port_already_taken_gets_one_line_before_anything_starts(capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)  # another server there would answer /health in the new one's place
        port = taken.getsockname()[1]
        code, lines = run_server(capsys, "--data", str(tmp_path / "d"), "--port", str(port))
    assert code == 1 and lines == [f"error: --host 127.0.0.1 --port {port}: cannot listen there (Address already in use): "
                                   "another server has the port, or the address is not this machine's"]
    assert not (tmp_path / "d").exists()


def test_no_postgresql_binaries_gets_one_line(capsys, tmp_path, monkeypatch):
    from fashionbench.tracking import postgres

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(postgres, "SEARCH_GLOB", str(tmp_path / "nowhere" / "*" / "bin"))
    code, lines = run_server(capsys, "--data", str(tmp_path / "d"), "--port", str(free_port()))
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: no PostgreSQL binaries"), lines
    assert "apt-get install postgresql" in lines[0] and not (tmp_path / "d").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: PostgreSQL then runs as the postgres user")
@needs_binaries
def test_as_root_a_data_directory_the_postgres_user_cannot_reach_gets_one_line(capsys, tmp_path):
    assert any(not os.stat(d).st_mode & 0o001 for d in tmp_path.parents)  # pytest's folders: 0700
    code, lines = run_server(capsys, "--data", str(tmp_path / "d"), "--port", str(free_port()))
    assert code == 1 and len(lines) == 1, lines
    assert "'postgres' system user, which cannot reach" in lines[0] and str(tmp_path / "d" / "postgres") in lines[0]
    assert not (tmp_path / "d" / "postgres" / "data").exists()  # no initdb


def test_a_postgresql_tracking_uri_that_refuses_stops_validate_with_one_line(tmp_path, monkeypatch, capsys):
    from conftest import base_params
    from fashionbench.stages import validate

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base_params()))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql://mlflow:secret@127.0.0.1:{free_port()}/mlflow")
    assert validate.main([]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: MLflow tracking database postgresql://mlflow:***@127.0.0.1:") and "secret" not in line
    assert line.endswith("or unset MLFLOW_TRACKING_URI to log to mlflow.db")
    assert not (tmp_path / "data").exists()  # nothing written


@needs_driver
def test_a_postgresql_store_that_accepts_and_never_replies_fails_in_seconds():
    from fashionbench.tracking.store import TrackingError, check_reachable

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # the kernel accepts; nothing ever answers
        started = time.monotonic()
        with pytest.raises(TrackingError) as error:
            check_reachable(f"postgresql://mlflow@127.0.0.1:{sock.getsockname()[1]}/mlflow", timeout=2)
    assert "cannot be connected to within 2 s" in str(error.value) and "\n" not in str(error.value)
    assert time.monotonic() - started < 10


def test_a_team_interface_is_printed_by_name_and_mlflow_accepts_that_name(monkeypatch):
    from fashionbench.tracking import server

    monkeypatch.setattr(socket, "getfqdn", lambda *a: "buildbox.lab.example")
    args = server.parse_args(["--data", "d", "--host", "0.0.0.0", "--port", "5050"])
    assert server.client_uri(args.host, args.port) == "http://buildbox.lab.example:5050"
    assert server.local_uri(args.host, args.port) == "http://127.0.0.1:5050"  # where it checks /health
    cmd = server.mlflow_command(args, "/srv/fb/artifacts")
    hosts = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert {"buildbox.lab.example", "buildbox.lab.example:*", "localhost", "127.0.0.1:*"} <= set(hosts)
    assert cmd[cmd.index("--artifacts-destination") + 1] == "/srv/fb/artifacts" and "--serve-artifacts" in cmd
    loopback = server.parse_args(["--data", "d"])
    assert "--allowed-hosts" not in server.mlflow_command(loopback, "a")  # MLflow's default: loopback names
    env = server.mlflow_env("postgresql+psycopg://mlflow@127.0.0.1:1/mlflow", "pw")
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("/mlflow") and env["PGPASSWORD"] == "pw"
    assert "MLFLOW_TRACKING_URI" not in env and not any("postgresql" in part for part in cmd)
