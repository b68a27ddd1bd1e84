"""What a VM gets passed through from the host, hypervisor-neutral: an IOMMU group passed
whole (:class:`PassthroughGroup`), split into physical devices that each take one guest slot
(:class:`PassthroughSlot`), each made of host functions (:class:`HostFunction`).
"""

from __future__ import annotations

from dataclasses import dataclass

from kata_vfio._core import Bdf

__all__ = ["HostFunction", "PassthroughGroup", "PassthroughSlot", "VfioNode", "function_id"]


@dataclass(frozen=True)
class VfioNode:
    """A VFIO device node the sandbox asked for, and the group it stands for.

    ``path`` is the spec's (container) path; ``host_path`` the host node it stands for, found
    from ``devno`` (``major:minor``) as Kata does, else the same path. ``devno`` is the spec's
    numbers, or the host node's when the spec gave none.
    """

    path: str
    kind: str  # group or cdev
    group: int
    cdev: str | None
    devno: tuple[int, int] | None
    host_path: str = ""


@dataclass(frozen=True)
class HostFunction:
    """One host PCI function to pass through (``cdev``: its ``vfioN`` node, if any)."""

    bdf: Bdf
    vendor: int
    device: int
    class_code: int
    numa_node: int | None
    is_pcie: bool
    is_vf: bool
    cdev: str | None
    mmio64: int
    bars_known: bool


@dataclass(frozen=True)
class PassthroughSlot:
    """Functions of one physical device: one guest slot on one port.

    ``guest_functions`` gives each function's number in the guest (the host's numbers when
    function 0 is among them, else 0..n-1 so the guest sees a function 0).
    """

    functions: tuple[HostFunction, ...]
    guest_functions: tuple[int, ...]

    @property
    def first(self) -> Bdf:
        """The lowest host address, the slot's sort key."""
        return self.functions[0].bdf

    @property
    def numa_node(self) -> int | None:
        """The host NUMA node of the device (its first function's)."""
        return self.functions[0].numa_node

    @property
    def mmio64(self) -> int:
        """Bytes of 64-bit prefetchable BARs of all functions."""
        return sum(f.mmio64 for f in self.functions)


@dataclass(frozen=True)
class PassthroughGroup:
    """An IOMMU group passed whole: every endpoint, split into physical devices.

    ``backend`` is ``legacy`` (``/dev/vfio/<group>``, QEMU ``host=``) or ``iommufd`` (cdev
    nodes, QEMU ``iommufd=`` object). ``nodes`` are the spec paths that asked for it.
    """

    group: int
    backend: str
    nodes: tuple[VfioNode, ...]
    slots: tuple[PassthroughSlot, ...]

    @property
    def functions(self) -> tuple[HostFunction, ...]:
        """All functions, in PCI order."""
        return tuple(f for s in self.slots for f in s.functions)


def function_id(bdf: Bdf) -> str:
    """The VMM device id of the passed-through host function (stable, unique per host)."""
    return f"vfio-{bdf.domain:04x}-{bdf.bus:02x}-{bdf.device:02x}.{bdf.function:x}"
