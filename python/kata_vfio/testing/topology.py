"""Helpers for describing realistic topologies: PCIe switches, ports and IOMMU group numbers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from kata_vfio.testing.spec import DeviceSpec, LinkSpec, format_bdf, parse_bdf

PCIEPORT = "pcieport"
BRIDGE_CLASS = 0x060400


def number_groups(
    devices: Iterable[DeviceSpec], together: Sequence[Sequence[str]] = (), first: int = 0
) -> tuple[DeviceSpec, ...]:
    """Gives every function an IOMMU group the way an ACS-capable platform does: one group
    per function in numeric PCI order (the kernel numbers groups as it discovers devices),
    except the functions listed together in ``together``, which share one group (a
    multi-function device without ACS, a conventional PCI bridge and what sits behind it)."""
    ordered = sorted(devices, key=lambda d: d.key)
    shared: dict[str, int] = {}
    for index, members in enumerate(together):
        for bdf in members:
            shared[bdf] = index
    numbers: dict[object, int] = {}
    out = []
    for dev in ordered:
        key: object = ("shared", shared[dev.bdf]) if dev.bdf in shared else dev.bdf
        if key not in numbers:
            numbers[key] = first + len(numbers)
        out.append(replace(dev, iommu_group=numbers[key]))
    return tuple(out)


def switch(
    upstream_parent: str,
    upstream_bdf: str,
    downstream_bus: int,
    ports: int,
    *,
    ids: tuple[int, int] = (0x1000, 0xC030),
    link: LinkSpec | None = None,
) -> list[DeviceSpec]:
    """A PCIe switch: an upstream port behind ``upstream_parent`` and ``ports`` downstream
    ports on ``downstream_bus`` (device numbers 0, 1, ...), all on pcieport."""
    dom, _bus, _dev, _fn = parse_bdf(upstream_bdf)
    vendor, device = ids
    port_link = link or LinkSpec("32.0 GT/s PCIe", 16, "32.0 GT/s PCIe", 16)
    upstream = DeviceSpec(
        bdf=upstream_bdf,
        vendor=vendor,
        device=device,
        class_code=BRIDGE_CLASS,
        revision=0xB0,
        driver=PCIEPORT,
        parent=upstream_parent,
        link=port_link,
    )
    out = [upstream]
    for port in range(ports):
        downstream_bdf = format_bdf(dom, downstream_bus, port, 0)
        out.append(
            replace(upstream, bdf=downstream_bdf, parent=upstream_bdf, reset_methods=("pm",))
        )
    return out
