"""Hot-plug and unplug of whole IOMMU groups in a running QEMU: the backend side of the
neutral :class:`~kata_vfio.vm.hotplug.HotplugGroup`.

:func:`group_request` renders a group as the QMP request (``vfio-pci`` devices with
``host=`` and, for cdevs, ``iommufd=``); :func:`hotplug_group` plugs it (each device into its
own free port, function 0 last, the iommufd object first) and :func:`unplug_group` takes it
out again (``device_del``, wait for ``DEVICE_DELETED``, then ``object-del``).
"""

from __future__ import annotations

from collections.abc import Sequence

from kata_vfio.qemu.qmp import (
    HotplugFunction,
    HotplugRequest,
    HotplugResult,
    QmpSession,
    hotplug,
    unplug,
)
from kata_vfio.vm.hotplug import HotplugGroup

__all__ = ["group_request", "hotplug_group", "unplug_group"]


def group_request(group: HotplugGroup) -> HotplugRequest:
    """The QMP request that plugs ``group``: one ``vfio-pci`` per function."""
    link: tuple[tuple[str, str], ...] = (("iommufd", group.iommufd),) if group.iommufd else ()
    return HotplugRequest(
        slots=tuple(
            tuple(
                HotplugFunction(
                    qemu_id=function.device_id,
                    guest_function=function.guest_function,
                    props=(("host", str(function.host)), *link),
                )
                for function in slot
            )
            for slot in group.slots
        ),
        iommufd=group.iommufd,
    )


def hotplug_group(
    session: QmpSession, group: HotplugGroup, *, ports: Sequence[str] | None = None
) -> HotplugResult:
    """Plugs ``group`` into free ports: the first free of ``ports``, else of the ports its
    plan reserved (``group.ports``), else of every port QEMU has, in numeric order. All or
    nothing (see :func:`kata_vfio.qemu.qmp.hotplug`)."""
    if ports is None and group.ports:
        ports = group.ports
    return hotplug(session, group_request(group), ports=ports)


def unplug_group(session: QmpSession, group: HotplugGroup, *, timeout: float = 10.0) -> None:
    """Unplugs every device of ``group``, waits until the guest released them, then deletes
    the group's iommufd object. Raises :class:`~kata_vfio.errors.QmpError` on timeout,
    leaving the object in place (still in use)."""
    unplug(session, group.device_ids, iommufd=group.iommufd, timeout=timeout)
