"""Can a device be passed through now, and if not, why and what to run.

A pure function over a scan: no I/O. A device is ready when it is an endpoint, it has an
IOMMU group, and the group is assignable (viable, every endpoint on a vfio driver). The
devices that must be passed together are the group's endpoints. A device or group member the
scan could not read makes the answer "unknown", never "ready". The wording of the hints is
:mod:`kata_vfio.host.render`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kata_vfio._core import Bdf, Blocker, Host, ReadProblem
from kata_vfio.host import render

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
    state: str = "ready"
    """``ready``, ``blocked`` (its group is not assignable), ``unknown`` (it or a group member
    cannot be read), ``bridge``, ``no-group`` or ``absent``."""
    problem: ReadProblem | None = None
    """What could not be read about the device itself."""


def check_devices(host: Host, bdfs: Iterable[Bdf | str]) -> tuple[DeviceReadiness, ...]:
    """The verdict for each address, in the order given (addresses parse strictly)."""
    return tuple(_check_one(host, bdf if isinstance(bdf, Bdf) else Bdf(bdf)) for bdf in bdfs)


def _check_one(host: Host, bdf: Bdf) -> DeviceReadiness:
    device = host.find_device(bdf)
    if device is None:
        problem = next((p for p in host.unreadable if p.bdf == bdf), None)
        if problem is not None:
            return DeviceReadiness(
                bdf, True, None, False, (), (), None,
                render.device_unreadable_hint(problem), "unknown", problem,
            )  # fmt: skip
        return DeviceReadiness(
            bdf, False, None, False, (), (), None, render.absent_hint(bdf), "absent"
        )
    if not device.is_endpoint:
        return DeviceReadiness(
            bdf, True, device.iommu_group, False, (), (), None,
            render.bridge_hint(device), "bridge",
        )  # fmt: skip
    group = host.group_of(bdf)
    if group is None:
        problem = next((p for p in device.problems if p.attribute == "iommu_group"), None)
        return DeviceReadiness(
            bdf, True, None, False, (), (), None,
            render.no_group_hint(device, problem, host.iommu), "unknown" if problem else
            "no-group", problem,
        )  # fmt: skip
    node = host.group_node(bdf)
    state = "ready" if group.assignable else "unknown" if group.verdict == "unknown" else "blocked"
    return DeviceReadiness(
        bdf,
        True,
        group.id,
        group.assignable,
        group.blockers,
        group.endpoints,
        node,
        render.group_hint(bdf, group, node),
        state,
    )
