"""The emulated PCI topology of the lab guest, and the IOMMU groups it gives.

Each shape that matters to group handling appears once: a device alone behind a root port, a
device behind a PCIe switch, a two-function device (functions without ACS share a group), two
conventional devices behind a PCIe-to-PCI bridge (one group, bridge included), a spare root
port for hot-plug, and a device on NUMA node 1 behind a ``pxb-pcie`` expander (the guest has
two NUMA nodes, see vm.py). Bus numbers follow from the root ports' slot order and the
expander's ``bus_nr``, so the addresses below are stable across kernels; group *numbers* are
the kernel's business and are not assumed.
"""

from __future__ import annotations

import dataclasses

E1000E = (0x8086, 0x10D3)
E1000 = (0x8086, 0x100E)


@dataclasses.dataclass(frozen=True)
class Device:
    """One ``-device`` of the lab VM."""

    driver: str
    id: str
    bus: str
    props: tuple[tuple[str, str], ...] = ()

    def option(self) -> str:
        """The ``-device`` argument."""
        fields = [self.driver, f"id={self.id}", f"bus={self.bus}"]
        fields += [f"{key}={value}" for key, value in self.props]
        return ",".join(fields)


def _root_port(number: int, slot: int, bus: str = "pcie.0") -> Device:
    return Device(
        "pcie-root-port",
        f"rp{number}",
        bus,
        (("chassis", str(number)), ("slot", str(number)), ("addr", f"{slot:#x}")),
    )


# The guest's NUMA nodes, and the one the expander's devices belong to (its ACPI _PXM).
NUMA_NODES = 2
NUMA_EXPANDER_NODE = 1
# The expander's root bus number: far above what the root bus's bridges take.
NUMA_EXPANDER_BUS = 0x80


# The single NIC's own MAC (not QEMU's default, which a nested guest's emulated NIC would also
# get), so a nested guest reading it proves it reads the passed-through device.
NIC_SINGLE_MAC = "52:54:00:6b:76:01"

# romfile= keeps SeaBIOS from loading an iPXE ROM per NIC (slow, noisy, useless here).
DEVICES: tuple[Device, ...] = (
    _root_port(1, 0x10),
    Device(
        "e1000e", "nic_single", "rp1", (("addr", "0.0"), ("romfile", ""), ("mac", NIC_SINGLE_MAC))
    ),
    _root_port(2, 0x11),
    Device("x3130-upstream", "sw_up", "rp2"),
    Device("xio3130-downstream", "sw_down", "sw_up", (("chassis", "7"), ("slot", "0"))),
    Device("e1000e", "nic_switch", "sw_down", (("addr", "0.0"), ("romfile", ""))),
    _root_port(3, 0x12),
    Device(
        "e1000e", "nic_multi0", "rp3", (("addr", "0.0"), ("multifunction", "on"), ("romfile", ""))
    ),
    Device("e1000e", "nic_multi1", "rp3", (("addr", "0.1"), ("romfile", ""))),
    _root_port(4, 0x13),
    Device("pcie-pci-bridge", "pci_bridge", "rp4"),
    Device("e1000", "nic_bridged1", "pci_bridge", (("addr", "1"), ("romfile", ""))),
    Device("e1000", "nic_bridged2", "pci_bridge", (("addr", "2"), ("romfile", ""))),
    _root_port(5, 0x14),  # spare: hot-plug target
    Device(
        "pxb-pcie",
        "pxb1",
        "pcie.0",
        (
            ("bus_nr", str(NUMA_EXPANDER_BUS)),
            ("numa_node", str(NUMA_EXPANDER_NODE)),
            ("addr", "0x15"),
        ),
    ),
    _root_port(6, 0x0, bus="pxb1"),
    Device("e1000e", "nic_numa", "rp6", (("addr", "0.0"), ("romfile", ""))),
)

# The NICs, by role, at the addresses the guest kernel gives them.
NIC_SINGLE = "0000:01:00.0"
NIC_SWITCH = "0000:04:00.0"
NIC_MULTI = ("0000:05:00.0", "0000:05:00.1")
NIC_BRIDGED = ("0000:07:01.0", "0000:07:02.0")
SWITCH_UPSTREAM = "0000:02:00.0"
SWITCH_DOWNSTREAM = "0000:03:00.0"
PCI_BRIDGE = "0000:06:00.0"
SPARE_PORT = "0000:00:14.0"
# Behind the expander: its root port on the expander's bus, the NIC on the bus below.
NIC_NUMA = f"0000:{NUMA_EXPANDER_BUS + 1:02x}:00.0"

# Group shapes the kernel must build, named by what they test (members in PCI order).
EXPECTED_GROUPS: dict[str, tuple[str, ...]] = {
    "single": (NIC_SINGLE,),
    "switch_upstream": (SWITCH_UPSTREAM,),
    "switch": (SWITCH_DOWNSTREAM, NIC_SWITCH),
    "multifunction": NIC_MULTI,
    "bridge": (PCI_BRIDGE, *NIC_BRIDGED),
    "numa": (NIC_NUMA,),
    "ich9": ("0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"),
}

# Endpoints of each shape (bridges and ports are never passed through).
EXPECTED_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "single": (NIC_SINGLE,),
    "switch": (NIC_SWITCH,),
    "multifunction": NIC_MULTI,
    "bridge": NIC_BRIDGED,
    "numa": (NIC_NUMA,),
}

# The emulated e1000e's VFIO regions (index -> size), as QEMU builds the device: BAR0 and
# BAR1 128 KiB memory, BAR2 32 bytes of I/O ports, BAR3 the 16 KiB MSI-X table, config 4 KiB.
E1000E_REGION_SIZES: dict[int, int] = {0: 0x20000, 1: 0x20000, 2: 0x20, 3: 0x4000, 7: 0x1000}
