"""Ray's tests (tests/ray_cases/) in a loopback-only network namespace: there Ray keeps to
127.0.0.1, where outside one it binds the machine's interface address. One pytest of that
directory runs under `unshare -n` after `ip link set lo up`; its output and timings are shown
here when it fails, and its slowest tests in -ra's summary."""
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_the_ray_tests_pass_in_a_loopback_only_network_namespace():
    import ray  # noqa: F401 - the ray extra, which `make test` installs
    inner = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0",
             str(REPO / "tests" / "ray_cases")]
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *inner]
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "FASHIONBENCH_LOOPBACK_NETNS": "1"},
                          capture_output=True, text=True, timeout=1800)
    print(done.stdout[-6000:])  # the durations: how long the Ray tests take on this machine
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-3000:]
