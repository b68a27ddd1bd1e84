"""Hot-plug and unplug of whole IOMMU groups in a running QEMU: the backend side of the
neutral :class:`~kata_vfio.vm.hotplug.HotplugGroup`.

:func:`group_request` renders a group as the QMP request (``vfio-pci`` devices with
``host=`` and, for cdevs, ``iommufd=``); :func:`hotplug_group` plugs it (each device into its
own free port, function 0 last, the iommufd object first) and :func:`unplug_group` takes it
out again (``device_del``, wait for ``DEVICE_DELETED``, then ``object-del``).

:func:`plug_group` is the hot-plug for a QEMU that may run unprivileged: a cdev group's
``/dev/iommu`` and cdevs are opened here and handed to QEMU over QMP (``getfd``), and the
devices and the iommufd object name those fds instead of host addresses. A legacy group is
always opened by QEMU itself (QEMU takes no fd for a group).
"""

from __future__ import annotations

from collections.abc import Sequence

from kata_vfio._core import HostPaths
from kata_vfio._echo import echo
from kata_vfio.errors import PlanError
from kata_vfio.qemu.fds import QemuFds, open_for_qemu
from kata_vfio.qemu.qmp import (
    HotplugFunction,
    HotplugRequest,
    HotplugResult,
    QmpSession,
    hotplug,
    unplug,
)
from kata_vfio.vm.hotplug import HotplugGroup

__all__ = ["group_request", "hotplug_group", "plug_group", "unplug_group"]


def group_request(group: HotplugGroup, *, fds: QemuFds | None = None) -> HotplugRequest:
    """The QMP request that plugs ``group``: one ``vfio-pci`` per function. With ``fds``
    (opened for the group's cdevs, object id ``group.iommufd``), QEMU gets them by name:
    ``fd=`` instead of ``host=``, and the iommufd object made from the passed one."""
    link: tuple[tuple[str, str], ...] = (("iommufd", group.iommufd),) if group.iommufd else ()
    names: dict[str, str] = {}
    handed: list[tuple[str, int]] = []
    if fds is not None:
        if fds.object_id != group.iommufd:
            raise PlanError(
                f"fds opened for iommufd object {echo(fds.object_id)}, the group uses "
                f"{echo(group.iommufd)}",
                hint="open them with object_id=group.iommufd",
            )
        handed.append((f"{group.iommufd}-fd", fds.iommufd_fd))
        for device in fds.devices:
            names[device.bdf] = f"{group.iommufd}-{len(names)}"
            handed.append((names[device.bdf], device.fd))

    def target(host: str) -> tuple[str, str]:
        return ("fd", names[host]) if host in names else ("host", host)

    return HotplugRequest(
        slots=tuple(
            tuple(
                HotplugFunction(
                    qemu_id=function.device_id,
                    guest_function=function.guest_function,
                    props=(target(str(function.host)), *link),
                )
                for function in slot
            )
            for slot in group.slots
        ),
        iommufd=group.iommufd,
        fds=tuple(handed),
        iommufd_fd=f"{group.iommufd}-fd" if fds is not None else None,
    )


def hotplug_group(
    session: QmpSession,
    group: HotplugGroup,
    *,
    ports: Sequence[str] | None = None,
    fds: QemuFds | None = None,
) -> HotplugResult:
    """Plugs ``group`` into free ports: the first free of ``ports``, else of the ports its
    plan reserved (``group.ports``), else of every port QEMU has, in numeric order. All or
    nothing (see :func:`kata_vfio.qemu.qmp.hotplug`). ``fds``: see :func:`group_request`."""
    if ports is None and group.ports:
        ports = group.ports
    return hotplug(session, group_request(group, fds=fds), ports=ports)


def plug_group(
    session: QmpSession,
    group: HotplugGroup,
    *,
    paths: HostPaths | None = None,
    ports: Sequence[str] | None = None,
) -> HotplugResult:
    """:func:`hotplug_group` with a cdev group's fds opened here (on the host at ``paths``)
    and handed to QEMU, which never opens a VFIO node itself; this process's copies are
    closed afterwards. A legacy group is plugged by address."""
    if group.iommufd is None:
        return hotplug_group(session, group, ports=ports)
    bdfs = [function.host for slot in group.slots for function in slot]
    with open_for_qemu(bdfs, paths=paths, object_id=group.iommufd) as fds:
        return hotplug_group(session, group, ports=ports, fds=fds)


def unplug_group(session: QmpSession, group: HotplugGroup, *, timeout: float = 10.0) -> None:
    """Unplugs every device of ``group``, waits until the guest released them, then deletes
    the group's iommufd object. Raises :class:`~kata_vfio.errors.QmpError` on timeout,
    leaving the object in place (still in use)."""
    unplug(session, group.device_ids, iommufd=group.iommufd, timeout=timeout)
