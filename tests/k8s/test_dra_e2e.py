"""The DRA plugin end to end: the real ``kata-vfio k8s dra-plugin`` process on a fake host,
the fake kubelet over the plugin's sockets, and the fake API server through ``--kubeconfig``
(the official client reads the ResourceClaim and writes the node's ResourceSlices).

A claim is prepared (its group goes to vfio-pci, its CDI spec resolves) and unprepared (the
devices go back to e1000e, the spec goes); SIGTERM with ``--cleanup`` deletes the slices and
removes the sockets; a claim deleted while prepared is released at the next start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dra_e2e_child import TABLES_FILE
from dra_fakes import DRIVER, GPU, NODE, PAIR, RESOURCES, DraRig, make_rig
from fake_apiserver import FakeApiServer, iter_devices
from fake_dra_kubelet import DraClient, FakeDraKubelet

from kata_vfio.cdi import DevfsLookup, Registry
from kata_vfio.k8s.dra.ports import device_name

CHILD = Path(__file__).with_name("dra_e2e_child.py")
PAIR_FUNCTIONS = (PAIR, "0000:05:00.1")


class PluginProcess:
    """``kata-vfio k8s dra-plugin`` in a child process, with its stderr kept."""

    def __init__(self, root: Path, rig: DraRig, kubeconfig: Path) -> None:
        self.plugins, self.registry = root / "plugins", root / "registry"
        self.plugins.mkdir(exist_ok=True)
        self.registry.mkdir(exist_ok=True)
        host = rig.host
        argv = [
            *("--sysfs-root", host.sysfs_root, "--dev-root", host.dev_root),
            *("--proc-root", host.proc_root, "k8s", "dra-plugin"),
            *("--driver-name", DRIVER, "--node-name", NODE, "--plugin-dir", str(self.plugins)),
            *("--registry-dir", str(self.registry), "--cdi-dir", str(rig.cdi_dir)),
            *("--state-dir", str(rig.state_dir), "--kubeconfig", str(kubeconfig)),
            *("--no-uevents", "--rescan-interval", "0.5", "--cleanup"),
            *(a for r in RESOURCES for a in ("--resource", r)),
        ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHILD.parent), *sys.path])}
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), str(root), "--", *argv],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.err = ""

    def connect(self) -> DraClient:
        """Registers as the kubelet does and returns a client of DRAPlugin v1. A socket a
        killed run left refuses connections until the new run replaces it; the kubelet's
        plugin watcher acts on the new one's creation, so wait for one that accepts."""
        path = str(self.registry / f"{DRIVER}-reg.sock")
        deadline = time.monotonic() + 60
        while not _accepts(path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no registration socket: exit {self.stop()}, {self.err}")
            time.sleep(0.02)
        kubelet = FakeDraKubelet(str(self.registry))
        return kubelet.plugin(kubelet.register(DRIVER))

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        _, self.err = self.process.communicate(timeout=30)
        return self.process.returncode


def _accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as client:
        try:
            client.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
    return True


@pytest.fixture
def rig(tmp_path: Path) -> DraRig:
    rig = make_rig(tmp_path)
    tables = {driver: sorted(ids) for driver, ids in rig.sim.tables.items()}
    (tmp_path / TABLES_FILE).write_text(json.dumps(tables))
    return rig


@pytest.fixture
def kubeconfig(apiserver: FakeApiServer, tmp_path: Path) -> Path:
    apiserver.add_node(NODE)
    return apiserver.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def start(rig: DraRig, kubeconfig: Path, tmp_path: Path) -> Iterator[Callable[[], PluginProcess]]:
    started: list[PluginProcess] = []

    def start() -> PluginProcess:
        started.append(PluginProcess(tmp_path, rig, kubeconfig))
        return started[-1]

    yield start
    for plugin in started:
        if plugin.process.poll() is None:
            plugin.stop(signal.SIGKILL)


def allocated_claim(apiserver: FakeApiServer, name: str, bdf: str) -> tuple[str, str, str]:
    """An allocated ResourceClaim in the API server: the unit ``bdf`` of this node's pool."""
    result = {"request": "nic", "driver": DRIVER, "pool": NODE, "device": device_name(bdf)}
    claim = apiserver.add_claim("default", name, [result])
    return ("default", name, claim["metadata"]["uid"])


def published(apiserver: FakeApiServer, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The node's ResourceSlices once the plugin has published them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        slices = [s for s in apiserver.slices() if s["spec"]["nodeName"] == NODE]
        if slices:
            return slices
        time.sleep(0.05)
    raise AssertionError("the plugin published no ResourceSlice")


def claim_and_plugin(
    start: Callable[[], PluginProcess], apiserver: FakeApiServer
) -> tuple[tuple[str, str, str], PluginProcess, DraClient]:
    """The claim ``default/pair`` of the e1000e pair, and the plugin running, registered."""
    claim = allocated_claim(apiserver, "pair", PAIR)
    plugin = start()
    return claim, plugin, plugin.connect()


def test_prepare_and_unprepare_through_the_api_server_and_a_clean_stop(
    start: Callable[[], PluginProcess], apiserver: FakeApiServer, rig: DraRig
) -> None:
    before = rig.sim.state()
    claim, plugin, client = claim_and_plugin(start, apiserver)
    uid = claim[2]
    # One device per Healthy unit; the refused NICs (live interface, mounted disk) are left out.
    slices = published(apiserver)
    assert [s["spec"]["driver"] for s in slices] == [DRIVER]
    assert {d["name"] for d in iter_devices(slices)} == {device_name(PAIR), device_name(GPU)}

    answer = client.prepare(claim)[uid]
    assert answer.error == ""
    ids = [i for device in answer.devices for i in device.cdi_device_ids]
    assert ids == [f"k8s.{DRIVER}/unit={uid}-{device_name(PAIR)}"]
    spec = rig.cdi_dir / f"k8s.{DRIVER}-unit_{uid}.yaml"
    assert spec.exists()
    registry = Registry(
        [str(rig.cdi_dir)], device_lookup=DevfsLookup(rig.host.dev_root, rig.host.sysfs_root)
    )
    assert all(registry.get_device(i) is not None for i in ids), dict(registry.errors)
    assert all(rig.drivers()[bdf] == "vfio-pci" for bdf in PAIR_FUNCTIONS)

    assert client.unprepare(claim) == {uid: ""}
    assert rig.sim.state() == before
    assert not spec.exists()
    client.close()

    assert plugin.stop() == 0, plugin.err
    assert "Traceback" not in plugin.err
    assert [s for s in apiserver.slices() if s["spec"]["nodeName"] == NODE] == []
    assert os.listdir(plugin.registry) == []
    assert not os.path.exists(plugin.plugins / DRIVER / "dra.sock")


def test_a_claim_deleted_while_prepared_is_released_at_the_next_start(
    start: Callable[[], PluginProcess], apiserver: FakeApiServer, rig: DraRig
) -> None:
    before = rig.sim.state()
    claim, plugin, client = claim_and_plugin(start, apiserver)
    uid = claim[2]
    assert client.prepare(claim)[uid].error == ""
    client.close()
    assert all(rig.drivers()[bdf] == "vfio-pci" for bdf in PAIR_FUNCTIONS)
    # The plugin dies; meanwhile the pod and its claim are force-deleted.
    assert plugin.stop(signal.SIGKILL) == -signal.SIGKILL
    apiserver.delete_claim("default", "pair")

    again = start()
    again.connect().close()  # registered: the recovery at start is over
    assert rig.sim.state() == before
    assert os.listdir(rig.cdi_dir) == []
    assert again.stop() == 0, again.err
    assert uid in again.err and "Traceback" not in again.err
