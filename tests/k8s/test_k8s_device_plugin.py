"""The device plugin against a fake kubelet built from the official protos, over unix sockets:
registration, ListAndWatch health as the fake host's drivers change, Allocate for several pods,
preferred allocation on the multi-NUMA, multi-switch sample host, errors, kubelet restarts."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fake_kubelet import FakeKubelet, PluginClient
from k8s_hosts import FakeNode, RunningAgent, private_sample

from kata_vfio.cdi import load_spec

ENDPOINT = "kata-vfio-nvidia.com-pgpu.sock"
GPU = "0000:18:00.0"


def sample_node(tmp_path: Path, **agent: object) -> FakeNode:
    """The sample host on a fake node."""
    return FakeNode(tmp_path, private_sample(tmp_path), **agent)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FakeNode]:
    running = sample_node(tmp_path)
    yield running
    running.close()


def test_registration_options_and_first_list(node: FakeNode) -> None:
    request = node.registration
    assert request.version == "v1beta1"
    assert request.endpoint == ENDPOINT
    assert request.resource_name == "nvidia.com/pgpu"
    assert request.options.get_preferred_allocation_available
    assert not request.options.pre_start_required
    socket = node.plugin_dir / ENDPOINT
    assert stat.S_ISSOCK(os.lstat(socket).st_mode)
    assert stat.S_IMODE(os.lstat(socket).st_mode) == 0o600
    assert node.plugin.options().get_preferred_allocation_available
    # The spec was written before the kubelet heard of any unit.
    spec = load_spec(node.cdi_dir / "nvidia.com-pgpu.yaml")
    watch = node.plugin.watch()
    devices = watch.next()
    assert {d.name for d in spec.devices} >= {i for i, (h, _) in devices.items() if h == "Healthy"}
    assert devices[GPU] == ("Healthy", 0)
    assert devices["0000:83:00.0"] == ("Healthy", 1)
    assert devices["0000:9a:00.0"] == ("Unhealthy", 1)
    assert len(devices) == 9
    watch.cancel()


def test_health_follows_the_drivers(node: FakeNode) -> None:
    watch = node.plugin.watch()
    assert watch.next()[GPU][0] == "Healthy"
    node.host.unbind(GPU)
    node.agent.events.trigger(f"unbind {GPU}")
    assert watch.until(lambda d: d[GPU][0] == "Unhealthy")[GPU] == ("Unhealthy", 0)
    node.host.bind(GPU, "vfio-pci")
    node.agent.events.trigger(f"bind {GPU}")
    watch.until(lambda d: d[GPU][0] == "Healthy")
    # A GPU that leaves its host driver and joins vfio becomes Healthy; a removed one vanishes.
    node.host.unbind("0000:9a:00.0")
    node.host.bind("0000:9a:00.0", "vfio-pci")
    node.host.remove_device("0000:1b:00.0")
    node.agent.events.trigger("several")
    update = watch.until(lambda d: "0000:1b:00.0" not in d)
    assert update["0000:9a:00.0"] == ("Healthy", 1)
    assert "0000:9a:00.0" in {
        d.name for d in load_spec(node.cdi_dir / "nvidia.com-pgpu.yaml").devices
    }
    watch.cancel()


def test_the_periodic_rescan_sees_changes_without_events(tmp_path: Path) -> None:
    node = sample_node(tmp_path, rescan=0.1)
    try:
        watch = node.plugin.watch()
        assert watch.next()[GPU][0] == "Healthy"
        node.host.unbind(GPU)
        watch.until(lambda d: d[GPU][0] == "Unhealthy")
        watch.cancel()
    finally:
        node.close()


def test_allocate_for_several_pods(node: FakeNode) -> None:
    first = node.plugin.allocate([GPU, "0000:1b:00.0"])
    (container,) = first.container_responses
    assert [c.name for c in container.cdi_devices] == [
        "nvidia.com/pgpu=0000:18:00.0",
        "nvidia.com/pgpu=0000:1b:00.0",
    ]
    assert dict(container.envs) == {"PCI_RESOURCE_NVIDIA_COM_PGPU": "0000:18:00.0,0000:1b:00.0"}
    assert len(container.devices) == 0, "DeviceSpecs only with --device-specs"
    # A pod with two containers, one device each.
    second = node.plugin.allocate(["0000:83:00.0"], ["0000:86:00.0"])
    assert [list(r.envs.values()) for r in second.container_responses] == [
        ["0000:83:00.0"],
        ["0000:86:00.0"],
    ]


def test_allocate_refuses_unknown_and_unhealthy_ids(node: FakeNode) -> None:
    with pytest.raises(grpc.RpcError) as info:
        node.plugin.allocate([GPU, "0000:99:99.9"])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "unknown device ID '0000:99:99.9' for nvidia.com/pgpu" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        node.plugin.allocate(["0000:9a:00.0"])
    assert "0000:9a:00.0 of nvidia.com/pgpu is Unhealthy" in info.value.details()
    assert "nvidia" in info.value.details()


def test_preferred_allocation_on_the_sample_host(node: FakeNode) -> None:
    healthy = [GPU, "0000:1b:00.0", "0000:2d:00.0", "0000:30:00.0", "0000:83:00.0", "0000:86:00.0"]
    assert node.plugin.preferred(healthy, [], 2) == [GPU, "0000:1b:00.0"]
    assert node.plugin.preferred(healthy, ["0000:86:00.0"], 2) == ["0000:83:00.0", "0000:86:00.0"]
    assert node.plugin.preferred(list(reversed(healthy)), [], 4) == healthy[:4]


def test_device_specs_when_asked(tmp_path: Path) -> None:
    node = sample_node(tmp_path, device_specs=True, iommu_mode="legacy")
    try:
        (container,) = node.plugin.allocate([GPU]).container_responses
        assert [(d.container_path, d.host_path, d.permissions) for d in container.devices] == [
            ("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"),
            ("/dev/vfio/14", "/dev/vfio/14", "rw"),
        ]
    finally:
        node.close()


def test_reregisters_after_a_kubelet_restart(node: FakeNode) -> None:
    watch = node.plugin.watch()
    watch.next()
    node.kubelet.restart()  # removes the plugin's socket, recreates kubelet.sock
    again = node.kubelet.wait_registration()
    assert again.endpoint == ENDPOINT
    assert stat.S_ISSOCK(os.lstat(node.plugin_dir / ENDPOINT).st_mode)
    fresh = node.kubelet.plugin(again.endpoint)
    try:
        assert fresh.watch().next()[GPU][0] == "Healthy"
    finally:
        fresh.close()


def test_waits_for_a_kubelet_that_is_not_there_yet(tmp_path: Path) -> None:
    host = private_sample(tmp_path)
    plugin_dir = tmp_path / "device-plugins"
    plugin_dir.mkdir()
    agent = RunningAgent(host, plugin_dir, tmp_path / "cdi").start()
    try:
        kubelet = FakeKubelet(str(plugin_dir)).start()  # removes the plugin's socket too
        assert kubelet.wait_registration().resource_name == "nvidia.com/pgpu"
        kubelet.stop()
    finally:
        agent.stop()


def test_clean_stop_removes_sockets_and_keeps_specs(tmp_path: Path) -> None:
    node = sample_node(tmp_path)
    node.close()
    assert not (node.plugin_dir / ENDPOINT).exists()
    assert (node.cdi_dir / "nvidia.com-pgpu.yaml").exists()


def test_a_stale_socket_from_a_killed_agent_is_replaced(tmp_path: Path) -> None:
    plugin_dir = tmp_path / "device-plugins"
    plugin_dir.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(plugin_dir / ENDPOINT))
    stale.close()  # the file stays, as after a SIGKILL
    (tmp_path / "cdi").mkdir()
    (tmp_path / "cdi" / ".nvidia.com-pgpu.yaml.x1y2.tmp").write_text("half")
    host = private_sample(tmp_path)
    agent = RunningAgent(host, plugin_dir, tmp_path / "cdi").start()
    try:
        # The agent replaced the stale socket; a kubelet that does not clean up finds it.
        kubelet = FakeKubelet(str(plugin_dir)).start(clean=False)
        assert kubelet.wait_registration().endpoint == ENDPOINT
        client = PluginClient(str(plugin_dir / ENDPOINT))
        assert client.options().get_preferred_allocation_available
        client.close()
        kubelet.stop()
    finally:
        agent.stop()
    assert not (tmp_path / "cdi" / ".nvidia.com-pgpu.yaml.x1y2.tmp").exists()
