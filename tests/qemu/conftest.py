"""Fixtures for the QEMU tests: the real qemu-system-x86_64 (TCG) and planned machines."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

# The fake GPU servers, Kata configuration and their fixtures of tests/kata.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kata"))

from sandbox_hosts import nvidia_config, zoo

__all__ = ["nvidia_config", "qemu_binary", "zoo"]

QEMU = shutil.which("qemu-system-x86_64")


@pytest.fixture
def qemu_binary() -> str:
    """The real QEMU; the test is skipped when it is not installed."""
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 not installed (Debian package qemu-system-x86)")
    return QEMU
