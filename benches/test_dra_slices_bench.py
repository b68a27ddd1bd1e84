"""DRA ResourceSlice benchmarks (pytest-benchmark): 64 units published through the official
client to the fake API server (HTTP on 127.0.0.1), against one GET through the same client.

    pytest benches/test_dra_slices_bench.py --benchmark-enable

Percentiles and ratios come from ``benches/run_dra_slices_bench.py``
(DRA-SLICES-RESULTS.md). Without ``--benchmark-enable`` (the project default) each test runs
once, as a smoke test.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "k8s"))

import kubernetes.client  # noqa: E402
from fake_apiserver import FakeApiServer  # noqa: E402
from k8s_hosts import HostBuilder, scan  # noqa: E402

from kata_vfio.k8s.dra.apiclient import load_api_client  # noqa: E402
from kata_vfio.k8s.dra.slices import SlicePublisher, build_slices  # noqa: E402
from kata_vfio.k8s.inventory import Unit, build_inventory  # noqa: E402
from kata_vfio.k8s.resources import default_resources  # noqa: E402

DRIVER = "vfio.kata-vfio.io"
NODE = "bench-node"


def units64(root: Path) -> list[Unit]:
    """64 GPUs on two NUMA nodes, each its own group, all Healthy."""
    builder = HostBuilder(numa_nodes=2)
    for index in range(64):
        builder.add(index + 1, numa=index // 32)
    units = list(build_inventory(scan(builder.build(root)), default_resources(), "legacy").units)
    assert len(units) == 64
    assert all(u.healthy for u in units)
    return units


def flipped(units: list[Unit], index: int) -> list[Unit]:
    """``units`` with unit ``index`` Unhealthy: one inventory change."""
    changed = list(units)
    changed[index] = dataclasses.replace(units[index], reasons=("bench: unplugged",))
    return changed


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> list[Unit]:
    return units64(tmp_path_factory.mktemp("gpus64"))


@pytest.fixture
def published(
    units: list[Unit], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FakeApiServer, Any, SlicePublisher]]:
    with FakeApiServer() as server:
        server.add_node(NODE)
        client = load_api_client(str(server.write_kubeconfig(tmp_path_factory.mktemp("kc") / "k")))
        publisher = SlicePublisher(client, DRIVER, NODE)
        publisher.publish(units)
        yield server, client, publisher


def test_build_slices_64_units(benchmark: Any, units: list[Unit]) -> None:
    (document,) = benchmark(lambda: build_slices(units, driver=DRIVER, node=NODE))
    assert len(document["spec"]["devices"]) == 64


def test_publish_unchanged_64_units(benchmark: Any, units: list[Unit], published: Any) -> None:
    server, _, publisher = published
    writes = len(server.writes())
    benchmark(lambda: publisher.publish(units))
    assert len(server.writes()) == writes


def test_publish_update_64_units(benchmark: Any, units: list[Unit], published: Any) -> None:
    server, _, publisher = published
    states = [flipped(units, 7), units]
    turn = iter(range(10**9))
    benchmark(lambda: publisher.publish(states[next(turn) % 2]))
    assert server.slices()[0]["spec"]["pool"]["generation"] > 1


def test_baseline_one_get(benchmark: Any, published: Any) -> None:
    server, client, _ = published
    name = server.slices()[0]["metadata"]["name"]
    api = kubernetes.client.ResourceV1Api(client)
    found = benchmark(lambda: api.read_resource_slice(name))
    assert found.metadata.name == name
