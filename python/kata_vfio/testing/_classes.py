"""What a PCI class code says about a function's role in an IOMMU group."""

from __future__ import annotations

PCI_BRIDGE = 0x0604
HOST_BRIDGE = 0x0600


class ClassRoles:
    """Mixin for records with a 24-bit ``class_code``."""

    class_code: int

    @property
    def is_bridge(self) -> bool:
        """Class 0x0604xx: a PCI-to-PCI bridge, PCIe root or switch port."""
        return self.class_code >> 8 == PCI_BRIDGE

    @property
    def is_host_bridge(self) -> bool:
        """Class 0x0600xx."""
        return self.class_code >> 8 == HOST_BRIDGE

    @property
    def is_endpoint(self) -> bool:
        """Neither kind of bridge (NVSwitch-like 0x0680 counts as an endpoint)."""
        return not self.is_bridge and not self.is_host_bridge
