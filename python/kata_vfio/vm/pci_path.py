"""Guest PCI paths: where a device sits in the guest, as the device numbers from its root bus
down, the way the Kata agent (and runtime-rs's ``PciPath``) reads them.

``02/00`` is function 0 of the device in slot 0 behind the port in slot 2 of the root bus;
a function other than 0 is written ``SS.F`` on the last element (``02/00.1``), else a reader
would find function 0; a device behind a ``pxb-pcie`` style extra root complex starts with
that root bus's number (``20/00/00``: a first element of 0x20 or more names the root complex).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ROOT_BUS", "PciPath", "format_pci_path"]

# The name of the guest's first root bus (q35's and runtime-rs's default).
ROOT_BUS = "pcie.0"


def format_pci_path(root_bus_nr: int, slots: Sequence[int], function: int) -> str:
    """The path text: device numbers in hex from the root bus down, the function on the last
    element when it is not 0, an extra root bus's number first (see the module docstring)."""
    parts = [f"{slot:02x}" for slot in slots]
    if function:
        parts[-1] += f".{function:x}"
    if root_bus_nr:
        parts.insert(0, f"{root_bus_nr:02x}")
    return "/".join(parts)


@dataclass(frozen=True)
class PciPath:
    """Where a device is in the guest: its root bus (``pcie.0`` or an extra root complex, and
    that bus's number), the device numbers from the root bus down, and its function."""

    root: str
    slots: tuple[int, ...]
    function: int
    root_bus_nr: int = 0

    def __str__(self) -> str:
        """The path as the Kata agent reads it (``02/00``, ``02/00.1``, ``20/00/00``)."""
        return format_pci_path(self.root_bus_nr, self.slots, self.function)
