"""Ray's tests (tests/ray_cases/) in a loopback-only network namespace: there Ray keeps to
127.0.0.1, where outside one it binds the machine's interface address. Each class runs one file of
that directory in its own pytest under `unshare -n`, after `ip link set lo up`; its output and
timings are shown when it fails. A class per file, so that pytest-xdist (`--dist loadscope`) runs
the three on three workers, each beside the rest of the suite: they mostly wait on Ray."""
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def run_in_loopback_namespace(test_file: str) -> None:
    import ray  # noqa: F401 - the ray extra, which `make test` installs
    inner = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0",
             str(REPO / "tests" / "ray_cases" / test_file)]
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *inner]
    # Ray starts its worker processes at nice 15: beside the rest of the suite (nice 0) a trial got
    # a few percent of a core, and a one-epoch trial of a tiny run took 5 min instead of 4 s.
    env = {**os.environ, "FASHIONBENCH_LOOPBACK_NETNS": "1", "RAY_worker_niceness": "0"}
    done = subprocess.run(cmd, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)
    print(done.stdout[-6000:])  # the durations: how long the Ray tests take on this machine
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-3000:]


class TestOnATwoNodeCluster:
    def test_the_cluster_tests_pass_in_a_loopback_only_network_namespace(self):
        run_in_loopback_namespace("test_tune_cluster.py")


class TestOnEmbeddedRay:
    def test_the_embedded_ray_tests_pass_in_a_loopback_only_network_namespace(self):
        run_in_loopback_namespace("test_tune_embedded.py")


class TestAStudyOnRay:
    def test_the_study_tests_pass_in_a_loopback_only_network_namespace(self):
        run_in_loopback_namespace("test_study_ray.py")
