"""The contents of PCI sysfs attribute files, formatted the way the kernel formats them.

Sources of the formats (facts only): drivers/pci/pci-sysfs.c (``vendor``, ``class``,
``resource``, ``numa_node``, link attributes), drivers/pci/pci-driver.c (``uevent``),
include/linux/ioport.h (IORESOURCE flags) and the PCI configuration header layout.
"""

from __future__ import annotations

import struct

from kata_vfio.testing.spec import BarSpec, DeviceSpec

# IORESOURCE_* flags as include/linux/ioport.h defines them; the low bits of a BAR's flags
# keep the BAR's own encoding (PCI_BASE_ADDRESS_*), as resource_show prints them.
IORESOURCE_IO = 0x00000100
IORESOURCE_MEM = 0x00000200
IORESOURCE_PREFETCH = 0x00002000
IORESOURCE_SIZEALIGN = 0x00040000
IORESOURCE_MEM_64 = 0x00100000
PCI_BASE_ADDRESS_SPACE_IO = 0x1
PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4
PCI_BASE_ADDRESS_MEM_PREFETCH = 0x8

# Lines in ``resource``: 6 BARs, the ROM, 6 SR-IOV BARs; bridges add 4 windows.
RESOURCE_LINES_ENDPOINT = 13
RESOURCE_LINES_BRIDGE = 17

CONFIG_SIZE_PCIE = 4096
CONFIG_SIZE_PCI = 256

# PCI Express capability "device/port type" values.
PCIE_TYPE_ENDPOINT = 0x0
PCIE_TYPE_ROOT_PORT = 0x4
PCIE_TYPE_UPSTREAM = 0x5
PCIE_TYPE_DOWNSTREAM = 0x6
PCIE_TYPE_RC_ENDPOINT = 0x9


def hex16(value: int) -> str:
    """``vendor``/``device``/``subsystem_*``: ``0x10de``."""
    return f"0x{value:04x}\n"


def class_text(class_code: int) -> str:
    """``class``: ``0x030200``."""
    return f"0x{class_code:06x}\n"


def revision_text(revision: int) -> str:
    """``revision``: ``0xa1``."""
    return f"0x{revision:02x}\n"


def numa_text(node: int | None) -> str:
    """``numa_node``: ``-1`` when the device has no node."""
    return f"{-1 if node is None else node}\n"


def override_text(override: str | None) -> str:
    """``driver_override``: ``(null)`` when unset."""
    return f"{override if override is not None else '(null)'}\n"


def modalias(dev: DeviceSpec) -> str:
    """The modalias string (no newline): IDs in upper-case hex, 8 digits each."""
    base, sub, prog_if = dev.class_code >> 16, (dev.class_code >> 8) & 0xFF, dev.class_code & 0xFF
    return (
        f"pci:v{dev.vendor:08X}d{dev.device:08X}sv{dev.subsystem_vendor:08X}"
        f"sd{dev.subsystem_device:08X}bc{base:02X}sc{sub:02X}i{prog_if:02X}"
    )


def uevent(dev: DeviceSpec, driver: str | None) -> str:
    """``uevent``: DRIVER= only when bound, class in hex without leading zeros, IDs upper case."""
    lines = [f"DRIVER={driver}"] if driver is not None else []
    lines += [
        f"PCI_CLASS={dev.class_code:X}",
        f"PCI_ID={dev.vendor:04X}:{dev.device:04X}",
        f"PCI_SUBSYS_ID={dev.subsystem_vendor:04X}:{dev.subsystem_device:04X}",
        f"PCI_SLOT_NAME={dev.bdf}",
        f"MODALIAS={modalias(dev)}",
    ]
    return "\n".join(lines) + "\n"


def bar_flags(bar: BarSpec) -> int:
    """The flags column of ``resource`` for one BAR."""
    if bar.is_io:
        return IORESOURCE_IO | IORESOURCE_SIZEALIGN | PCI_BASE_ADDRESS_SPACE_IO
    flags = IORESOURCE_MEM | IORESOURCE_SIZEALIGN
    if bar.is_64bit:
        flags |= IORESOURCE_MEM_64 | PCI_BASE_ADDRESS_MEM_TYPE_64
    if bar.prefetchable:
        flags |= IORESOURCE_PREFETCH | PCI_BASE_ADDRESS_MEM_PREFETCH
    return flags


def resource(bars: dict[int, tuple[BarSpec, int]], bridge: bool) -> str:
    """``resource``: one ``start end flags`` line per resource, zeros for empty ones."""
    count = RESOURCE_LINES_BRIDGE if bridge else RESOURCE_LINES_ENDPOINT
    lines = []
    for index in range(count):
        placed = bars.get(index)
        if placed is None:
            lines.append(f"0x{0:016x} 0x{0:016x} 0x{0:016x}")
            continue
        bar, start = placed
        lines.append(f"0x{start:016x} 0x{start + bar.size - 1:016x} 0x{bar_flags(bar):016x}")
    return "\n".join(lines) + "\n"


def link_speed_text(speed: str) -> str:
    """``current_link_speed``/``max_link_speed``: ``16.0 GT/s PCIe``."""
    return f"{speed}\n"


def pcie_port_type(dev: DeviceSpec, parent: DeviceSpec | None, has_bridge_children: bool) -> int:
    """A plausible PCI Express device/port type for the capability in ``config``."""
    if dev.is_bridge:
        if parent is None:
            return PCIE_TYPE_ROOT_PORT
        # Behind a root port a bridge with bridges below it is a switch upstream port.
        return PCIE_TYPE_UPSTREAM if has_bridge_children else PCIE_TYPE_DOWNSTREAM
    return PCIE_TYPE_ENDPOINT if parent is not None else PCIE_TYPE_RC_ENDPOINT


def config_space(
    dev: DeviceSpec,
    *,
    multifunction: bool,
    enabled: bool,
    bars: dict[int, tuple[BarSpec, int]],
    buses: tuple[int, int, int] | None,
    port_type: int,
    irq: int,
) -> bytes:
    """The ``config`` file: a type 0 or type 1 header with the IDs, BARs, bus numbers and,
    for PCIe functions, a PCI Express capability at 0x40; 4096 bytes for PCIe, else 256."""
    size = CONFIG_SIZE_PCIE if dev.pcie else CONFIG_SIZE_PCI
    cfg = bytearray(size)
    command = 0x0006 if enabled else 0x0000  # memory space + bus master
    status = 0x0010 if dev.pcie else 0x0000  # capabilities list
    header_type = (1 if dev.is_bridge else 0) | (0x80 if multifunction else 0)
    struct.pack_into("<HHHH", cfg, 0x00, dev.vendor, dev.device, command, status)
    struct.pack_into("<I", cfg, 0x08, dev.revision | dev.class_code << 8)
    cfg[0x0E] = header_type
    if dev.is_bridge:
        if buses is not None:
            cfg[0x18:0x1B] = bytes(buses)
    else:
        for index, (bar, start) in bars.items():
            _pack_bar(cfg, index, bar, start)
        struct.pack_into("<HH", cfg, 0x2C, dev.subsystem_vendor, dev.subsystem_device)
    cfg[0x3C] = irq & 0xFF
    cfg[0x3D] = 1 if irq else 0  # INTA#
    if dev.pcie:
        cfg[0x34] = 0x40
        # Capability ID 0x10 (PCI Express), no next capability, version 2 and the port type.
        struct.pack_into("<BBH", cfg, 0x40, 0x10, 0x00, 0x0002 | port_type << 4)
    return bytes(cfg)


def _pack_bar(cfg: bytearray, index: int, bar: BarSpec, start: int) -> None:
    offset = 0x10 + 4 * index
    if bar.is_io:
        struct.pack_into("<I", cfg, offset, (start & 0xFFFFFFFC) | PCI_BASE_ADDRESS_SPACE_IO)
        return
    low = start & 0xFFFFFFF0
    if bar.is_64bit:
        low |= PCI_BASE_ADDRESS_MEM_TYPE_64
    if bar.prefetchable:
        low |= PCI_BASE_ADDRESS_MEM_PREFETCH
    struct.pack_into("<I", cfg, offset, low)
    if bar.is_64bit:
        struct.pack_into("<I", cfg, offset + 4, start >> 32)


def place_bars(bars: tuple[BarSpec, ...], slot: int) -> dict[int, tuple[BarSpec, int]]:
    """Gives every BAR a start address (its own when set), deterministic in ``slot`` (the
    function's ordinal): 64-bit BARs in a 256 GiB window per function above 32 TiB, 32-bit
    ones below 4 GiB, I/O ports from 0x1000."""
    placed: dict[int, tuple[BarSpec, int]] = {}
    high = 0x2000_0000_0000 + slot * 0x40_0000_0000
    low = 0x8000_0000 + (slot * 0x10_0000) % 0x7000_0000
    io = 0x1000 + (slot * 0x100) % 0xE000
    for bar in sorted(bars, key=lambda b: b.index):
        if bar.start is not None:
            placed[bar.index] = (bar, bar.start)
            continue
        if bar.is_io:
            start, io = _align(io, bar.size), _align(io, bar.size) + bar.size
        elif bar.is_64bit:
            start, high = _align(high, bar.size), _align(high, bar.size) + bar.size
        else:
            start, low = _align(low, bar.size), _align(low, bar.size) + bar.size
        placed[bar.index] = (bar, start)
    return placed


def _align(value: int, size: int) -> int:
    return (value + size - 1) // size * size


def cpulist(first: int, count: int) -> str:
    """``local_cpulist``: ``0-31``."""
    return f"{first}-{first + count - 1}\n" if count > 1 else f"{first}\n"


def acpi_table(signature: str, body: bytes = b"") -> bytes:
    """A minimal ACPI table: the 36-byte standard header (valid checksum) and a body."""
    length = 36 + len(body)
    header = struct.pack(
        "<4sIBB6s8sI4sI",
        signature.encode("ascii"),
        length,
        1,
        0,
        b"KATAVF",
        b"FAKEHOST",
        1,
        b"KVFT",
        1,
    )
    table = bytearray(header + body)
    table[9] = (-sum(table)) & 0xFF
    return bytes(table)
