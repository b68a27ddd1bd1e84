"""Fixtures of the Kubernetes tests."""

from __future__ import annotations

import pytest

import kata_vfio
from kata_vfio.samples import sample_host
from kata_vfio.testing import FakeHost


@pytest.fixture(scope="session")
def sample() -> FakeHost:
    """The shared, read-only sample host (8 H100s on two sockets, four NVSwitches)."""
    return sample_host()


@pytest.fixture(scope="session")
def sample_scan(sample: FakeHost) -> kata_vfio.Host:
    """Its scan, with details."""
    return kata_vfio.scan(sample.sysfs_root, sample.dev_root, sample.proc_root, details=True)
