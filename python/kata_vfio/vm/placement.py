"""Where each passed-through host function lands in the guest, as plain records.

A :class:`PlannedDevice` is one IOMMU group passed whole, its :class:`PlannedFunction` list
says for each host function its VMM device id, port, guest function number, guest PCI path,
guest device kind (a CDI kind, when the caller knows one) and position in guest PCI order.
The records round-trip through JSON (``to_document`` / ``from_document``) so a container can
be planned from a stored sandbox plan.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kata_vfio._core import Bdf
from kata_vfio._echo import echo
from kata_vfio.errors import InvalidInputError
from kata_vfio.vm.devices import PassthroughGroup, VfioNode, function_id
from kata_vfio.vm.pci_path import format_pci_path
from kata_vfio.vm.topology import Port, Topology

__all__ = [
    "COLD_PLUG_IOMMUFD",
    "KindOf",
    "PlannedDevice",
    "PlannedFunction",
    "PlannedNode",
    "hotplug_iommufd_id",
    "place_devices",
]

# One iommufd object for every cold-plugged cdev device: devices of one IOMMU group must share
# an iommufd context, and one context means guest RAM is mapped (and pinned) once. A
# hot-plugged group gets its own object, so unplugging it can delete the object again.
COLD_PLUG_IOMMUFD = "iommufd0"


KindOf = Callable[[int, int], "str | None"]
"""``kind_of(vendor, class_code)``: the guest device kind of a function (a CDI kind), if any."""


def hotplug_iommufd_id(group: int) -> str:
    """The iommufd object of a hot-plugged group (deleted again on unplug)."""
    return f"iommufd-g{group}"


@dataclass(frozen=True)
class PlannedFunction:
    """One host function and its place in the guest."""

    bdf: Bdf
    vendor: int
    device: int
    class_code: int
    numa_node: int | None
    kind: str | None
    device_id: str
    port: str
    guest_function: int
    multifunction: bool
    guest_pci_path: str
    guest_root_bus: int
    guest_order: int
    cdev: str | None
    mmio64: int

    def to_document(self) -> dict[str, Any]:
        """JSON-ready form (ids as ``0x`` hex strings, as sysfs writes them)."""
        return {
            "bdf": str(self.bdf),
            "vendor": f"0x{self.vendor:04x}",
            "device": f"0x{self.device:04x}",
            "class": f"0x{self.class_code:06x}",
            "numa_node": self.numa_node,
            "kind": self.kind,
            # The plan documents name it after the VMM the project drives.
            "qemu_id": self.device_id,
            "port": self.port,
            "guest_function": self.guest_function,
            "multifunction": self.multifunction,
            "guest_pci_path": self.guest_pci_path,
            "guest_root_bus": self.guest_root_bus,
            "guest_order": self.guest_order,
            "cdev": self.cdev,
            "mmio64": self.mmio64,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], where: str) -> PlannedFunction:
        """Reads :meth:`to_document`'s form back; raises InvalidInputError naming the field."""
        return cls(
            bdf=Bdf(_field(doc, "bdf", str, where)),
            vendor=_hex(doc, "vendor", where),
            device=_hex(doc, "device", where),
            class_code=_hex(doc, "class", where),
            numa_node=_field(doc, "numa_node", int, where, optional=True),
            kind=_field(doc, "kind", str, where, optional=True),
            device_id=_field(doc, "qemu_id", str, where),
            port=_field(doc, "port", str, where),
            guest_function=_field(doc, "guest_function", int, where),
            multifunction=_field(doc, "multifunction", bool, where),
            guest_pci_path=_field(doc, "guest_pci_path", str, where),
            guest_root_bus=_field(doc, "guest_root_bus", int, where),
            guest_order=_field(doc, "guest_order", int, where),
            cdev=_field(doc, "cdev", str, where, optional=True),
            mmio64=_field(doc, "mmio64", int, where),
        )


@dataclass(frozen=True)
class PlannedNode:
    """A VFIO node that asked for the device: its spec path, ``major:minor`` (the spec's, or
    the host node's), the functions it stands for (a cdev: one; a group: all) and the host
    node (``host_path``; the spec path unless the numbers named another node)."""

    path: str
    kind: str
    devno: tuple[int, int] | None
    bdfs: tuple[Bdf, ...]
    host_path: str = ""

    @property
    def number(self) -> int:
        """``N`` of ``/dev/vfio/N`` or ``/dev/vfio/devices/vfioN`` (Kata's annotation key)."""
        name = self.path.rsplit("/", 1)[-1]
        return int(name[4:] if name.startswith("vfio") else name)

    def to_document(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "path": self.path,
            "kind": self.kind,
            "major": self.devno[0] if self.devno else None,
            "minor": self.devno[1] if self.devno else None,
            "bdfs": [str(b) for b in self.bdfs],
            "host_path": self.host_path or self.path,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], where: str) -> PlannedNode:
        """Reads :meth:`to_document`'s form back."""
        major = _field(doc, "major", int, where, optional=True)
        minor = _field(doc, "minor", int, where, optional=True)
        bdfs = doc.get("bdfs")
        if not isinstance(bdfs, list) or not all(isinstance(b, str) for b in bdfs):
            raise InvalidInputError(f"{where}.bdfs must be a list of PCI addresses")
        path = _field(doc, "path", str, where)
        return cls(
            path=path,
            kind=_field(doc, "kind", str, where),
            devno=(major, minor) if major is not None and minor is not None else None,
            bdfs=tuple(Bdf(b) for b in bdfs),
            host_path=_field(doc, "host_path", str, where, optional=True) or path,
        )


@dataclass(frozen=True)
class PlannedDevice:
    """An IOMMU group passed whole: ``cold`` (on the VMM's command line) or ``hot`` (plugged
    into a running VM); ``iommufd`` is the VMM's iommufd object its cdevs use, None for
    legacy."""

    group: int
    backend: str
    plug: str
    iommufd: str | None
    nodes: tuple[PlannedNode, ...]
    functions: tuple[PlannedFunction, ...]

    def to_document(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "group": self.group,
            "backend": self.backend,
            "plug": self.plug,
            "iommufd": self.iommufd,
            "nodes": [n.to_document() for n in self.nodes],
            "functions": [f.to_document() for f in self.functions],
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], where: str) -> PlannedDevice:
        """Reads :meth:`to_document`'s form back."""
        nodes = _list(doc, "nodes", where)
        functions = _list(doc, "functions", where)
        return cls(
            group=_field(doc, "group", int, where),
            backend=_field(doc, "backend", str, where),
            plug=_field(doc, "plug", str, where),
            iommufd=_field(doc, "iommufd", str, where, optional=True),
            nodes=tuple(
                PlannedNode.from_document(n, f"{where}.nodes[{i}]") for i, n in enumerate(nodes)
            ),
            functions=tuple(
                PlannedFunction.from_document(f, f"{where}.functions[{i}]")
                for i, f in enumerate(functions)
            ),
        )


def place_devices(
    groups: Sequence[PassthroughGroup],
    topology: Topology,
    *,
    plug: str,
    kind_of: KindOf | None = None,
) -> tuple[PlannedDevice, ...]:
    """Gives every function of ``groups`` its place; ``topology.assignments`` holds one port
    per device slot, slots taken in host PCI order across all groups. ``kind_of`` names each
    function's guest device kind (None: no kinds)."""
    slots = sorted(((g.group, s) for g in groups for s in g.slots), key=lambda item: item[1].first)
    if len(slots) != len(topology.assignments):
        raise InvalidInputError(
            f"{len(slots)} device slots but {len(topology.assignments)} port assignments"
        )
    ports = {p.id: p for p in topology.ports}
    placed: dict[int, list[PlannedFunction]] = {g.group: [] for g in groups}
    for (group_id, slot), port_id in zip(slots, topology.assignments, strict=True):
        port = ports[port_id]
        multifunction = len(slot.functions) > 1
        for function, guest_function in zip(slot.functions, slot.guest_functions, strict=True):
            placed[group_id].append(
                PlannedFunction(
                    bdf=function.bdf,
                    vendor=function.vendor,
                    device=function.device,
                    class_code=function.class_code,
                    numa_node=function.numa_node,
                    kind=kind_of(function.vendor, function.class_code) if kind_of else None,
                    device_id=function_id(function.bdf),
                    port=port.id,
                    guest_function=guest_function,
                    multifunction=multifunction and guest_function == 0,
                    guest_pci_path=format_pci_path(
                        port.root_bus_nr, (*port.path, 0), guest_function
                    ),
                    guest_root_bus=port.root_bus_nr,
                    guest_order=-1,
                    cdev=function.cdev,
                    mmio64=function.mmio64,
                )
            )
    ordered = _number_in_guest_order(placed, ports)
    devices = []
    for group in groups:
        iommufd = None
        if group.backend == "iommufd":
            iommufd = COLD_PLUG_IOMMUFD if plug == "cold" else hotplug_iommufd_id(group.group)
        devices.append(
            PlannedDevice(
                group=group.group,
                backend=group.backend,
                plug=plug,
                iommufd=iommufd,
                nodes=tuple(_planned_node(n, group) for n in group.nodes),
                functions=ordered[group.group],
            )
        )
    return tuple(devices)


def _number_in_guest_order(
    placed: Mapping[int, list[PlannedFunction]], ports: Mapping[str, Port]
) -> dict[int, tuple[PlannedFunction, ...]]:
    """Numbers functions in the order the guest enumerates them: root bus number, then the
    slot path (numerically), then the function."""

    def key(function: PlannedFunction) -> tuple[int, tuple[int, ...], int]:
        port = ports[function.port]
        return (port.root_bus_nr, port.path, function.guest_function)

    everything = sorted((f for fs in placed.values() for f in fs), key=key)
    order = {f.device_id: index for index, f in enumerate(everything)}
    return {
        group: tuple(dataclasses.replace(f, guest_order=order[f.device_id]) for f in functions)
        for group, functions in placed.items()
    }


def _planned_node(node: VfioNode, group: PassthroughGroup) -> PlannedNode:
    if node.kind == "cdev":
        bdfs = tuple(f.bdf for f in group.functions if f.cdev == node.cdev)
    else:
        bdfs = tuple(f.bdf for f in group.functions)
    return PlannedNode(
        path=node.path,
        kind=node.kind,
        devno=node.devno,
        bdfs=bdfs,
        host_path=node.host_path or node.path,
    )


def _field(
    doc: Mapping[str, Any], key: str, kind: type, where: str, *, optional: bool = False
) -> Any:
    value = doc.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidInputError(
            f"{where}.{key} = {echo(value)} is not a {kind.__name__}",
            hint="pass the JSON that 'kata-vfio sandbox plan --json' printed",
        )
    return value


def _hex(doc: Mapping[str, Any], key: str, where: str) -> int:
    text = _field(doc, key, str, where)
    if not _HEX32.match(text):
        raise InvalidInputError(
            f"{where}.{key} = {echo(text)} is not a hex number of at most 8 digits",
            hint="pass the JSON that 'kata-vfio sandbox plan --json' printed",
        )
    return int(text, 16)


_HEX32 = re.compile(r"(0x)?[0-9a-fA-F]{1,8}\Z")


def _list(doc: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = doc.get(key)
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise InvalidInputError(f"{where}.{key} must be a list of objects")
    return value
