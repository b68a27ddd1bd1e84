"""Node agent benchmarks (pytest-benchmark): the in-memory work behind each kubelet call.

    pytest benches/test_k8s_bench.py --benchmark-enable

The gRPC figures (percentiles over unix sockets, concurrency, health latency, idle CPU and
RSS) come from ``benches/run_k8s_bench.py``. Without ``--benchmark-enable`` (the project
default) each test runs once, as a smoke test.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "k8s"))
sys.path.insert(0, str(HERE))

from fake_kubelet import PB  # noqa: E402
from k8s_hosts import HostBuilder, scan  # noqa: E402

from kata_vfio.k8s.deviceplugin import DevicePluginService  # noqa: E402
from kata_vfio.k8s.inventory import build_inventory, list_devfs_nodes  # noqa: E402
from kata_vfio.k8s.preferred import preferred_allocation  # noqa: E402
from kata_vfio.k8s.resources import default_resources  # noqa: E402
from kata_vfio.k8s.watch import InventoryFeed  # noqa: E402
from trees import bench_host  # noqa: E402


@pytest.fixture(scope="module")
def gpus64(tmp_path_factory: pytest.TempPathFactory) -> Any:
    builder = HostBuilder(numa_nodes=2)
    for index in range(64):
        builder.add(index + 1, numa=index // 32)
    host = scan(builder.build(tmp_path_factory.mktemp("gpus64")))
    return build_inventory(host, default_resources(), "legacy")


def test_inventory_of_2000_functions(benchmark: Any) -> None:
    fake = bench_host(2000)
    host = scan(fake, details=False)
    inventory = benchmark(
        lambda: build_inventory(
            host, default_resources(), "legacy", devfs_nodes=list_devfs_nodes(host)
        )
    )
    assert inventory.units


def test_allocate_handler_64_units(benchmark: Any, gpus64: Any) -> None:
    service = DevicePluginService(default_resources()[0], InventoryFeed(gpus64), threading.Event())
    request = PB.AllocateRequest(
        container_requests=[PB.ContainerAllocateRequest(devices_ids=["0000:05:00.0"])]
    )
    response = benchmark(lambda: service.Allocate(request, None))
    assert response.container_responses[0].cdi_devices[0].name.endswith("=0000:05:00.0")


def test_preferred_allocation_16_of_64(benchmark: Any, gpus64: Any) -> None:
    units = gpus64.resources[0].units
    available = [u.id for u in units[::4]]
    chosen = benchmark(lambda: preferred_allocation(units, available, available[:1], 4))
    assert len(chosen) == 4
