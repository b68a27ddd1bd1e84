"""Fixtures for the QEMU tests: the real qemu-system-x86_64 (TCG) and planned machines."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

# The fake GPU servers and Kata configuration helpers of tests/kata.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kata"))

from sandbox_hosts import KATA_CONFIGS, Zoo, nvidia_kata_config, zoo_server

from kata_vfio.kata.config import KataConfig

QEMU = shutil.which("qemu-system-x86_64")


@pytest.fixture
def qemu_binary() -> str:
    """The real QEMU; the test is skipped when it is not installed."""
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 not installed (Debian package qemu-system-x86)")
    return QEMU


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    """The shared fake server of tests/kata, built once per session; read-only."""
    return zoo_server(tmp_path_factory.mktemp("zoo") / "host")


@pytest.fixture
def nvidia_config(tmp_path: Path) -> KataConfig:
    """Kata's NVIDIA GPU configuration."""
    config = nvidia_kata_config(tmp_path)
    if config is None:
        pytest.skip(f"Kata configurations not found under {KATA_CONFIGS}")
    return config
