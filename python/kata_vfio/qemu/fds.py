"""Fd passing for an unprivileged QEMU: ``/dev/iommu`` and each device's vfio cdev are opened
here (as root) and inherited by QEMU, which gets ``-object iommufd,fd=N`` and
``-device vfio-pci,...,fd=M`` and never opens a VFIO node itself.

Example (as root, devices bound to vfio-pci on a kernel with vfio cdevs)::

    from kata_vfio.qemu.fds import open_for_qemu

    with open_for_qemu(["0000:81:00.0"]) as fds:        # /dev/iommu + cdevs opened here
        argv = [*qemu_argv, *fds.qemu_args()]            # -object iommufd,fd=N -device ...,fd=M
        subprocess.run(argv, pass_fds=fds.pass_fds)      # QEMU itself runs unprivileged
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from kata_vfio._core import Bdf, Host, HostPaths, IommuFd, VfioDevice, scan
from kata_vfio.errors import DeviceNotFoundError
from kata_vfio.qemu.argv import QemuCommand, QemuOpts, validate_id
from kata_vfio.vfio import passable_cdev

__all__ = [
    "PassedCommand",
    "PassedDevice",
    "QemuFds",
    "open_for_qemu",
    "pass_cdevs",
    "with_passed_fds",
]


@dataclass(frozen=True)
class PassedDevice:
    """A device cdev opened for QEMU."""

    bdf: str
    fd: int
    qemu_id: str


@dataclass
class QemuFds:
    """Fds for an unprivileged QEMU: ``/dev/iommu`` and each device's cdev, opened by this
    (privileged) process. Pass :attr:`pass_fds` to ``subprocess.Popen`` (or hand them over
    a unix socket with :meth:`send`) and add :meth:`qemu_args` to the command line; QEMU
    then binds the cdevs to the iommufd itself. Closes its fds on :meth:`close`; a context
    manager."""

    iommufd_fd: int
    devices: tuple[PassedDevice, ...]
    object_id: str = "iommufd0"
    _closed: bool = field(default=False, repr=False)

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """Every fd QEMU must inherit."""
        return (self.iommufd_fd, *(d.fd for d in self.devices))

    def object_args(self) -> list[str]:
        """``-object iommufd,id=<id>,fd=<n>``."""
        return ["-object", f"iommufd,id={self.object_id},fd={self.iommufd_fd}"]

    def device_props(self, bdf: Bdf | str) -> str:
        """The ``-device`` value for one device: ``vfio-pci,id=..,iommufd=..,fd=..``."""
        wanted = str(bdf if isinstance(bdf, Bdf) else Bdf(bdf))
        for dev in self.devices:
            if dev.bdf == wanted:
                return f"vfio-pci,id={dev.qemu_id},iommufd={self.object_id},fd={dev.fd}"
        raise DeviceNotFoundError(f"{wanted} was not opened for QEMU")

    def qemu_args(self) -> list[str]:
        """The ``-object`` and every ``-device`` argument, in device order."""
        args = self.object_args()
        for dev in self.devices:
            args += ["-device", self.device_props(dev.bdf)]
        return args

    def send(self, sock: socket.socket) -> None:
        """Hands every fd to the peer of a unix socket (SCM_RIGHTS), iommufd first."""
        socket.send_fds(sock, [b"kata-vfio"], list(self.pass_fds))

    def close(self) -> None:
        """Closes this process's copies of the fds (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for fd in self.pass_fds:
            # The caller may have closed some already.
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> QemuFds:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_for_qemu(
    bdfs: Iterable[Bdf | str] | Bdf | str,
    *,
    paths: HostPaths | None = None,
    object_id: str = "iommufd0",
    id_prefix: str = "hostdev",
    host: Host | None = None,
) -> QemuFds:
    """Opens ``/dev/iommu`` and each device's cdev for an unprivileged QEMU (see
    :class:`QemuFds`). Every device must be on a vfio driver with a cdev, in a viable group.
    ``paths`` default to ``host``'s, else this machine's.

    :raises kata_vfio.errors.NotAssignableError: a device has no cdev or its group is not
        viable (the hint names the blockers).
    :raises kata_vfio.errors.InvalidInputError: an id QEMU would refuse.
    """
    validate_id(object_id, "iommufd object id")
    validate_id(id_prefix, "device id prefix")
    wanted: Sequence[Bdf | str] = [bdfs] if isinstance(bdfs, (str, Bdf)) else list(bdfs)
    host = host or scan(paths or HostPaths())
    devfs = (paths or host.paths).devfs
    targets = sorted(passable_cdev(host, bdf) for bdf in wanted)
    fds: list[int] = []
    try:
        with IommuFd.open(devfs) as iommufd:
            fds.append(os.dup(iommufd.fileno()))
        devices = []
        for index, (bdf, cdev) in enumerate(targets):
            fd = VfioDevice.open_cdev(cdev, devfs).detach_fd()
            fds.append(fd)
            devices.append(PassedDevice(str(bdf), fd, f"{id_prefix}{index}"))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return QemuFds(fds[0], tuple(devices), object_id)


def with_passed_fds(command: QemuCommand, fds: QemuFds) -> QemuCommand:
    """``command`` with QEMU given ``fds`` instead of paths: the iommufd object
    ``fds.object_id`` gets ``fd=``, and each ``vfio-pci`` of a passed function gets ``fd=`` in
    place of ``host=`` (QEMU must not look the device up by address: unprivileged, it cannot
    open it)."""
    by_bdf = {device.bdf: device for device in fds.devices}

    def change(opts: QemuOpts) -> QemuOpts:
        if opts.head == "iommufd" and opts.id == fds.object_id:
            return opts.with_props(("fd", fds.iommufd_fd))
        if opts.head == "vfio-pci" and opts.get("iommufd") == fds.object_id:
            passed = by_bdf.get(opts.get("host") or "")
            if passed is not None:
                return opts.with_props(("host", None), ("fd", passed.fd))
        return opts

    return command.map_opts("-object", change).map_opts("-device", change)


@dataclass
class PassedCommand:
    """A command line whose cdev devices and iommufd objects are fds opened here (see
    :func:`pass_cdevs`); :attr:`pass_fds` must reach QEMU. Closes the fds on :meth:`close`
    (QEMU keeps its own copies); a context manager."""

    command: QemuCommand
    fds: tuple[QemuFds, ...] = ()

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """Every fd QEMU must inherit."""
        return tuple(fd for passed in self.fds for fd in passed.pass_fds)

    def close(self) -> None:
        """Closes this process's copies of the fds (idempotent)."""
        for passed in self.fds:
            passed.close()

    def __enter__(self) -> PassedCommand:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def pass_cdevs(
    command: QemuCommand,
    *,
    paths: HostPaths | None = None,
    host: Host | None = None,
) -> PassedCommand:
    """Opens ``/dev/iommu`` and the cdev of every ``vfio-pci`` of ``command`` that has an
    ``iommufd`` backend (one ``/dev/iommu`` per iommufd object) and rewrites the command to
    pass them (:func:`with_passed_fds`). Legacy-group devices (``host=`` without
    ``iommufd=``) are left to QEMU: QEMU takes no fd for a group.

    :raises kata_vfio.errors.NotAssignableError: a device has no cdev or its group is not
        viable; nothing stays open then.
    """
    wanted: dict[str, list[str]] = {}
    for opts in command.opts("-device"):
        backend, address = opts.get("iommufd"), opts.get("host")
        if opts.head == "vfio-pci" and backend is not None and address is not None:
            wanted.setdefault(backend, []).append(address)
    if not wanted:
        return PassedCommand(command)
    host = host or scan(paths or HostPaths())
    opened: list[QemuFds] = []
    try:
        for object_id, bdfs in sorted(wanted.items()):
            fds = open_for_qemu(bdfs, paths=paths, object_id=object_id, host=host)
            opened.append(fds)
            command = with_passed_fds(command, fds)
    except BaseException:
        for fds in opened:
            fds.close()
        raise
    return PassedCommand(command, tuple(opened))
