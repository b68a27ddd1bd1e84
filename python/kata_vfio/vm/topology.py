"""The guest's PCIe topology: root ports, a switch, or NUMA expanders, and which device sits
on which port. Pure: the same requests give the same topology.

Layout on the q35 root bus (``pcie.0``): slots 0x01-0x07 stay for the VM's own devices,
ports start at slot 0x08 (one port per slot, ``rp0`` first), NUMA expanders (``pxb-pcie``)
follow the ports. Ports are named and numbered in the order the guest enumerates them, so
``rp2`` always comes before ``rp10``. Each device gets one port; all its functions sit on it.

64-bit MMIO: a port that carries a device with 64-bit prefetchable BARs gets
``pref64-reserve`` equal to their sum, so firmware opens a window the BARs fit in (a switch's
downstream ports cannot carry it; the switch's root port then reserves for all). When the
windows do not fit q35's default 32 GiB 64-bit hole, the hole is enlarged and the guest's
physical address width raised to cover it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kata_vfio._echo import echo
from kata_vfio.errors import PlanError
from kata_vfio.vm.pci_path import ROOT_BUS, format_pci_path

__all__ = [
    "DEFAULT_PCI_HOLE64",
    "FIRST_PORT_SLOT",
    "MAX_PORTS",
    "Expander",
    "Port",
    "PortRequest",
    "Switch",
    "Topology",
    "plan_topology",
]

MAX_PORTS = 16
FIRST_PORT_SLOT = 0x08
_LAST_ROOT_SLOT = 0x1E  # 0x1f holds q35's ICH9 functions
# q35's pci-hole64-size default (QEMU's Q35_PCI_HOST_HOLE64_SIZE_DEFAULT).
DEFAULT_PCI_HOLE64 = 32 << 30
# Room in the 64-bit hole for the VM's own 64-bit BARs (virtio, small device BARs).
_HOLE64_SLACK = 1 << 30
_MIB = 1 << 20
# Guest physical address bits QEMU uses unless told otherwise (TCG and KVM without
# host-phys-bits).
DEFAULT_PHYS_BITS = 40
_FOUR_GIB = 4 << 30
# q35 keeps RAM below 2 GiB under 4 GiB once the guest has 2.75 GiB or more.
_Q35_LOWMEM = 2 << 30
_Q35_LOWMEM_LIMIT = 0xB0000000
_PXB_BUS_STRIDE = 0x20


@dataclass(frozen=True)
class PortRequest:
    """What one device needs from the topology.

    ``numa_node`` is the host node (None: no placement); ``mmio64`` the bytes of its 64-bit
    prefetchable BARs (0 when it has none or they are unknown).
    """

    numa_node: int | None = None
    mmio64: int = 0


@dataclass(frozen=True)
class Port:
    """A PCIe root port (``kind`` ``root-port``) or switch downstream port (``switch-port``)
    that can hold one device; ``bus`` is the id of the bus it sits on."""

    id: str
    kind: str
    bus: str
    addr: int
    chassis: int
    slot: int
    window: int
    guest_numa_node: int | None
    root_bus_nr: int
    path: tuple[int, ...]

    @property
    def pref64_reserve(self) -> int:
        """The ``pref64-reserve`` to give QEMU: root ports carry the resource-reserve
        capability firmware reads; switch downstream ports do not (their switch's root port
        reserves for all of them)."""
        return self.window if self.kind == "root-port" else 0

    @property
    def guest_pci_path(self) -> str:
        """The guest PCI path of function 0 behind this port."""
        return format_pci_path(self.root_bus_nr, (*self.path, 0), 0)


@dataclass(frozen=True)
class Switch:
    """A PCIe switch: a root port, the upstream port behind it, downstream ports below."""

    root_port_id: str
    root_port_addr: int
    chassis: int
    upstream_id: str
    downstream_chassis: int
    pref64_reserve: int = 0


@dataclass(frozen=True)
class Expander:
    """A ``pxb-pcie`` extra root complex for one guest NUMA node."""

    id: str
    addr: int
    bus_nr: int
    guest_numa_node: int
    host_numa_node: int


@dataclass(frozen=True)
class Topology:
    """The planned ports and which request went to which port."""

    kind: str
    ports: tuple[Port, ...]
    assignments: tuple[str, ...]
    switch: Switch | None = None
    expanders: tuple[Expander, ...] = ()
    mmio64_total: int = 0
    pci_hole64: int | None = None
    phys_bits: int | None = None

    def port(self, port_id: str) -> Port:
        """The port named ``port_id``."""
        for port in self.ports:
            if port.id == port_id:
                return port
        raise PlanError(f"no port {echo(port_id)} in the topology")

    @property
    def free_ports(self) -> tuple[Port, ...]:
        """Ports no device was assigned to, in order (for hot-plug)."""
        used = set(self.assignments)
        return tuple(p for p in self.ports if p.id not in used)


def plan_topology(
    requests: Sequence[PortRequest],
    *,
    kind: str,
    min_ports: int = 0,
    numa: bool = False,
    hotplug_mmio64: int = 0,
    memory_bytes: int = 0,
    guest_nodes: Mapping[int, int] | None = None,
) -> Topology:
    """Plans ports for ``requests`` (in the order given, which is the guest order).

    ``kind`` is ``root-port``, ``switch-port`` or ``no-port``; ``min_ports`` the configured
    ``pcie_root_port``/``pcie_switch_port`` (free ports stay for hot-plug and get
    ``hotplug_mmio64`` bytes of 64-bit window each). With ``numa``, devices of host node
    *n* go to root ports on an expander for guest node ``guest_nodes[n]`` (default: nodes
    numbered in host order). ``memory_bytes`` (guest RAM) places the 64-bit hole.
    """
    if kind == "no-port":
        if requests:
            raise PlanError(
                f"{len(requests)} VFIO device(s) need PCIe ports but cold_plug_vfio and "
                "hot_plug_vfio are both 'no-port'",
                hint="set cold_plug_vfio = 'root-port' (or 'switch-port') in the Kata "
                "configuration",
            )
        return Topology(kind=kind, ports=(), assignments=())
    if kind not in ("root-port", "switch-port"):
        raise PlanError(f"unknown port kind {echo(kind)}", hint="use root-port or switch-port")
    if numa and kind != "root-port":
        raise PlanError(
            "NUMA placement needs root ports (pxb-pcie expanders hold root ports only)",
            hint="use cold_plug_vfio = 'root-port' with enable_numa",
        )
    total = max(len(requests), min_ports)
    if total > MAX_PORTS:
        raise PlanError(
            f"{len(requests)} device(s) and {min_ports} configured port(s) need {total} "
            f"PCIe ports; at most {MAX_PORTS} are supported",
            hint="pass fewer devices to this sandbox (functions of one device share a port)",
        )
    if kind == "switch-port":
        topology = _switch_topology(requests, total, hotplug_mmio64)
    else:
        topology = _root_port_topology(requests, total, numa, hotplug_mmio64, guest_nodes)
    return _with_hole64(topology, memory_bytes)


def _window(request: PortRequest) -> int:
    """Bridge windows are 1 MiB granular."""
    return -(-request.mmio64 // _MIB) * _MIB if request.mmio64 else 0


def _root_port_topology(
    requests: Sequence[PortRequest],
    total: int,
    numa: bool,
    hotplug_mmio64: int,
    guest_nodes: Mapping[int, int] | None,
) -> Topology:
    host_nodes = sorted(
        {r.numa_node for r in requests if r.numa_node is not None} if numa else set()
    )
    node_map = (
        dict(guest_nodes)
        if guest_nodes is not None
        else {host: index for index, host in enumerate(host_nodes)}
    )
    for host in host_nodes:
        if host not in node_map:
            raise PlanError(
                f"host NUMA node {host} has no guest NUMA node in the mapping",
                hint="add it to numa_mapping or turn NUMA placement off",
            )
    # Requests on the root bus first (guest bus numbers 1..), expander ones after.
    root_requests = [i for i, r in enumerate(requests) if r.numa_node not in host_nodes]
    per_node = {
        host: [i for i, r in enumerate(requests) if r.numa_node == host] for host in host_nodes
    }
    free = total - len(requests)
    root_count = len(root_requests) + free
    if FIRST_PORT_SLOT + root_count + len(host_nodes) - 1 > _LAST_ROOT_SLOT:
        raise PlanError(
            f"{root_count} root ports and {len(host_nodes)} NUMA expanders do not fit the root bus",
            hint="use fewer NUMA nodes or fewer ports",
        )
    ports: list[Port] = []
    assignments: list[str] = [""] * len(requests)
    for index in range(root_count):
        request_index = root_requests[index] if index < len(root_requests) else None
        window = _window(requests[request_index]) if request_index is not None else hotplug_mmio64
        port = Port(
            id=f"rp{len(ports)}",
            kind="root-port",
            bus=ROOT_BUS,
            addr=FIRST_PORT_SLOT + index,
            chassis=1,
            slot=index,
            window=window,
            guest_numa_node=None,
            root_bus_nr=0,
            path=(FIRST_PORT_SLOT + index,),
        )
        ports.append(port)
        if request_index is not None:
            assignments[request_index] = port.id
    expanders: list[Expander] = []
    next_addr = FIRST_PORT_SLOT + root_count
    for position, host in enumerate(host_nodes):
        guest = node_map[host]
        expander = Expander(
            id=f"pxb{guest}",
            addr=next_addr + position,
            bus_nr=_PXB_BUS_STRIDE * (position + 1),
            guest_numa_node=guest,
            host_numa_node=host,
        )
        expanders.append(expander)
        for slot, request_index in enumerate(per_node[host]):
            port = Port(
                id=f"rp{len(ports)}",
                kind="root-port",
                bus=expander.id,
                addr=slot,
                chassis=10 + guest,
                slot=slot,
                window=_window(requests[request_index]),
                guest_numa_node=guest,
                root_bus_nr=expander.bus_nr,
                path=(slot,),
            )
            ports.append(port)
            assignments[request_index] = port.id
    return Topology(
        kind="root-port",
        ports=tuple(ports),
        assignments=tuple(assignments),
        expanders=tuple(expanders),
    )


def _switch_topology(requests: Sequence[PortRequest], total: int, hotplug_mmio64: int) -> Topology:
    switch = Switch(
        root_port_id="swrp0",
        root_port_addr=FIRST_PORT_SLOT,
        chassis=1,
        upstream_id="swup0",
        downstream_chassis=2,
    )
    ports = []
    for index in range(total):
        window = _window(requests[index]) if index < len(requests) else hotplug_mmio64
        ports.append(
            Port(
                id=f"swdp{index}",
                kind="switch-port",
                bus=switch.upstream_id,
                addr=index,
                chassis=switch.downstream_chassis,
                slot=index,
                window=window,
                guest_numa_node=None,
                root_bus_nr=0,
                # root port slot / upstream port at 00 / downstream port slot
                path=(switch.root_port_addr, 0, index),
            )
        )
    windows = sorted((p.window for p in ports if p.window), reverse=True)
    return Topology(
        kind="switch-port",
        ports=tuple(ports),
        assignments=tuple(p.id for p in ports[: len(requests)]),
        switch=dataclasses.replace(switch, pref64_reserve=_packed_size(windows)),
    )


def _with_hole64(topology: Topology, memory_bytes: int) -> Topology:
    windows = sorted((p.window for p in topology.ports if p.window), reverse=True)
    total = sum(windows)
    needed = _packed_size(windows) + _HOLE64_SLACK if windows else 0
    hole = None
    if needed > DEFAULT_PCI_HOLE64:
        hole = 1 << (needed - 1).bit_length()
    size = hole or DEFAULT_PCI_HOLE64
    # QEMU puts the hole right above RAM that sits over 4 GiB, aligned to 1 GiB.
    high_ram = memory_bytes - _Q35_LOWMEM if memory_bytes >= _Q35_LOWMEM_LIMIT else 0
    start = -(-(_FOUR_GIB + high_ram) // (1 << 30)) * (1 << 30)
    bits = (start + size - 1).bit_length()
    return Topology(
        kind=topology.kind,
        ports=topology.ports,
        assignments=topology.assignments,
        switch=topology.switch,
        expanders=topology.expanders,
        mmio64_total=total,
        pci_hole64=hole,
        phys_bits=bits if bits > DEFAULT_PHYS_BITS else None,
    )


def _packed_size(windows: Sequence[int]) -> int:
    """Bytes needed to place windows, each aligned to its largest power of two, biggest
    first (the way firmware packs them)."""
    end = 0
    for window in windows:
        align = 1 << (window.bit_length() - 1)
        end = -(-end // align) * align + window
    return end
