"""Which guest CDI kind a PCI function is, from its vendor and class code.

Inside the guest, vendor tooling (``nvidia-ctk cdi generate`` and friends) writes a CDI spec
whose device names are indices in PCI order; the runtime points containers at those devices
with ``cdi.k8s.io/vfio<N>: <kind>=<index>``. Functions without a kind (audio companions,
NVSwitches, NVMe) get no inner annotation.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KIND_RULES", "KindRule", "cdi_kind"]

# PCI base classes and subclasses (PCI Code and ID Assignment Specification).
_DISPLAY = 0x03  # 0x0300 VGA, 0x0302 3D controller, 0x0380 other display
_NETWORK = 0x02  # 0x0200 Ethernet, 0x0207 InfiniBand
_ACCELERATOR = 0x12  # 0x1200 processing accelerator (AMD Instinct MI300 and later)


@dataclass(frozen=True)
class KindRule:
    """Functions of ``vendor`` whose class base (and subclass, when given) match."""

    vendor: int
    base_class: int
    subclasses: frozenset[int] | None
    kind: str

    def matches(self, vendor: int, class_code: int) -> bool:
        """Whether a function with these IDs is of this kind."""
        base = (class_code >> 16) & 0xFF
        sub = (class_code >> 8) & 0xFF
        return (
            vendor == self.vendor
            and base == self.base_class
            and (self.subclasses is None or sub in self.subclasses)
        )


KIND_RULES: tuple[KindRule, ...] = (
    KindRule(0x10DE, _DISPLAY, None, "nvidia.com/gpu"),
    KindRule(0x1002, _DISPLAY, None, "amd.com/gpu"),
    KindRule(0x1002, _ACCELERATOR, frozenset({0x00}), "amd.com/gpu"),
    KindRule(0x8086, _DISPLAY, None, "intel.com/gpu"),
    # Mellanox (now NVIDIA networking) ConnectX / BlueField: Ethernet and InfiniBand.
    KindRule(0x15B3, _NETWORK, frozenset({0x00, 0x07}), "nvidia.com/nic"),
)


def cdi_kind(vendor: int, class_code: int) -> str | None:
    """The guest CDI kind of a function, or None when it has none."""
    for rule in KIND_RULES:
        if rule.matches(vendor, class_code):
            return rule.kind
    return None
