"""Fixtures of the Kubernetes tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import kata_vfio
from kata_vfio.samples import sample_host
from kata_vfio.testing import FakeHost


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A short private directory instead of pytest's: unix socket paths (the kubelet's, the
    plugins') must fit the kernel's 107 bytes, which pytest's numbered directories outgrow."""
    path = Path(tempfile.mkdtemp(prefix="kv-k8s-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def sample() -> FakeHost:
    """The shared, read-only sample host (8 H100s on two sockets, four NVSwitches)."""
    return sample_host()


@pytest.fixture(scope="session")
def sample_scan(sample: FakeHost) -> kata_vfio.Host:
    """Its scan, with details."""
    return kata_vfio.scan(sample.sysfs_root, sample.dev_root, sample.proc_root, details=True)
