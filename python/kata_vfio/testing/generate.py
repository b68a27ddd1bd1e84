"""Large realistic hosts for property tests and benchmarks.

:func:`generate_spec` lays out root buses the way server CPUs do (the CPU's own functions and
a few root ports per root bus, several root buses per PCI domain) and hangs one of these
behind each root port: a PCIe switch with GPUs, NVMe drives and NICs; a NIC with SR-IOV VFs
(ARI numbering: VFs fill the PF's bus function by function); a GPU with its audio function
(one group: no ACS between functions); a PCIe-to-PCI bridge with a conventional device (one
group with the bridge); a single NVMe drive. Some root ports lack ACS, so their whole subtree
shares one group. Drivers are a realistic mix. The same ``(count, seed)`` always gives the
same host, with exactly ``count`` functions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from kata_vfio.testing.spec import DeviceSpec, HostSpec, LinkSpec, format_bdf
from kata_vfio.testing.topology import PCIEPORT, number_groups

_GEN5 = LinkSpec("32.0 GT/s PCIe", 16, "32.0 GT/s PCIe", 16)
_GEN4_X4 = LinkSpec("16.0 GT/s PCIe", 4, "16.0 GT/s PCIe", 4)

# (vendor, device, class, subsystem, drivers to pick from)
_GPU = (0x10DE, 0x2330, 0x030200, (0x10DE, 0x16C1), ("vfio-pci", "vfio-pci", "nvidia", None))
_NVME = (0x144D, 0xA80A, 0x010802, (0x144D, 0xA801), ("nvme", "nvme", "vfio-pci", None))
_NIC = (0x15B3, 0x1021, 0x020000, (0x15B3, 0x0021), ("mlx5_core",))
_VF = (0x15B3, 0x101E, 0x020000, (0x15B3, 0x0021), ("vfio-pci", "vfio-pci", "mlx5_core", None))
_VGA = (0x10DE, 0x26B1, 0x030000, (0x10DE, 0x16A1), ("vfio-pci", "nvidia"))
_HDA = (0x10DE, 0x22BA, 0x040300, (0x10DE, 0x16A1), ("snd_hda_intel", "vfio-pci", None))
_NVSWITCH = (0x10DE, 0x22A3, 0x068000, (0x10DE, 0x1796), ("vfio-pci", "nvidia-nvswitch"))
_LEGACY = (0x1A03, 0x2000, 0x030000, (0x1A03, 0x2000), ("ast", None))
_SWITCH_PORT = (0x1000, 0xC030)
_ROOT_PORT = (0x8086, 0x347A)


@dataclass
class _Builder:
    rng: random.Random
    devices: list[DeviceSpec] = field(default_factory=list)
    together: list[list[str]] = field(default_factory=list)
    domain_index: int = 0
    next_bus: int = 0

    @property
    def domain(self) -> int:
        # Every third domain is a VMD-style one above 0xffff.
        index = self.domain_index
        return 0x10000 + index if index % 3 == 2 else index

    def take_buses(self, count: int) -> int:
        # _root_bus makes sure a whole stack fits in the domain before it starts.
        first = self.next_bus
        self.next_bus += count
        return first

    def bdf(self, bus: int, dev: int, fn: int) -> str:
        return format_bdf(self.domain, bus, dev, fn)

    def add(self, product: tuple, bdf: str, numa: int, **place: object) -> DeviceSpec:  # type: ignore[type-arg]
        vendor, device, klass, subsys, drivers = product
        spec = DeviceSpec(
            bdf=bdf,
            vendor=vendor,
            device=device,
            class_code=klass,
            subsystem_vendor=subsys[0],
            subsystem_device=subsys[1],
            revision=0xA1 if vendor == 0x10DE else 0x00,
            driver=self.rng.choice(drivers),
            numa_node=numa,
            link=_GEN5 if klass != 0x010802 else _GEN4_X4,
            reset_methods=("flr", "bus"),
            **place,  # type: ignore[arg-type]
        )
        self.devices.append(spec)
        return spec

    def bridge(self, bdf: str, ids: tuple[int, int], numa: int, parent: str | None) -> str:
        self.devices.append(
            DeviceSpec(
                bdf=bdf,
                vendor=ids[0],
                device=ids[1],
                class_code=0x060400,
                revision=0x04,
                driver=PCIEPORT,
                numa_node=numa,
                parent=parent,
                link=_GEN5,
            )
        )
        return bdf


def _cpu_functions(b: _Builder, bus: int, numa: int) -> None:
    for fn, device, klass in ((0, 0x09A2, 0x088000), (1, 0x09A4, 0x088000), (4, 0x0998, 0x060000)):
        b.devices.append(
            DeviceSpec(b.bdf(bus, 0, fn), 0x8086, device, klass, revision=0x04, numa_node=numa)
        )


def _switch(b: _Builder, port: str, numa: int) -> None:
    ports = b.rng.randint(2, 8)
    first = b.take_buses(2 + ports)
    upstream = b.bridge(b.bdf(first, 0, 0), _SWITCH_PORT, numa, port)
    for i in range(ports):
        down = b.bridge(b.bdf(first + 1, i, 0), _SWITCH_PORT, numa, upstream)
        product = b.rng.choice((_GPU, _GPU, _NVME, _NIC, _NVSWITCH))
        extra = {"sriov_totalvfs": 16} if product is _NIC else {}
        b.add(product, b.bdf(first + 2 + i, 0, 0), numa, parent=down, **extra)


def _sriov_nic(b: _Builder, port: str, numa: int) -> None:
    bus = b.take_buses(1)
    vfs = b.rng.randint(4, 64)
    for pf_fn in (0, 1):
        b.add(_NIC, b.bdf(bus, 0, pf_fn), numa, parent=port, sriov_totalvfs=127)
    pf = b.bdf(bus, 0, 0)
    # ARI: VF routing IDs follow the PFs one by one (offset 2, stride 1).
    for index in range(vfs):
        routing = 2 + index
        b.add(_VF, b.bdf(bus, routing >> 3, routing & 7), numa, physfn=pf)


def _gpu_with_audio(b: _Builder, port: str, numa: int) -> None:
    bus = b.take_buses(1)
    vga = b.add(_VGA, b.bdf(bus, 0, 0), numa, parent=port)
    hda = b.add(_HDA, b.bdf(bus, 0, 1), numa, parent=port)
    b.together.append([vga.bdf, hda.bdf])


def _legacy(b: _Builder, port: str, numa: int) -> None:
    first = b.take_buses(2)
    bridge = b.bdf(first, 0, 0)
    b.devices.append(
        DeviceSpec(bridge, 0x1A03, 0x1150, 0x060400, revision=0x04, numa_node=numa, parent=port)
    )
    device = b.add(_LEGACY, b.bdf(first + 1, 0, 0), numa, parent=bridge, pcie=False)
    b.devices[-1] = replace(device, link=None, reset_methods=())
    b.together.append([bridge, device.bdf])


def _nvme(b: _Builder, port: str, numa: int) -> None:
    b.add(_NVME, b.bdf(b.take_buses(1), 0, 0), numa, parent=port)


_BEHIND_PORT = (_switch, _switch, _sriov_nic, _gpu_with_audio, _legacy, _nvme, _nvme)


# The most buses one root bus and what hangs below it can take (4 ports, 8-port switches).
_STACK_BUSES = 1 + 4 * (2 + 8)


def _root_bus(b: _Builder) -> None:
    if b.next_bus + _STACK_BUSES > 0x100:
        b.domain_index += 1
        b.next_bus = 0
    # The lower half of a domain's buses sits on socket 0, the upper half on socket 1.
    numa = 0 if b.next_bus < 0x80 else 1
    bus = b.take_buses(1)
    _cpu_functions(b, bus, numa)
    for dev in range(1, b.rng.randint(2, 5)):
        port = b.bridge(b.bdf(bus, dev, 0), _ROOT_PORT, numa, None)
        start = len(b.devices) - 1
        b.rng.choice(_BEHIND_PORT)(b, port, numa)
        if b.rng.random() < 0.1:
            # A root port without ACS: everything below it is one group, bridges included.
            b.together.append([d.bdf for d in b.devices[start:]])


def _trim(devices: list[DeviceSpec], count: int) -> list[DeviceSpec]:
    """Drops trailing leaves (never a bridge with children or a PF with VFs) to reach
    ``count`` functions exactly."""
    kept = sorted(devices, key=lambda d: d.key)
    while len(kept) > count:
        needed = {d.parent for d in kept} | {d.physfn for d in kept}
        for i in range(len(kept) - 1, -1, -1):
            if kept[i].bdf not in needed:
                del kept[i]
                break
    return kept


def generate_spec(count: int, seed: int = 0, **host: object) -> HostSpec:
    """A realistic host with exactly ``count`` PCI functions (see the module docs). Extra
    keyword arguments are :class:`HostSpec` fields (``cdev=False``, ...)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    b = _Builder(random.Random(seed))  # noqa: S311 - reproducible test data, not secrets
    numa_nodes = 2
    while len(b.devices) < count:
        _root_bus(b)
    devices = _trim(b.devices, count)
    present = {d.bdf for d in devices}
    together = [[m for m in group if m in present] for group in b.together]
    numbered = number_groups(devices, [g for g in together if g])
    return HostSpec(devices=numbered, numa_nodes=numa_nodes, cpus_per_node=32, **host)  # type: ignore[arg-type]
