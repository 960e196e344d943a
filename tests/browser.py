"""Headless Chromium (Debian's `chromium`, which .ci/run installs), as a person's browser: a page's
DOM after its scripts ran, or a screenshot. Each call uses a new, empty profile."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"


def require_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium; .ci/run installs it)")


def chromium_command(profile: Path, *args: str, offline: bool = True, window: str = "1200,1600",
                     budget_ms: int = 10000) -> list[str]:
    """The command line; `offline`: in a new network namespace whose only interface is loopback
    (a server the page needs must then start inside it too)."""
    profile.mkdir(parents=True)
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", f"--window-size={window}", f"--virtual-time-budget={budget_ms}", *args]
    if not offline:
        return browser
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *browser]


def chromium(profile: Path, *args: str, **options) -> subprocess.CompletedProcess:
    result = subprocess.run(chromium_command(profile, *args, **options), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result
