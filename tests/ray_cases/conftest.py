"""Ray tests: collected only inside a loopback-only network namespace, where Ray keeps to
127.0.0.1 (outside one it binds the machine's interface address). tests/test_ray.py runs this
directory there: `unshare -n`, `ip link set lo up`, then pytest with FASHIONBENCH_LOOPBACK_NETNS=1."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time

import pytest

from pipeline_repo import BIN
from servers import free_port, mlflow_server, stop_group

if not os.environ.get("FASHIONBENCH_LOOPBACK_NETNS"):
    collect_ignore_glob = ["test_*.py"]


class RayNode:
    """One `ray start --block` process (a head or a worker node), stopped by its pid."""

    def __init__(self, args: list[str], log_path):
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        stop_group(self.proc)
        self.log.close()


def wait_for_nodes(address: str, count: int, nodes: list[RayNode], timeout: float = 120) -> None:
    """Until the cluster at `address` has `count` live nodes (asked from a separate process, so
    the test process never joins the cluster itself)."""
    probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
             "print(sum(n['Alive'] for n in ray.nodes()))")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [n for n in nodes if n.proc.poll() is not None]
        if dead:
            pytest.fail(f"a Ray node exited at start:\n{open(dead[0].log.name).read()[-3000:]}")
        try:
            out = subprocess.run([str(BIN / "python"), "-c", probe, address], capture_output=True, text=True,
                                 timeout=60)
        except subprocess.TimeoutExpired:
            continue
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1)
    pytest.fail(f"the Ray cluster at {address} did not reach {count} nodes")


@contextlib.contextmanager
def two_node_cluster(log_dir, env: pytest.MonkeyPatch):
    """A real two-node Ray cluster on 127.0.0.1: a head with no CPUs for trials and one worker
    node with two; `add_worker()` starts another. Every node is stopped at the end, by its pid."""
    # Ray 2.60's head turns token authentication on: every node and driver gets this cluster's token.
    env.setenv("RAY_AUTH_MODE", "token")
    env.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes: list[RayNode] = []
    sessions = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    common = ["--node-ip-address", "127.0.0.1", "--temp-dir", sessions]

    def add_worker(cpus: int = 2) -> RayNode:
        node = RayNode(["--address", address, f"--num-cpus={cpus}", *common], log_dir / f"worker{len(nodes)}.log")
        nodes.append(node)
        return node

    try:
        nodes.append(RayNode(["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false", *common],
                             log_dir / "head.log"))
        worker = add_worker()
        wait_for_nodes(address, 2, nodes)
        yield {"address": address, "worker": worker, "add_worker": add_worker}
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(sessions, ignore_errors=True)


@pytest.fixture(scope="class")
def shared_ray_cluster(tmp_path_factory):
    """One cluster for a class of tests, in order; only the last may kill a node: starting and
    stopping two nodes costs about 40 s on 2 cores."""
    with pytest.MonkeyPatch.context() as env, two_node_cluster(tmp_path_factory.mktemp("ray"), env) as cluster:
        yield cluster


@pytest.fixture(scope="class")
def shared_mlflow_server(tmp_path_factory):
    """One real `mlflow server` for a class of tests (starting and stopping one costs about 10 s
    on 2 cores); each test tells its own session's runs apart (tune_helpers.SessionStore)."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri
