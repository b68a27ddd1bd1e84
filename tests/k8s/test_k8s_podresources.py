"""The Pod Resources client against a fake kubelet server from the official proto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_podresources import Claim, Container, FakePodResources

from kata_vfio import Bdf
from kata_vfio.errors import KubernetesError, PlanError
from kata_vfio.k8s.allocation import check_single_source
from kata_vfio.k8s.podresources import PodResourcesClient

GPU_CLAIM = Claim(
    "team-a",
    "gpu-claim",
    [("vfio.kata-vfio.io", "node-1", "unit-0000-2d-00-0", ["k8s.vfio.kata-vfio.io/unit=u1-2d"])],
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakePodResources]:
    fake = FakePodResources(str(tmp_path / "kubelet.sock"))
    fake.pods[("team-a", "trainer")] = [
        Container("main", {"nvidia.com/pgpu": ["0000:18:00.0", "0000:1b:00.0"]}, [GPU_CLAIM]),
        Container("sidecar", {"example.com/nic": ["vf3"]}),
    ]
    fake.pods[("default", "idle")] = [Container("main")]
    fake.allocatable = {
        "nvidia.com/pgpu": [("0000:18:00.0", 0), ("0000:83:00.0", 1)],
        "example.com/nic": [("vf3", None)],
    }
    yield fake.start()
    fake.stop()


def test_get_names_every_device_of_the_pod(server: FakePodResources) -> None:
    with PodResourcesClient(server.socket) as client:
        pod = client.get("team-a", "trainer")
    assert server.calls == ["Get team-a/trainer"]
    assert pod.cdi_names() == (
        "nvidia.com/pgpu=0000:18:00.0",
        "nvidia.com/pgpu=0000:1b:00.0",
        "k8s.vfio.kata-vfio.io/unit=u1-2d",
        "example.com/nic=vf3",
    )
    assert pod.cdi_names("device-plugin") == (
        "nvidia.com/pgpu=0000:18:00.0",
        "nvidia.com/pgpu=0000:1b:00.0",
        "example.com/nic=vf3",
    )
    (dra,) = pod.select("dra")
    assert (dra.claim, dra.resource, dra.device, dra.container) == (
        "team-a/gpu-claim",
        "vfio.kata-vfio.io",
        "node-1/unit-0000-2d-00-0",
        "main",
    )


def test_list_and_allocatable(server: FakePodResources) -> None:
    with PodResourcesClient(server.socket) as client:
        pods = {(p.namespace, p.name): p for p in client.list()}
        allocatable = client.allocatable()
    assert pods[("default", "idle")].devices == ()
    assert len(pods[("team-a", "trainer")].devices) == 4
    assert [(a.resource, a.device_ids, a.numa_nodes) for a in allocatable] == [
        ("example.com/nic", ("vf3",), ()),
        ("nvidia.com/pgpu", ("0000:18:00.0", "0000:83:00.0"), (0, 1)),
    ]


def test_get_falls_back_to_list_without_the_feature_gate(server: FakePodResources) -> None:
    server.get_implemented = False
    with PodResourcesClient(server.socket) as client:
        assert len(client.get("team-a", "trainer").devices) == 4
        with pytest.raises(KubernetesError, match="does not know pod team-a/nobody"):
            client.get("team-a", "nobody")
    assert server.calls[:2] == ["Get team-a/trainer", "List"]


def test_unknown_pod_and_dead_socket(server: FakePodResources, tmp_path: Path) -> None:
    with PodResourcesClient(server.socket) as client:
        with pytest.raises(KubernetesError, match="does not know pod default/nobody") as info:
            client.get("default", "nobody")
    assert info.value.hint and "sandbox-name" in info.value.hint
    missing = str(tmp_path / "none.sock")
    with PodResourcesClient(missing, timeout=1) as client:
        with pytest.raises(KubernetesError, match=f"on {missing} failed: UNAVAILABLE") as info:
            client.get("team-a", "trainer")
    assert info.value.hint and "kubelet runs" in info.value.hint


def test_one_function_from_two_sources_is_refused(server: FakePodResources) -> None:
    with PodResourcesClient(server.socket) as client:
        pod = client.get("team-a", "trainer")
    functions = {
        "nvidia.com/pgpu=0000:18:00.0": [Bdf("0000:18:00.0")],
        "nvidia.com/pgpu=0000:1b:00.0": [Bdf("0000:1b:00.0")],
        "example.com/nic=vf3": [Bdf("0000:19:00.3")],
        "k8s.vfio.kata-vfio.io/unit=u1-2d": [Bdf("0000:2d:00.0")],
    }
    check_single_source(pod.devices, lambda name: functions[name])
    functions["k8s.vfio.kata-vfio.io/unit=u1-2d"] = [Bdf("0000:1b:00.0")]
    with pytest.raises(PlanError) as info:
        check_single_source(pod.devices, lambda name: functions[name])
    assert str(info.value) == (
        "a physical device is allocated twice: 0000:1b:00.0 is in nvidia.com/pgpu=0000:1b:00.0 "
        "(device plugin nvidia.com/pgpu) and in k8s.vfio.kata-vfio.io/unit=u1-2d "
        "(DRA claim team-a/gpu-claim, driver vfio.kata-vfio.io)"
    )
    # The policy keeps one source: no clash left.
    check_single_source(pod.select("device-plugin"), lambda name: functions[name])
