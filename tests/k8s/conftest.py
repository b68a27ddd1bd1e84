"""Fixtures of the Kubernetes tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fake_apiserver import FakeApiServer

import kata_vfio
from kata_vfio.samples import sample_host
from kata_vfio.testing import FakeHost

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


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


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    """A fake API server for the DRA driver's tests (fake_apiserver.py)."""
    with FakeApiServer() as fake:
        yield fake


@pytest.fixture
def api_client(apiserver: FakeApiServer, tmp_path: Path) -> ApiClient:
    """The official client, configured from a kubeconfig that points at ``apiserver``."""
    from kata_vfio.k8s.dra.apiclient import load_api_client

    return load_api_client(str(apiserver.write_kubeconfig(tmp_path / "kubeconfig")))
