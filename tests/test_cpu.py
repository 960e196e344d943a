"""Process-wide CPU settings: the threads a training uses."""
from fashionbench.core.runtime import available_cores, training_threads


def test_a_training_takes_every_core_unless_fashionbench_threads_says_otherwise(monkeypatch):
    monkeypatch.delenv("FASHIONBENCH_THREADS", raising=False)
    assert training_threads() == available_cores()  # never the number of trainings running now
    monkeypatch.setenv("FASHIONBENCH_THREADS", "1")
    assert training_threads() == 1


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


def test_deterministic_mode_is_set_without_loading_the_torch_compile_stack():
    """train_run's set_determinism turns torch's flag on and off without importing torch._inductor
    (torch.use_deterministic_algorithms does, for torch.compile: over a CPU-second a training)."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from fashionbench.core.runtime import set_determinism\n"
            "set_determinism(True, torch.device('cpu'))\n"
            "on = torch.are_deterministic_algorithms_enabled()\n"
            "set_determinism(False, torch.device('cpu'))\n"
            "print(on, torch.are_deterministic_algorithms_enabled(), 'torch._inductor' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False", "False"]
