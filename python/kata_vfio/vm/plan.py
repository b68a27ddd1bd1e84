"""The VM plan: everything a VMM backend needs to start a sandbox VM and plug its devices,
with no VMM's vocabulary in it. Pure data: the same inputs give the same plan.

A backend renders it (QEMU: :func:`kata_vfio.qemu.vm.build_vm_command` with the backend's own
:class:`~kata_vfio.qemu.vm.QemuSettings`); the devices in :attr:`VmPlan.deferred` are plugged
once the VM runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kata_vfio.vm.hotplug import HotplugGroup, deferred_hotplug
from kata_vfio.vm.placement import PlannedDevice
from kata_vfio.vm.topology import Topology

__all__ = ["PassedFunction", "VmPlan", "cold_plugged", "deferred"]


@dataclass(frozen=True)
class PassedFunction:
    """Where one host function goes in the guest at start: its port, guest function and
    whether it opens a multi-function device; ``iommufd`` names the iommufd object its cdev
    is bound to (None: the legacy group)."""

    host: str
    device_id: str
    port: str
    guest_function: int
    multifunction: bool
    iommufd: str | None = None


@dataclass(frozen=True)
class VmPlan:
    """One VM: size, boot assets (absolute paths; ``image`` is a root disk, ``initrd`` the
    alternative), the guest PCIe topology, the functions passed at start (``functions``, in
    guest order) and the groups to hot-plug once it runs (``deferred``). ``iommu`` gives the
    guest a virtual IOMMU, ``iommu_platform`` puts the VM's virtio devices behind it;
    ``console_socket`` is the serial console's unix socket (None: no console)."""

    name: str
    memory_mib: int
    vcpus: int
    topology: Topology
    functions: tuple[PassedFunction, ...] = ()
    deferred: tuple[HotplugGroup, ...] = ()
    kernel: str = ""
    initrd: str = ""
    image: str = ""
    rootfs_type: str = "ext4"
    kernel_params: str = ""
    firmware: str = ""
    iommu: bool = False
    iommu_platform: bool = False
    console_socket: str | None = None


def cold_plugged(devices: Sequence[PlannedDevice]) -> tuple[PassedFunction, ...]:
    """The functions of the cold-plugged ``devices``, device by device in guest order."""
    return tuple(
        PassedFunction(
            host=str(f.bdf),
            device_id=f.device_id,
            port=f.port,
            guest_function=f.guest_function,
            multifunction=f.multifunction,
            iommufd=d.iommufd,
        )
        for d in devices
        if d.plug == "cold"
        for f in sorted(d.functions, key=lambda f: f.guest_order)
    )


def deferred(devices: Sequence[PlannedDevice]) -> tuple[HotplugGroup, ...]:
    """The hot-plugs of the ``devices`` planned for after start."""
    return tuple(deferred_hotplug(d) for d in devices if d.plug == "hot")
