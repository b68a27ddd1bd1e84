"""The device descriptors the Kata agent receives with CreateContainer, one per VFIO node.

``type`` is ``vfio-pci`` (``vfio_mode = "vfio"``: the agent rebinds the functions to vfio-pci
in the guest and gives the container ``/dev/vfio/<guest group>``) or ``vfio-pci-gk``
(``guest-kernel``: the guest driver keeps the device). ``options`` map each host function to
its guest PCI path, ``DDDD:BB:DD.F=<slot>/<slot>``, the form the agent's
``split_vfio_pci_option`` accepts (exactly one ``=``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kata_vfio.vm.placement import PlannedFunction

__all__ = ["AGENT_TYPES", "AgentDevice", "agent_device"]

AGENT_TYPES = {"vfio": "vfio-pci", "guest-kernel": "vfio-pci-gk"}


@dataclass(frozen=True)
class AgentDevice:
    """One ``grpc.Device`` for the agent."""

    type: str
    id: str
    container_path: str
    options: tuple[str, ...]
    vm_path: str = ""

    def to_document(self) -> dict[str, Any]:
        """JSON-ready form (the agent protocol's field names)."""
        return {
            "type": self.type,
            "id": self.id,
            "container_path": self.container_path,
            "options": list(self.options),
            "vm_path": self.vm_path,
        }


def agent_device(
    *, vfio_mode: str, number: int, container_path: str, functions: Sequence[PlannedFunction]
) -> AgentDevice:
    """The descriptor of one container VFIO node (``number`` is its group or cdev number)
    covering ``functions``, listed in guest PCI order."""
    ordered = sorted(functions, key=lambda f: f.guest_order)
    return AgentDevice(
        type=AGENT_TYPES[vfio_mode],
        id=f"vfio{number}",
        container_path=container_path,
        options=tuple(f"{f.bdf}={f.guest_pci_path}" for f in ordered),
    )
