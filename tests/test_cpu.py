"""Process-wide CPU settings: a training's share of the cores."""
import subprocess
import sys
import textwrap

import torch

from fashionbench.core.runtime import CoreShare, available_cores


def hold_a_share(directory) -> subprocess.Popen:
    """Another training: a process holding its share until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from fashionbench.core.runtime import CoreShare
        share = CoreShare(Path({str(directory)!r}))
        print("holding", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_two_trainings_on_one_machine_each_take_half_the_cores(tmp_path, monkeypatch):
    monkeypatch.delenv("FASHIONBENCH_THREADS", raising=False)
    before = torch.get_num_threads()
    other = hold_a_share(tmp_path)
    try:
        with CoreShare(tmp_path) as share:
            assert share.holders() == 2
            assert torch.get_num_threads() == max(1, available_cores() // 2)
            other.stdin.close()
            other.wait(timeout=30)
            assert share.update() == available_cores()  # the other one ended: all cores again
    finally:
        other.kill()
        torch.set_num_threads(before)


def test_a_share_left_by_a_killed_process_is_not_counted(tmp_path):
    other = hold_a_share(tmp_path)
    other.kill()  # SIGKILL: its lock file stays, the kernel drops the lock
    other.wait(timeout=30)
    share = CoreShare(tmp_path)
    try:
        assert share.holders() == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == [share.path.name]
    finally:
        share.close()


def test_fashionbench_threads_fixes_the_count(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHIONBENCH_THREADS", "1")
    share = CoreShare(tmp_path)
    try:
        assert share.threads() == 1
    finally:
        share.close()


def test_a_bad_fashionbench_threads_is_named(monkeypatch):
    import pytest

    from fashionbench.core.runtime import fixed_threads

    monkeypatch.setenv("FASHIONBENCH_THREADS", "two")
    with pytest.raises(ValueError, match="FASHIONBENCH_THREADS=two: expected a positive integer"):
        fixed_threads()


def test_fashionbench_threads_sets_torchs_threads(monkeypatch):
    import torch

    from fashionbench.core.runtime import apply_fixed_threads

    before = torch.get_num_threads()
    monkeypatch.setenv("FASHIONBENCH_THREADS", "1")
    try:
        assert apply_fixed_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_unset_fashionbench_threads_leaves_torchs_threads_as_they_were(monkeypatch):
    import torch

    from fashionbench.core.runtime import apply_fixed_threads

    before = torch.get_num_threads()
    monkeypatch.delenv("FASHIONBENCH_THREADS", raising=False)
    torch.set_num_threads(1)  # not the machine's default (its cores), which a wrong "unset" path would set
    try:
        assert apply_fixed_threads() is None and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
