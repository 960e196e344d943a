"""`fashionbench server`: a team's MLflow tracking server on PostgreSQL, in one command.

    fashionbench server --data /srv/fashionbench            # PostgreSQL of its own, from the installed binaries
    fashionbench server --backend-store-uri postgresql+psycopg://user:pw@db:5432/mlflow --data /srv/fb

It starts `mlflow server` with a PostgreSQL backend store and artifacts served by the server
(`--artifacts-destination`, `<data>/artifacts` by default), so clients need only its URL: no
database driver, no storage credentials. The database is either a cluster of its own under
`<data>/postgres` (tracking.postgres: initdb on first use, started on a loopback port, stopped with
the server) or an existing one named by URL, which must answer before anything starts. It prints the
MLFLOW_TRACKING_URI a teammate exports, and on Ctrl-C or SIGTERM stops the MLflow server (its whole
process group), then its own database, and exits 0. The database URI reaches `mlflow server` through
its environment (MLFLOW_BACKEND_STORE_URI, PGPASSWORD), never its argv, which `ps` shows to everyone.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from fashionbench.tracking.postgres import Cluster, DatabaseError, find_bin_dir
from fashionbench.tracking.store import database_unreachable, is_postgres_uri, masked_uri

LOOPBACK = "127.0.0.1"
HEALTH_TIMEOUT_S = 180  # a first start creates MLflow's tables (migrations): seconds on a busy machine


class Stop(Exception):
    """Ctrl-C, SIGTERM or SIGHUP: stop both servers and exit 0."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fashionbench server", description=(
        "An MLflow tracking server on PostgreSQL with artifacts served by it, for a team. "
        "Prints the MLFLOW_TRACKING_URI to export; Ctrl-C stops it (and the database it started)."))
    parser.add_argument("--data", type=Path, metavar="DIR", help="directory of the database it starts (<data>/postgres) "
                        "and of the artifacts (<data>/artifacts); created if missing")
    parser.add_argument("--backend-store-uri", metavar="URI",
                        help="an existing PostgreSQL database (postgresql[+psycopg]://user:password@host:port/db) "
                             "instead of one of its own")
    parser.add_argument("--artifacts-destination", metavar="DIR_OR_URI",
                        help="where the server keeps artifacts (default <data>/artifacts; s3://... works too)")
    parser.add_argument("--host", default=LOOPBACK, help="interface MLflow listens on (default 127.0.0.1; "
                        "0.0.0.0 or this machine's address for a team)")
    parser.add_argument("--port", type=port_number, default=5000, metavar="N", help="MLflow's port (default 5000)")
    parser.add_argument("--db-port", type=port_number, metavar="N", help="loopback port of the database it starts "
                        "(default: a free one)")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="MLflow server worker processes (default 2)")
    parser.add_argument("--allowed-hosts", metavar="HOSTS", help="Host headers MLflow accepts (default: loopback, private "
                        "addresses and the name printed in MLFLOW_TRACKING_URI)")
    return parser.parse_args(argv)


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {text!r}")
    return int(text)


class UsageError(Exception):
    """Arguments that cannot work together (one line, exit 2)."""


def check_args(args: argparse.Namespace) -> None:
    uri = args.backend_store_uri
    if uri is not None and not is_postgres_uri(uri):
        raise UsageError(f"--backend-store-uri {masked_uri(uri)}: expected a PostgreSQL URI, "
                         f"postgresql://user:password@host:port/database (or postgresql+psycopg://...)")
    if uri is not None and args.db_port is not None:
        raise UsageError("--db-port is for the database it starts; with --backend-store-uri the URI names the port")
    if args.data is None and (uri is None or args.artifacts_destination is None):
        raise UsageError("--data DIR is needed: it holds the database it starts and the artifacts (with "
                         "--backend-store-uri and --artifacts-destination it is not)")
    if args.workers < 1:
        raise UsageError(f"--workers: expected at least 1, got {args.workers}")
    if not args.host.strip():
        raise UsageError("--host: expected an interface address or name, got ''")


def is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "[::]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def public_name(host: str) -> str:
    """The host name teammates use: this machine's name when MLflow listens on every interface."""
    if is_wildcard(host):
        return socket.getfqdn()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def client_uri(host: str, port: int) -> str:
    return f"http://{public_name(host)}:{port}"


def local_uri(host: str, port: int) -> str:
    """Where this process checks /health: loopback when MLflow listens on every interface."""
    if is_wildcard(host):
        return f"http://{LOOPBACK if host == '0.0.0.0' else '[::1]'}:{port}"
    return client_uri(host, port)


def allowed_hosts(host: str, given: str | None) -> str | None:
    """--allowed-hosts for mlflow server: MLflow accepts loopback and private addresses' Host headers
    by default, not a team's name for this machine, so that name is added (None: MLflow's default)."""
    if given is not None or is_loopback(host):
        return given
    from mlflow.server.security_utils import get_default_allowed_hosts

    name = public_name(host)
    return ",".join([*get_default_allowed_hosts(), name, f"{name}:*"])


def mlflow_command(args: argparse.Namespace, artifacts: str) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", args.host, "--port", str(args.port),
           "--workers", str(args.workers), "--serve-artifacts", "--artifacts-destination", artifacts]
    hosts = allowed_hosts(args.host, args.allowed_hosts)
    return cmd + (["--allowed-hosts", hosts] if hosts else [])


def mlflow_env(backend_uri: str, password: str | None) -> dict[str, str]:
    env = dict(os.environ, MLFLOW_BACKEND_STORE_URI=backend_uri)
    env.pop("MLFLOW_TRACKING_URI", None)  # the server's own store is the backend, not another server
    # MLflow's job runner (seven huey processes) runs GenAI scorers and trace jobs; training runs need none.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if password is not None:
        env["PGPASSWORD"] = password
    return env


def stop_group(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM the process group of `proc` (mlflow server and its uvicorn workers), wait for every
    member to exit, SIGKILL what is left after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, or its pid keeps the group alive
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise DatabaseError(f"mlflow server exited with code {proc.returncode} before answering {url}/health "
                                f"(its output is above)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise DatabaseError(f"mlflow server did not answer {url}/health within {timeout_s:g} s")
        time.sleep(0.5)


def on_signal(signum, frame) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the stop runs to its end
    raise Stop()


def check_port_free(host: str, port: int) -> None:
    """MLflow's port must be free: a server already there would answer /health in its place."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            raise DatabaseError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}): "
                                f"another server has the port, or the address is not this machine's") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def serve(args: argparse.Namespace) -> int:
    """Start the database (or check the given one), then MLflow; wait for a signal; stop both."""
    cluster, proc = None, None
    try:
        check_port_free(args.host, args.port)
        if args.backend_store_uri:
            why = database_unreachable(args.backend_store_uri)
            if why:
                raise DatabaseError(f"--backend-store-uri {masked_uri(args.backend_store_uri)} {why}")
            backend, password, shown = args.backend_store_uri, None, masked_uri(args.backend_store_uri)
        else:
            cluster = Cluster(args.data / "postgres", find_bin_dir())
            cluster.prepare()
            cluster.start(args.db_port or free_port())
            cluster.create_database()
            backend, password = cluster.uri(), cluster.password()
            shown = f"{backend} (PostgreSQL {cluster.data}, password in {cluster.password_file})"
        artifacts = args.artifacts_destination or str(args.data / "artifacts")
        if "://" not in artifacts:  # a local directory: absolute (the server's cwd is not a reader's)
            artifacts = str(Path(artifacts).resolve())
            Path(artifacts).mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(mlflow_command(args, artifacts), env=mlflow_env(backend, password),
                                stdin=subprocess.DEVNULL, start_new_session=True)  # Ctrl-C reaches us, we stop it
        wait_healthy(proc, local_uri(args.host, args.port))
        print(f"MLflow tracking server: {client_uri(args.host, args.port)}\n"
              f"  backend store: {shown}\n  artifacts: {artifacts} (served: clients need no storage credentials)\n"
              f"Teammates, and dvc repro / dvc exp run here:\n"
              f"  export MLFLOW_TRACKING_URI={client_uri(args.host, args.port)}\n"
              f"Ctrl-C stops it{' and its database' if cluster else ''}.", flush=True)
        proc.wait()
        raise DatabaseError(f"mlflow server exited with code {proc.returncode} (its output is above)")
    except Stop:
        print("fashionbench server: stopping", flush=True)
        return 0
    except (DatabaseError, OSError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if proc is not None:
            stop_group(proc)
        if cluster is not None:
            cluster.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_args(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return serve(args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    raise SystemExit(main())
