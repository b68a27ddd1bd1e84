"""The DRA plugin end to end over its sockets: registration as the kubelet checks it, prepare
and unprepare through DRAPlugin v1 and v1beta1, the health stream, ResourceSlices published
from the inventory, and a clean stop."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dra_fakes import DRIVER, GPU, LIVE_NIC, NODE, PAIR, DraRig, MemorySlices, make_rig
from fake_dra_kubelet import FakeDraKubelet

from kata_vfio.errors import KubernetesError
from kata_vfio.k8s.dra.plugin import run_dra_plugin
from kata_vfio.k8s.dra.ports import device_name
from kata_vfio.k8s.dra.service import DraPluginService
from kata_vfio.k8s.watch import ManualEvents

UID = "9b0f0c52-0000-4d1e-8f00-00000000000a"
UID2 = "9b0f0c52-0000-4d1e-8f00-00000000000b"


class RunningPlugin:
    """``run_dra_plugin`` in a thread; :meth:`stop` ends it and re-raises what it raised."""

    def __init__(self, rig: DraRig, root: Path, *, cleanup: bool = False) -> None:
        self.config = rig.plugin_config(root, rescan_interval=0.2, cleanup=cleanup)
        self.events = ManualEvents()
        self.slices = MemorySlices()
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.rig = rig

    def _run(self) -> None:
        try:
            run_dra_plugin(
                self.config, self.stop_event, self.rig.claims, self.slices, events=self.events
            )
        except BaseException as exc:
            self.error = exc

    def start(self) -> RunningPlugin:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the plugin did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def rig(tmp_path: Path) -> DraRig:
    return make_rig(tmp_path)


@pytest.fixture
def started(rig: DraRig, tmp_path: Path) -> Iterator[Callable[..., RunningPlugin]]:
    """Starts plugins; each is stopped at the end even when the test failed (one left running
    would serve on into the test's directory as it is deleted)."""
    plugins: list[RunningPlugin] = []

    def start(*, cleanup: bool = False) -> RunningPlugin:
        plugins.append(RunningPlugin(rig, tmp_path, cleanup=cleanup).start())
        return plugins[-1]

    yield start
    for plugin in plugins:
        plugin.stop_event.set()
        plugin.thread.join(20)


@pytest.fixture
def running(rig: DraRig, tmp_path: Path) -> Iterator[RunningPlugin]:
    plugin = RunningPlugin(rig, tmp_path).start()
    try:
        yield plugin
    finally:
        plugin.stop()


def test_registers_as_the_kubelet_expects(running: RunningPlugin) -> None:
    kubelet = FakeDraKubelet(running.config.registry_dir)
    registered = kubelet.register(DRIVER)
    assert registered.name == DRIVER
    assert registered.endpoint == os.path.join(running.config.plugin_dir, DRIVER, "dra.sock")
    assert registered.versions == ("v1.DRAPlugin", "v1beta1.DRAPlugin")


@pytest.mark.parametrize("service", ["v1.DRAPlugin", "v1beta1.DRAPlugin"])
def test_prepare_and_unprepare_over_either_version(
    running: RunningPlugin, rig: DraRig, service: str
) -> None:
    before = rig.sim.state()
    kubelet = FakeDraKubelet(running.config.registry_dir)
    client = kubelet.plugin(kubelet.register(DRIVER), service)
    rig.claims.add(UID, PAIR, name="pair")
    rig.claims.add(UID2, LIVE_NIC, name="live")
    claims = {uid: ("default", name, uid) for uid, name in ((UID, "pair"), (UID2, "live"))}
    answers = client.prepare(*claims.values())
    assert answers[UID].error == ""
    (device,) = answers[UID].devices
    assert (list(device.request_names), device.pool_name, device.device_name) == (
        ["nic"],
        NODE,
        device_name(PAIR),
    )
    assert list(device.cdi_device_ids) == [f"k8s.{DRIVER}/unit={UID}-{device_name(PAIR)}"]
    # One claim's refusal is its own error; the other claim is prepared all the same.
    assert "refused" in answers[UID2].error and "eth0" in answers[UID2].error
    assert list(answers[UID2].devices) == []
    again = client.prepare(claims[UID])
    assert again[UID] == answers[UID]
    assert client.unprepare(*claims.values()) == {UID: "", UID2: ""}
    assert rig.sim.state() == before
    client.close()


def test_health_lists_every_device_and_follows_changes(running: RunningPlugin, rig: DraRig) -> None:
    kubelet = FakeDraKubelet(running.config.registry_dir)
    client = kubelet.plugin(kubelet.register(DRIVER))
    watch = client.watch_health()
    first = watch.until(lambda u: len(u) == 4)
    assert watch.pools == {NODE}
    assert first[device_name(PAIR)] == ("HEALTHY", "")
    assert first[device_name(GPU)] == ("HEALTHY", "")
    status, message = first[device_name(LIVE_NIC)]
    assert status == "UNHEALTHY" and "prepare would be refused" in message
    # The prepared GPU falls off the bus (a surprise removal): its health becomes UNKNOWN.
    rig.claims.add(UID, GPU, request="gpu")
    assert client.prepare(("default", f"claim-{UID[:8]}", UID))[UID].error == ""
    rig.host.remove_device(GPU)
    rig.host.remove_device("0000:81:00.1")
    running.events.trigger("test: uevent remove")
    changed = watch.until(lambda u: u[device_name(GPU)][0] != "HEALTHY")
    status, message = changed[device_name(GPU)]
    assert status == "UNKNOWN" and "no longer found on the host" in message
    assert changed[device_name(PAIR)] == ("HEALTHY", "")
    watch.cancel()
    client.close()


def test_slices_carry_the_healthy_units(running: RunningPlugin) -> None:
    assert running.slices.changed.wait(10)
    assert set(running.slices.published[-1]) == {PAIR, GPU}


def test_a_refused_registration_stops_the_plugin_with_the_reason(
    started: Callable[..., RunningPlugin],
) -> None:
    plugin = started()
    FakeDraKubelet(plugin.config.registry_dir).register(DRIVER, refuse="DRA is disabled")
    plugin.thread.join(20)
    with pytest.raises(KubernetesError, match=r"refused the DRA plugin .*DRA is disabled"):
        plugin.stop()


def test_a_clean_stop_removes_the_sockets_and_with_cleanup_the_slices(
    rig: DraRig, started: Callable[..., RunningPlugin]
) -> None:
    plugin = started(cleanup=True)
    kubelet = FakeDraKubelet(plugin.config.registry_dir)
    client = kubelet.plugin(kubelet.register(DRIVER))
    rig.claims.add(UID, PAIR)
    assert client.prepare(("default", f"claim-{UID[:8]}", UID))[UID].error == ""
    client.close()
    plugin.stop()
    assert os.listdir(plugin.config.registry_dir) == []
    assert not os.path.exists(plugin.config.endpoint)
    assert plugin.slices.deleted == 1
    # The prepared claim stays: its pod still runs.
    assert os.listdir(rig.cdi_dir) == [f"k8s.{DRIVER}-unit_{UID}.yaml"]


def test_health_is_sent_again_before_the_kubelet_would_time_it_out(
    running: RunningPlugin,
) -> None:
    kubelet = FakeDraKubelet(running.config.registry_dir)
    client = kubelet.plugin(kubelet.register(DRIVER))
    watch = client.watch_health()
    first = watch.until(lambda u: len(u) == 4)
    # Nothing changes on the host; the list comes again within a heartbeat (0.2 s here).
    assert watch.until(lambda u: True, timeout=5) == first
    watch.cancel()
    client.close()


class _Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


@pytest.mark.parametrize(("remaining", "expected"), [(None, 30.0), (45.0, 30.0), (10.0, 8.0)])
def test_a_call_gets_the_nearer_of_our_deadline_and_the_kubelet_s(
    rig: DraRig, remaining: float | None, expected: float
) -> None:
    service = DraPluginService(rig.preparer(), "dra/v1", 30.0)
    deadline = service._deadline(_Context(remaining))  # type: ignore[arg-type]
    assert deadline.seconds == pytest.approx(expected)
