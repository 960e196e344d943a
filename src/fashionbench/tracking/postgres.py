"""A PostgreSQL cluster of its own for `fashionbench server`, from the installed binaries.

Laid out under `<data>/postgres/`: `data/` (the cluster, made by initdb on first use), `password`
(the database user's password, made once, mode 0600) and `server.log`. The cluster listens on
127.0.0.1 only, on the port given at each start, with no Unix socket, and asks for the password
(scram-sha-256) even there: any local user can reach a loopback port.

PostgreSQL refuses to run as root. Run as root (this machine, CI), initdb, pg_ctl and the server
run as the `postgres` system user (Debian's `postgresql` package creates it), which then owns
`<data>/postgres/` and must be able to reach it: every directory above it needs search permission
for that user (`/root` and pytest's temp folders have none).
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import subprocess
from pathlib import Path

BINARIES = ("initdb", "pg_ctl", "postgres")


SEARCH_GLOB = "/usr/lib/postgresql/*/bin"  # Debian's layout; /usr/local/bin may only link pg_ctl


DB_USER = DB_NAME = "mlflow"


SYSTEM_USER = "postgres"


class DatabaseError(Exception):
    """The database cannot be set up, started or stopped (one line)."""


def find_bin_dir(path: str | None = None, search: str | None = None) -> Path:
    """A directory holding initdb, pg_ctl and postgres: where PATH's pg_ctl really lives (a
    symlink followed), PATH's initdb's, then the newest of /usr/lib/postgresql/*/bin."""
    search = search or SEARCH_GLOB
    candidates = []
    for name in ("pg_ctl", "initdb"):
        found = shutil.which(name, path=path)
        if found:
            candidates.append(Path(os.path.realpath(found)).parent)
    version = lambda d: [int(n) for n in re.findall(r"\d+", d)]  # noqa: E731 - 16 before 15, 9.6 last
    candidates += [Path(d) for d in sorted(glob.glob(search), key=version, reverse=True)]
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in BINARIES):
            return directory
    raise DatabaseError(f"no PostgreSQL binaries ({', '.join(BINARIES)}) on PATH or in {search}: install them "
                        f"(Debian: apt-get install postgresql), or name an existing database with --backend-store-uri")


def _as_postgres() -> dict:
    """subprocess arguments that run a command as the postgres system user when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise DatabaseError(f"running as root, and PostgreSQL refuses root: it runs as the '{SYSTEM_USER}' "
                            f"system user, which does not exist (Debian's postgresql package creates it)") from None
    return {"user": SYSTEM_USER, "group": SYSTEM_USER, "extra_groups": []}


class Cluster:
    """The cluster under `<home>` (`<data>/postgres`)."""

    def __init__(self, home: Path, bin_dir: Path):
        self.home, self.bin_dir = home.resolve(), bin_dir
        self.data, self.log, self.password_file = self.home / "data", self.home / "server.log", self.home / "password"
        self.port: int | None = None

    def _run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        # cwd: the postgres user cannot always enter ours (/root)
        return subprocess.run([str(self.bin_dir / cmd[0]), *cmd[1:]], capture_output=True, text=True, cwd=self.home,
                              timeout=timeout, stdin=subprocess.DEVNULL, **_as_postgres())

    def prepare(self) -> None:
        """Make `<home>` (owned by the user the server runs as) and, on first use, the cluster."""
        switch = _as_postgres()
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if switch:
            shutil.chown(self.home, switch["user"], switch["group"])
            reach = subprocess.run(["test", "-w", str(self.home), "-a", "-x", str(self.home)], cwd="/",
                                   stdin=subprocess.DEVNULL, **switch)
            if reach.returncode != 0:
                raise DatabaseError(f"running as root, PostgreSQL runs as the '{SYSTEM_USER}' system user, which cannot "
                                    f"reach {self.home}: give it search permission (x) on every directory above "
                                    f"it, or choose --data outside /root and private temp folders")
        if (self.data / "PG_VERSION").is_file():
            return
        if not self.password_file.is_file():
            self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
            self.password_file.chmod(0o600)
            if switch:
                shutil.chown(self.password_file, switch["user"], switch["group"])
        result = self._run("initdb", "-D", str(self.data), "-U", DB_USER, f"--pwfile={self.password_file}",
                           "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-instructions")
        if result.returncode != 0:
            raise DatabaseError(f"initdb {self.data} failed: {last_line(result.stderr or result.stdout)}")
        with open(self.data / "postgresql.conf", "a") as conf:  # appended as its owner wrote it: owner kept
            conf.write("\n# fashionbench server: loopback only, no Unix socket; the port is given at each start\n"
                       "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def running_pid(self) -> int | None:
        """The postmaster's pid if one runs on this cluster (pg_ctl status), else None."""
        result = self._run("pg_ctl", "status", "-D", str(self.data), timeout=30)
        found = re.search(r"PID: (\d+)", result.stdout)
        return int(found.group(1)) if result.returncode == 0 and found else None

    def start(self, port: int) -> None:
        running = self.running_pid()
        if running:
            raise DatabaseError(f"a PostgreSQL server (pid {running}) already runs on {self.data}: stop it first "
                                f"(pg_ctl stop -D {self.data}, as the user that owns it)")
        self.port = port
        result = self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                           "-o", f"-p {port}")
        if result.returncode != 0:
            log = self.log.read_text() if self.log.is_file() else ""
            raise DatabaseError(f"PostgreSQL did not start on 127.0.0.1:{port}: "
                                f"{last_line(log) or last_line(result.stderr or result.stdout)} (log: {self.log})")

    def stop(self) -> None:
        """Stop the server if it runs: a fast shutdown (sessions ended), then an immediate one."""
        if not (self.data / "postmaster.pid").exists():
            return
        for mode in ("fast", "immediate"):
            try:
                if self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "30",
                             timeout=60).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                continue

    def uri(self, dbname: str = DB_NAME) -> str:
        """The SQLAlchemy URI without the password (PGPASSWORD carries it: argv is public in ps)."""
        return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> None:
        """CREATE DATABASE mlflow, unless it exists."""
        try:
            import psycopg
        except ImportError:
            raise DatabaseError(DRIVER_MISSING) from None
        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user=DB_USER, password=self.password(),
                                 dbname="postgres", connect_timeout=10, autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone() is None:
                    conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot create the database {DB_NAME} on 127.0.0.1:{self.port}: "
                                f"{' '.join(str(exc).split())}") from None


DRIVER_MISSING = ("the PostgreSQL driver psycopg is not installed: pip install -e '.[team]' "
                  "(or pip install 'psycopg[binary]')")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
