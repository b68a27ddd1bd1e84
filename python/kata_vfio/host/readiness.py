"""Can a device be passed through now, and if not, why and what to run.

A pure function over a scan: no I/O. A device is ready when it is an endpoint, it has an
IOMMU group, and the group is assignable (viable, every endpoint on a vfio driver). The
devices that must be passed together are the group's endpoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kata_vfio._core import Bdf, Blocker, Host

__all__ = ["DeviceReadiness", "check_devices"]


@dataclass(frozen=True)
class DeviceReadiness:
    """The verdict for one requested device."""

    bdf: Bdf
    present: bool
    group: int | None
    assignable: bool
    blockers: tuple[Blocker, ...]
    together: tuple[Bdf, ...]
    """Endpoints that must be passed through with it (its group's endpoints)."""
    node: str | None
    """The VFIO node that passes the group (``/dev/vfio/<group>``), when there is a group."""
    hint: str


def check_devices(host: Host, bdfs: Iterable[Bdf | str]) -> tuple[DeviceReadiness, ...]:
    """The verdict for each address, in the order given (addresses parse strictly)."""
    return tuple(_check_one(host, bdf if isinstance(bdf, Bdf) else Bdf(bdf)) for bdf in bdfs)


def _check_one(host: Host, bdf: Bdf) -> DeviceReadiness:
    device = host.find_device(bdf)
    if device is None:
        return DeviceReadiness(
            bdf, False, None, False, (), (), None,
            f"no PCI device {bdf} on this host: run `kata-vfio scan` to list the devices",
        )  # fmt: skip
    if not device.is_endpoint:
        role = "host bridge" if device.is_host_bridge else "PCI bridge or port"
        return DeviceReadiness(
            bdf, True, device.iommu_group, False, (), (), None,
            f"{bdf} is a {role}: bridges are never passed through; pass the endpoints "
            "behind it",
        )  # fmt: skip
    group = host.group_of(bdf)
    if group is None:
        reason = "; ".join(host.iommu.reasons[:1]) or "the IOMMU is off"
        return DeviceReadiness(
            bdf, True, None, False, (), (), None,
            f"{bdf} has no IOMMU group ({reason}): run `kata-vfio doctor`",
        )  # fmt: skip
    node = host.group_node(bdf)
    together = group.endpoints
    if group.assignable:
        others = [str(b) for b in together if b != bdf]
        with_text = f" together with {', '.join(others)}" if others else ""
        hint = f"ready: pass {node}{with_text}"
    else:
        first = group.blockers[0] if group.blockers else None
        hint = (
            f"group {group.id} is not ready: {first.bdf} {first.reason}; fix: {first.fix}"
            if first is not None
            else f"group {group.id} has no endpoints to pass"
        )
    return DeviceReadiness(
        bdf, True, group.id, group.assignable, group.blockers, together, node, hint
    )
