"""What a guest IOMMU allows to be passed through: one address space per IOMMU group.

A virtual IOMMU gives every guest PCIe function its own DMA address space (its own requester
ID), while the host kernel attaches a whole IOMMU group to one domain. A group of several
functions would need two guest address spaces for one host domain, which QEMU refuses at
start ("used in multiple address spaces" with legacy VFIO, an attach error with iommufd). The
plan refuses it first, naming the group, instead of letting the VM fail to start.
"""

from __future__ import annotations

from collections.abc import Sequence

from kata_vfio.errors import PlanError
from kata_vfio.vm.devices import PassthroughGroup

__all__ = ["refuse_shared_groups_behind_viommu"]


def refuse_shared_groups_behind_viommu(groups: Sequence[PassthroughGroup]) -> None:
    """Raises :class:`PlanError` when a group with more than one function would be passed to
    a guest with a virtual IOMMU."""
    shared = [g for g in groups if len(g.functions) > 1]
    if not shared:
        return
    described = "; ".join(
        f"group {g.group} ({', '.join(str(f.bdf) for f in g.functions)})" for g in shared
    )
    raise PlanError(
        f"{described} cannot be passed to a guest with a virtual IOMMU: the guest IOMMU gives "
        "each function its own address space, and the host attaches a group to one",
        hint="set enable_iommu = false and vfio_mode = 'guest-kernel' for this sandbox, or "
        "pass only groups of one function (see `kata-vfio check` for the group's members)",
    )
