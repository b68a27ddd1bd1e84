"""Helpers for the CDI tests: shared data paths, a host /dev stand-in, spec texts."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from kata_vfio.cdi import HostDevice
from shared_paths import SHARED_DATA

CDI_DATA = SHARED_DATA / "cdi-specs"
OCI_DATA = SHARED_DATA / "oci-bundles"

# What lstat reports on a typical VFIO host: the container node, two groups, one cdev.
HOST_NODES = {
    "/dev/vfio/vfio": HostDevice("c", 10, 196, 0o666),
    "/dev/vfio/14": HostDevice("c", 243, 0, 0o600),
    "/dev/vfio/22": HostDevice("c", 243, 5, 0o600),
    "/dev/vfio/devices/vfio3": HostDevice("c", 511, 3, 0o600),
    "/dev/iommu": HostDevice("c", 10, 123, 0o660),
    "/dev/null": HostDevice("c", 1, 3, 0o666),
    "/dev/sda": HostDevice("b", 8, 0, 0o660),
    "/dev/fifo0": HostDevice("p", 0, 0, 0o644),
}


def requires_data(path: Path) -> Path:
    """Skips the test when the shared data folder is not there."""
    if not path.exists():
        pytest.skip(f"shared data {path} is not available")
    return path


def oci_spec(**extra: Any) -> dict[str, Any]:
    """A small valid OCI runtime spec."""
    spec: dict[str, Any] = {
        "ociVersion": "1.2.0",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "env": ["PATH=/bin"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
    }
    spec.update(extra)
    return spec


def pgpu_spec_text(*groups: int, version: str = "0.5.0", kind: str = "nvidia.com/pgpu") -> str:
    """A legacy VFIO spec in the sandbox device plugin's shape (names = group numbers)."""
    devices = "".join(
        f'  - name: "{g}"\n    containerEdits:\n      deviceNodes:\n      - path: /dev/vfio/{g}\n'
        for g in groups
    )
    return (
        f"cdiVersion: {version}\nkind: {kind}\ndevices:\n{devices}"
        "containerEdits:\n  deviceNodes:\n  - path: /dev/vfio/vfio\n"
    )


def age(path: Path, seconds: float = 3600) -> None:
    """Moves a file's mtime into the past."""
    past = time.time() - seconds
    os.utime(path, (past, past))


def copy_data(source: Path, destination: Path) -> Path:
    """Copies a shared data file into a test directory (shared data is read-only)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    return destination
