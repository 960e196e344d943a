"""Real servers the tests start on 127.0.0.1 and stop by their pid: `mlflow server`, Ray nodes."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from fashionbench.tracking.postgres import DatabaseError
from fashionbench.tracking.server import wait_healthy
from pipeline_repo import BIN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group a test started (start_new_session=True), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # the server's workers too
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def mlflow_server(directory: Path):
    """A real `mlflow server` on a free loopback port with its own SQLite store; yields its URI."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(directory / "server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{directory / 'server.db'}",
         "--artifacts-destination", str(directory / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=directory, start_new_session=True)
    try:
        try:
            wait_healthy(proc, uri, timeout_s=120)  # as `fashionbench server` waits for its own
        except DatabaseError as exc:
            pytest.fail(f"{exc}:\n{(directory / 'server.log').read_text()[-3000:]}")
        yield uri
    finally:
        stop_group(proc)
        log.close()


# ---- PostgreSQL, from the installed binaries (tests/test_team_server.py) ----

PG_TEST_USER, PG_TEST_PASSWORD = "fbtest", "fbtest-password"


def postgres_bin_dir() -> Path | None:
    """A directory with initdb, pg_ctl and postgres: PATH's (its pg_ctl's real folder), then the
    newest /usr/lib/postgresql/*/bin (Debian's postgresql package); None if there is none."""
    import glob
    import re
    import shutil

    found = [Path(os.path.realpath(p)).parent for p in (shutil.which("pg_ctl"), shutil.which("initdb")) if p]
    found += sorted((Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")),
                    key=lambda d: [int(n) for n in re.findall(r"\d+", str(d))], reverse=True)
    return next((d for d in found if all((d / b).is_file() for b in ("initdb", "pg_ctl", "postgres"))), None)


def as_postgres_user() -> dict:
    """Popen arguments for PostgreSQL's own processes: it refuses root, so as root they run as `postgres`."""
    return {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}


def reachable_temp_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that the postgres user can enter (pytest's own are 0700, root's)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def postgres_server():
    """A real PostgreSQL (initdb, then `postgres` itself) on a free loopback port, with a password
    user and database `fbtest`; yields its URI (postgresql://user:password@127.0.0.1:port/fbtest).
    Stopped by its pid (SIGINT: a fast shutdown), its directory removed."""
    import shutil

    import psycopg

    bin_dir, home = postgres_bin_dir(), reachable_temp_dir("fashionbench-pg-")
    switch = as_postgres_user()
    if switch:
        shutil.chown(home, "postgres", "postgres")
    (home / "pw").write_text(PG_TEST_PASSWORD + "\n")
    if switch:
        shutil.chown(home / "pw", "postgres", "postgres")
    subprocess.run([str(bin_dir / "initdb"), "-D", str(home / "data"), "-U", PG_TEST_USER, f"--pwfile={home / 'pw'}",
                    "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                   cwd=home, check=True, capture_output=True, **switch)
    port = free_port()
    log = open(home / "log", "w")
    proc = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(home / "data"), "-p", str(port), "-c",
                             "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "fsync=off"],
                            cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **switch)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(host="127.0.0.1", port=port, user=PG_TEST_USER, password=PG_TEST_PASSWORD,
                                     dbname="postgres", connect_timeout=2, autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {PG_TEST_USER}")
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"postgres did not start:\n{(home / 'log').read_text()[-3000:]}")
                time.sleep(0.2)
        yield f"postgresql://{PG_TEST_USER}:{PG_TEST_PASSWORD}@127.0.0.1:{port}/{PG_TEST_USER}"
    finally:
        for sig in (signal.SIGINT, signal.SIGKILL):  # SIGINT: fast shutdown, sessions ended
            if proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    continue
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def served_predictions(model_uri: str, images, directory: Path, env: dict, cwd: Path | None = None):
    """`mlflow models serve` of `model_uri` (the local environment) on a free loopback port, run in `cwd`
    (default `directory`, which holds its log): the predictions its /invocations gives for `images`
    (float32 N x 1 x 28 x 28); stopped by its pid."""
    import json

    import numpy as np

    port = free_port()
    log_path = directory / "serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                                   "--host", "127.0.0.1", "--port", str(port)],
                                  cwd=cwd or directory, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("mlflow models serve did not start:\n" + log_path.read_text()[-3000:])
                    time.sleep(0.5)
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                             data=json.dumps({"inputs": images.tolist()}).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                return np.asarray(json.loads(response.read())["predictions"])
        finally:
            stop_group(server)
