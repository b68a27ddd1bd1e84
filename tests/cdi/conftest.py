"""Fixtures for the CDI tests: spec directories, a host /dev stand-in, a trusting registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cdi_support import HOST_NODES

from kata_vfio.cdi import HostDeviceTable
from kata_vfio.cdi import registry as registry_module


@pytest.fixture
def host_dev() -> HostDeviceTable:
    """A host /dev with the nodes of HOST_NODES; /dev/serial/by-id/x is a symlink."""
    return HostDeviceTable(HOST_NODES, others=("/dev/serial/by-id/x", "/etc/passwd"))


@pytest.fixture
def spec_dirs(tmp_path: Path) -> list[Path]:
    """Two spec directories, lowest priority first (like /etc/cdi and /var/run/cdi)."""
    dirs = [tmp_path / "etc-cdi", tmp_path / "run-cdi"]
    for d in dirs:
        d.mkdir()
    return dirs


@pytest.fixture
def write_file() -> Callable[[Path, str], Path]:
    """Writes text to a file and returns its path."""

    def write(path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write


@pytest.fixture
def trust_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lets the registry trust files written a moment ago (tests cannot wait for old ctimes)."""
    monkeypatch.setattr(registry_module, "_RACY_WINDOW_NS", -(10**18))
