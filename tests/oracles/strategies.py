"""Hypothesis strategies for fake hosts (needs the ``hypothesis`` package, a test extra).

:func:`host_specs` draws small but varied hosts: root-bus endpoints, root ports with single
or multi-function endpoints, PCIe switches, SR-IOV PFs with VFs, PCIe-to-PCI bridges with a
conventional device; groups per function or shared (no ACS); a driver mix that includes vfio
variants, pci-stub, host drivers and unbound functions; IOMMU on (Intel, AMD, Arm) or off,
with or without cdevs and the ``kernel/iommu_groups`` listing; domains above 0xffff; missing
and unreadable attributes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import strategies as st

from kata_vfio.testing.spec import (
    BarSpec,
    DeviceSpec,
    HostSpec,
    LinkSpec,
    format_bdf,
    is_vfio_driver,
)
from kata_vfio.testing.topology import number_groups

# GPUs, audio, NICs, NVMe, USB, NVSwitch, system peripherals, and platform functions (ISA/LPC
# bridge, SMBus, AMD IOMMU) so that fixes which would take them are drawn too.
ENDPOINT_CLASSES = (
    0x030200, 0x030000, 0x040300, 0x020000, 0x010802, 0x0C0330, 0x068000, 0x088000,
    0x060100, 0x0C0500, 0x080600,
)  # fmt: skip
HOST_DRIVERS = ("nvidia", "nvme", "mlx5_core", "snd_hda_intel", "xhci_hcd")
VFIO_DRIVERS = ("vfio-pci", "vfio-pci", "mlx5_vfio_pci", "nvgrace-gpu-vfio-pci")
BRIDGE_DRIVERS = ("pcieport", "pcieport", None, "shpchp")
ATTRIBUTES = (
    "revision",
    "numa_node",
    "driver_override",
    "subsystem_vendor",
    "subsystem_device",
    "uevent",
    "modalias",
    "config",
    "reset_method",
    "resource",
    "current_link_speed",
)
_LINK = LinkSpec("16.0 GT/s PCIe", 8, "32.0 GT/s PCIe", 16)


@st.composite
def _endpoint(draw: Any, /, bdf: str, **place: Any) -> DeviceSpec:
    drivers = st.sampled_from((None, "pci-stub", *VFIO_DRIVERS, *HOST_DRIVERS))
    bars = draw(
        st.lists(
            st.sampled_from(
                (
                    BarSpec(0, 1 << 24, is_64bit=True),
                    BarSpec(0, 1 << 14),
                    BarSpec(2, 1 << 36, is_64bit=True, prefetchable=True),
                    BarSpec(2, 1 << 28, is_64bit=True, prefetchable=True),
                    BarSpec(5, 128, is_io=True),
                )
            ),
            max_size=3,
            unique_by=lambda b: b.index,
        )
    )
    class_code = draw(st.sampled_from(ENDPOINT_CLASSES))
    return DeviceSpec(
        bdf=bdf,
        vendor=draw(st.sampled_from((0x10DE, 0x15B3, 0x144D, 0x8086, 0x1002, 0xFFFE))),
        device=draw(st.integers(0, 0xFFFF)),
        class_code=class_code,
        boot_vga=class_code == 0x030000 and draw(st.booleans()),
        subsystem_vendor=draw(st.sampled_from((0, 0x10DE, 0x1028))),
        subsystem_device=draw(st.integers(0, 0xFFFF)),
        revision=draw(st.integers(0, 0xFF)),
        driver=draw(drivers),
        driver_override=draw(st.sampled_from((None, "vfio-pci", "none"))),
        numa_node=draw(st.sampled_from((None, 0, 1))),
        pcie=draw(st.booleans()),
        bars=tuple(sorted(bars, key=lambda b: b.index)),
        reset_methods=draw(st.sampled_from(((), ("flr",), ("flr", "bus"), ("pm", "bus")))),
        link=draw(st.sampled_from((None, _LINK))),
        missing=tuple(draw(st.lists(st.sampled_from(ATTRIBUTES), max_size=2, unique=True))),
        unreadable=tuple(draw(st.lists(st.sampled_from(ATTRIBUTES), max_size=1))),
        **place,
    )


def _bridge(draw: Any, bdf: str, parent: str | None) -> DeviceSpec:
    return DeviceSpec(
        bdf=bdf,
        vendor=0x8086,
        device=0x347A,
        class_code=0x060400,
        driver=draw(st.sampled_from(BRIDGE_DRIVERS)),
        parent=parent,
        numa_node=draw(st.sampled_from((None, 0))),
        link=_LINK,
    )


@st.composite
def _unit(draw: Any, /, domain: int, bus: int, slot: int) -> tuple[list[DeviceSpec], int, bool]:
    """One thing on the root bus at ``slot``; returns its functions, the buses it used and
    whether its functions share one group (no ACS)."""
    kind = draw(st.sampled_from(("endpoint", "port", "multifunction", "switch", "sriov")))
    if kind == "endpoint":
        return [draw(_endpoint(format_bdf(domain, 0, slot, 0)))], 0, False
    port = _bridge(draw, format_bdf(domain, 0, slot, 0), None)
    shared = draw(st.booleans())
    if kind == "port":
        return [port, draw(_endpoint(format_bdf(domain, bus, 0, 0), parent=port.bdf))], 1, shared
    if kind == "multifunction":
        count = draw(st.integers(2, 4))
        funcs = [
            draw(_endpoint(format_bdf(domain, bus, 0, f), parent=port.bdf)) for f in range(count)
        ]
        return [port, *funcs], 1, shared
    if kind == "switch":
        up = _bridge(draw, format_bdf(domain, bus, 0, 0), port.bdf)
        ports = draw(st.integers(1, 3))
        out = [port, up]
        for i in range(ports):
            down = _bridge(draw, format_bdf(domain, bus + 1, i, 0), up.bdf)
            out += [down, draw(_endpoint(format_bdf(domain, bus + 2 + i, 0, 0), parent=down.bdf))]
        return out, 2 + ports, shared
    pf = draw(_endpoint(format_bdf(domain, bus, 0, 0), parent=port.bdf))
    vfs = draw(st.integers(0, 4))
    pf = replace(pf, sriov_totalvfs=8, class_code=0x020000)
    out = [port, pf]
    for i in range(vfs):
        out.append(draw(_endpoint(format_bdf(domain, bus, 0, 1 + i), physfn=pf.bdf)))
    return out, 1, shared


@st.composite
def host_specs(draw: Any, /, max_units: int = 5, noiommu: bool = True) -> HostSpec:
    """A small random host (see the module docs). ``noiommu=False`` leaves out vfio's
    noiommu mode."""
    iommu = draw(st.sampled_from(("intel", "amd", "arm", "intel", False)))
    domain = draw(st.sampled_from((0, 0, 1, 0x10000, 0xABCDE)))
    devices: list[DeviceSpec] = []
    together: list[list[str]] = []
    bus = 1
    for slot in range(draw(st.integers(1, max_units))):
        funcs, used, shared = draw(_unit(domain, bus, slot + 1))
        bus += used
        devices += funcs
        if shared:
            together.append([d.bdf for d in funcs])
    no_iommu_mode = iommu is False and noiommu and draw(st.booleans())
    devices = _assign_groups(devices, together, iommu is not False, no_iommu_mode)
    return HostSpec(
        devices=tuple(devices),
        iommu=iommu is not False,
        iommu_vendor=iommu if iommu is not False else "intel",
        cdev=draw(st.booleans()),
        noiommu=no_iommu_mode,
        groups_dir=draw(st.booleans()) if iommu is not False else True,
        reserved_regions=draw(st.booleans()),
        firmware_table=draw(st.booleans()),
        numa_nodes=2,
    )


def _assign_groups(
    devices: list[DeviceSpec], together: list[list[str]], iommu: bool, noiommu: bool
) -> list[DeviceSpec]:
    if iommu:
        return list(number_groups(devices, together, first=0))
    # Without an IOMMU a vfio driver cannot bind unless noiommu mode is on.
    return [
        replace(d, driver=None) if is_vfio_driver(d.driver) and not noiommu else d for d in devices
    ]
