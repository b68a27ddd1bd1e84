"""Test doubles of the DRA plugin's ports (claims in memory, slices in memory) and a fake host
shaped for it: a two-function e1000e group (as in the lab), a GPU with its audio function,
a NIC whose interface is up with a route, and a NIC sharing its group with a disk that is
mounted (both refused)."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kata_vfio.errors import ClaimError, ClaimGoneError
from kata_vfio.k8s.dra.claimspec import ClaimSpecs
from kata_vfio.k8s.dra.plugin import DraConfig
from kata_vfio.k8s.dra.ports import AllocatedDevice, ClaimRef, device_name
from kata_vfio.k8s.dra.prepare import HostAccess, Preparer
from kata_vfio.k8s.inventory import Unit
from kata_vfio.k8s.resources import parse_resources
from kata_vfio.testing import FakeHost, build_host
from kata_vfio.testing.kernel_sim import KernelSim

DRIVER = "vfio.kata-vfio.io"
NODE = "node-1"
E1000E = "8086:10d3"
RESOURCES = ("example.com/nic=8086:10d3", "example.com/gpu=10de:*")
PAIR = "0000:05:00.0"  # group 12: 05:00.0 and 05:00.1
GPU = "0000:81:00.0"  # group 41: the GPU and its audio function
LIVE_NIC = "0000:01:00.0"  # group 9: eth0 up with a route
DISK_NIC = "0000:06:00.0"  # group 20: with 06:00.1, an NVMe disk that is mounted
BOOT_ID = "6f1c1a4e-0c0e-4a57-9a3c-6b0e0ad5c001"

_PORT = "1b36:000c"
DEVICES: list[dict[str, Any]] = [
    {"bdf": "0000:00:00.0", "id": "8086:29c0", "class": "060000", "group": 0},
    {"bdf": "0000:00:10.0", "id": _PORT, "class": "060400", "driver": "pcieport", "group": 1},
    {"bdf": "0000:00:12.0", "id": _PORT, "class": "060400", "driver": "pcieport", "group": 3},
    {"bdf": "0000:00:13.0", "id": _PORT, "class": "060400", "driver": "pcieport", "group": 4},
    {"bdf": LIVE_NIC, "id": E1000E, "class": "020000", "driver": "e1000e", "group": 9,
     "parent": "0000:00:10.0"},
    {"bdf": PAIR, "id": E1000E, "class": "020000", "driver": "e1000e", "group": 12,
     "parent": "0000:00:12.0"},
    {"bdf": "0000:05:00.1", "id": E1000E, "class": "020000", "driver": "e1000e", "group": 12,
     "parent": "0000:00:12.0"},
    {"bdf": DISK_NIC, "id": E1000E, "class": "020000", "driver": "e1000e", "group": 20,
     "parent": "0000:00:13.0"},
    {"bdf": "0000:06:00.1", "id": "144d:a808", "class": "010802", "driver": "nvme",
     "group": 20, "parent": "0000:00:13.0"},
    {"bdf": "0000:80:01.0", "id": "8086:347a", "class": "060400", "driver": "pcieport",
     "group": 40},
    {"bdf": GPU, "id": "10de:26b9", "class": "030000", "driver": "nvidia", "group": 41,
     "parent": "0000:80:01.0"},
    {"bdf": "0000:81:00.1", "id": "10de:22ba", "class": "040300", "driver": "snd_hda_intel",
     "group": 41, "parent": "0000:80:01.0"},
]  # fmt: skip


def _host_usage() -> Any:
    """The binding tests' helpers that lay out a host's use of its devices."""
    path = Path(__file__).resolve().parents[1] / "vfio" / "host_usage.py"
    spec = importlib.util.spec_from_file_location("dra_host_usage", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_boot_id(host: FakeHost, boot_id: str) -> None:
    path = Path(host.proc_root) / "sys/kernel/random/boot_id"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(boot_id + "\n")


def build_dra_host(root: Path, *, cdev: bool = True) -> FakeHost:
    """The host described in the module docstring, with this boot's ID."""
    host = build_host(root, {"iommu": "intel", "cdev": cdev, "devices": DEVICES})
    usage = _host_usage()
    base = os.path.join(host.device_path(LIVE_NIC), "net", "eth0")
    usage.put(os.path.join(base, "flags"), "0x1003\n")
    usage.put(os.path.join(base, "operstate"), "up\n")
    usage.put(
        os.path.join(host.proc_root, "net/route"),
        "Iface\tDestination\tGateway\tFlags\neth0\t0002A8C0\t00000000\t0001\n",
    )
    usage.add_block(host, "0000:06:00.1", "nvme0n1", "259:0")
    usage.mount(host, "259:0", "/var/lib/data")
    write_boot_id(host, BOOT_ID)
    return host


@dataclass
class MemoryClaims:
    """A ClaimSource over a dict: UID -> (namespace, name, devices); a missing UID is gone."""

    claims: dict[str, tuple[str, str, list[AllocatedDevice]]] = field(default_factory=dict)
    unreachable: bool = False
    calls: int = 0

    def add(self, uid: str, *bdfs: str, request: str = "nic", name: str = "") -> ClaimRef:
        """A claim allocated the units ``bdfs`` of our driver on our node."""
        ref = ClaimRef("default", name or f"claim-{uid[:8]}", uid)
        devices = [AllocatedDevice(request, DRIVER, NODE, device_name(b)) for b in bdfs]
        self.claims[uid] = (ref.namespace, ref.name, devices)
        return ref

    def allocated(self, claim: ClaimRef) -> list[AllocatedDevice]:
        self.calls += 1
        if self.unreachable:
            raise ClaimError(f"cannot read ResourceClaim {claim}: connection refused")
        entry = self.claims.get(claim.uid)
        if entry is None or entry[:2] != (claim.namespace, claim.name):
            raise ClaimGoneError(f"ResourceClaim {claim} no longer exists")
        return list(entry[2])


class MemorySlices:
    """A SlicePublisher that keeps what it was given."""

    def __init__(self) -> None:
        self.published: list[list[str]] = []
        self.deleted = 0
        self.changed = threading.Event()

    def publish(self, units: Sequence[Unit]) -> None:
        self.published.append([u.id for u in units])
        self.changed.set()

    def delete_all(self) -> None:
        self.deleted += 1


@dataclass
class DraRig:
    """A fake host, its simulated kernel and a Preparer with in-memory claims."""

    host: FakeHost
    sim: KernelSim
    claims: MemoryClaims
    state_dir: Path
    cdi_dir: Path

    def access(self) -> HostAccess:
        modules = Path(self.host.root) / "modules"
        modules.mkdir(exist_ok=True)
        return HostAccess(
            paths=self.host.paths,
            resources=parse_resources(RESOURCES),
            iommu_mode="auto",
            modules_root=str(modules),
            kernel_release="6.12.0-test",
            sysfs_writer=self.sim.write,
            module_loader=self.sim.load_module,
        )

    def plugin_config(self, root: Path, **settings: Any) -> DraConfig:
        """The plugin's configuration on this host, its kubelet directories under ``root``
        (made here, as the kubelet would have them)."""
        config = DraConfig(
            driver=DRIVER,
            node=NODE,
            access=self.access(),
            plugin_dir=str(root / "plugins"),
            registry_dir=str(root / "registry"),
            cdi_dir=str(self.cdi_dir),
            state_dir=str(self.state_dir),
            **settings,
        )
        for directory in (config.plugin_dir, config.registry_dir):
            os.makedirs(directory, exist_ok=True)
        return config

    def preparer(self, hook: Any = None, boot_id: str = BOOT_ID) -> Preparer:
        preparer = Preparer(
            driver=DRIVER,
            pool=NODE,
            access=self.access(),
            state_dir=str(self.state_dir),
            boot_id=boot_id,
            specs=ClaimSpecs(str(self.cdi_dir), DRIVER),
            claims=self.claims,
            hook=hook,
        )
        preparer.recover()
        return preparer

    def drivers(self) -> dict[str, str | None]:
        """Each endpoint's driver now."""
        return {bdf: driver for bdf, (driver, _) in self.sim.state().items()}


def make_rig(root: Path, *, cdev: bool = True) -> DraRig:
    host = build_dra_host(root / "host", cdev=cdev)
    return DraRig(host, KernelSim.for_host(host), MemoryClaims(), root / "state", root / "cdi")
