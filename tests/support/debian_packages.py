"""Debian packages a test needs (chromium, postgresql), installed by the test itself when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Callable, TypeVar

import pytest

T = TypeVar("T")


def ensure(package: str, find: Callable[[], T | None], needed_by: str) -> T:
    """What `find()` returns once the package is installed: apt-get install (then apt-get update and again)
    as root when it is missing. Skips, with the reason, only where that cannot be done."""
    found = find()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{needed_by} needs Debian's {package}; it is not installed and this user cannot apt-get it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "-q", package], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", package]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if cmd[1] == "install" and done.returncode == 0:
            break
    found = find()
    if not found:
        pytest.skip(f"apt-get install {package} failed: {done.stderr.strip()[-500:]}")
    return found
