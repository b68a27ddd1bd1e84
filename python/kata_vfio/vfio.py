"""Open VFIO devices the way QEMU does: check that it works, read what the device offers,
and open the fds an unprivileged QEMU needs.

Two access models, both through the Rust core's handles (:class:`~kata_vfio._core.
VfioContainer`, :class:`~kata_vfio._core.VfioGroup`, :class:`~kata_vfio._core.VfioDevice`,
:class:`~kata_vfio._core.IommuFd`):

- **legacy** (every kernel): ``/dev/vfio/vfio`` container + ``/dev/vfio/<group>``, type1v2
  IOMMU, then ``VFIO_GROUP_GET_DEVICE_FD``. :func:`open_legacy` returns a
  :class:`LegacyDevice` that closes device, group and container in that order.
- **iommufd** (Linux 6.6+ with ``CONFIG_VFIO_DEVICE_CDEV``): ``/dev/iommu`` + the device cdev
  ``/dev/vfio/devices/vfioN``, bound and attached to a fresh IOAS. :func:`open_iommufd`
  returns a :class:`CdevDevice`.

:func:`check_open` runs the same sequence as a preflight and reports each step, never
raising for what the kernel refuses: a "not viable" group names the devices that block it
and the command that fixes it. :func:`device_report` lists regions (BAR sizes) and IRQs.
:func:`passable_cdev` says whether a device can be handed to a VMM through iommufd
(:func:`kata_vfio.qemu.fds.open_for_qemu` opens the fds for an unprivileged QEMU).

Example (as root, device bound to vfio-pci)::

    from kata_vfio import vfio

    with vfio.open_legacy("0000:01:00.0") as dev:
        bar0 = dev.device.region_info(0)
        config = dev.device.region_info(7)
        vendor = dev.device.read_region(config, 0, 2)     # b"\\x86\\x80"
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

from kata_vfio._core import (
    Bdf,
    DeviceInfo,
    Host,
    HostPaths,
    HotResetDevice,
    IommuFd,
    IrqInfo,
    RegionInfo,
    VfioContainer,
    VfioDevice,
    VfioGroup,
    scan,
)
from kata_vfio.errors import (
    DeviceNotFoundError,
    InvalidInputError,
    KataVfioError,
    NotAssignableError,
    VfioError,
)
from kata_vfio.host import render

__all__ = [
    "CdevDevice",
    "DeviceReport",
    "LegacyDevice",
    "Mode",
    "OpenCheck",
    "OpenStep",
    "check_open",
    "device_report",
    "irq_name",
    "open_iommufd",
    "open_legacy",
    "passable_cdev",
    "region_name",
]

Mode = Literal["legacy", "iommufd"]

VFIO_TYPE1V2_IOMMU = 3
VFIO_NOIOMMU_IOMMU = 8
EPERM = 1
ENOENT = 2
ENODEV = 19

_REGION_NAMES = ("BAR0", "BAR1", "BAR2", "BAR3", "BAR4", "BAR5", "ROM", "CONFIG", "VGA")
_IRQ_NAMES = ("INTX", "MSI", "MSIX", "ERR", "REQ")


def region_name(index: int) -> str:
    """The vfio-pci name of a region index (``BAR0`` .. ``BAR5``, ``ROM``, ``CONFIG``,
    ``VGA``; ``region<N>`` for device-specific ones)."""
    return _REGION_NAMES[index] if 0 <= index < len(_REGION_NAMES) else f"region{index}"


def irq_name(index: int) -> str:
    """The vfio-pci name of an IRQ index (``INTX``, ``MSI``, ``MSIX``, ``ERR``, ``REQ``)."""
    return _IRQ_NAMES[index] if 0 <= index < len(_IRQ_NAMES) else f"irq{index}"


@dataclass(frozen=True)
class OpenStep:
    """One step of the open sequence and how it went."""

    step: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class OpenCheck:
    """The outcome of :func:`check_open` for one device."""

    bdf: str
    mode: Mode
    ok: bool
    steps: tuple[OpenStep, ...]
    error: str | None = None
    hint: str | None = None
    errno: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "bdf": self.bdf,
            "mode": self.mode,
            "ok": self.ok,
            "steps": [{"step": s.step, "ok": s.ok, "detail": s.detail} for s in self.steps],
            "error": self.error,
            "hint": self.hint,
            "errno": self.errno,
        }


class _Trace:
    """Records each step; a failing step is recorded with its error, then re-raised."""

    def __init__(self) -> None:
        self.steps: list[OpenStep] = []

    def ok(self, step: str, detail: str = "") -> None:
        self.steps.append(OpenStep(step, True, detail))

    def failed(self, step: str, exc: KataVfioError) -> None:
        self.steps.append(OpenStep(step, False, str(exc)))


@dataclass(frozen=True)
class _Target:
    """What the scan says about the device to open, and the devfs its nodes are in."""

    bdf: Bdf
    group: int | None
    noiommu: bool
    cdev: str | None
    host: Host
    devfs: str


def _target(bdf: Bdf | str, paths: HostPaths | None, host: Host | None) -> _Target:
    """``paths`` default to ``host``'s, else this machine's."""
    address = bdf if isinstance(bdf, Bdf) else Bdf(bdf)
    host = host or scan(paths or HostPaths())
    paths = paths or host.paths
    device = host.device(address)  # DeviceNotFoundError for an unknown address
    if not device.is_endpoint:
        raise InvalidInputError(
            f"{address} is a PCI bridge or port: bridges are never opened through VFIO",
            hint="name the endpoint behind it",
        )
    node = host.group_node(address)
    cdev = host.cdev_node(address)
    return _Target(
        address,
        device.iommu_group,
        node is not None and os.path.basename(node).startswith("noiommu-"),
        None if cdev is None else os.path.basename(cdev),
        host,
        paths.devfs,
    )


def _blocker_hint(target: _Target) -> str:
    """Names what keeps the device's group from being viable, and the fix."""
    group = None if target.group is None else target.host.find_group(target.group)
    if group is None or not group.blockers:
        listing = None if group is None else render.listing_text(group)
        detail = listing or "the scan saw no member that blocks it"
        return (
            f"IOMMU group {target.group} is not viable ({detail}): `kata-vfio groups` shows "
            "its members"
        )
    names = "; ".join(
        f"{b.bdf} ({b.driver or b.kind}): {render.blocker_reason(b)}" for b in group.blockers
    )
    fixes = " && ".join(dict.fromkeys(render.fix_text(b) for b in group.blockers))
    return f"IOMMU group {group.id} is not viable: {names}; fix: {fixes}"


def _not_viable(target: _Target, status_flags: int) -> NotAssignableError:
    return NotAssignableError(
        f"{target.bdf}: VFIO_GROUP_GET_STATUS flags={status_flags:#x}: group {target.group} "
        "is not viable",
        hint=_blocker_hint(target),
    )


_C = TypeVar("_C", bound="_Closing")


class _Closing:
    """A context manager that calls ``close()`` on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LegacyDevice(_Closing):
    """A device opened through the legacy model; closes device, group, container in order."""

    def __init__(
        self, bdf: Bdf, container: VfioContainer, group: VfioGroup, device: VfioDevice
    ) -> None:
        self.bdf = bdf
        self.container = container
        self.group = group
        self.device = device

    def close(self) -> None:
        """Closes the device fd, detaches the group, closes group and container (idempotent)."""
        self.device.close()
        if not self.group.closed:
            # Already detached, or the container went first: closing is enough then.
            with contextlib.suppress(VfioError):
                self.group.unset_container()
        self.group.close()
        self.container.close()


class CdevDevice(_Closing):
    """A device opened through its cdev and iommufd; closes device, IOAS, iommufd in order."""

    def __init__(
        self, bdf: Bdf, iommufd: IommuFd, ioas_id: int, devid: int, device: VfioDevice
    ) -> None:
        self.bdf = bdf
        self.iommufd = iommufd
        self.ioas_id = ioas_id
        self.devid = devid
        self.device = device

    def close(self) -> None:
        """Closes the device (which detaches and unbinds it), destroys the IOAS, closes the
        iommufd (idempotent)."""
        self.device.close()
        if not self.iommufd.closed:
            # Closing the iommufd frees the IOAS anyway.
            with contextlib.suppress(VfioError):
                self.iommufd.destroy(self.ioas_id)
        self.iommufd.close()


def _open_legacy(
    target: _Target,
    vf_token: str | None,
    allow_noiommu: bool,
    trace: _Trace,
) -> LegacyDevice:
    if target.group is None:
        raise NotAssignableError(
            f"{target.bdf} has no IOMMU group",
            hint="the IOMMU is off: run `kata-vfio doctor` for the boot argument to add",
        )
    if target.noiommu and not allow_noiommu:
        raise NotAssignableError(
            f"{target.bdf} is in no-IOMMU group {target.group}",
            hint="no-IOMMU mode gives the device DMA to all memory; allow it explicitly",
        )
    opened: list[VfioContainer | VfioGroup | VfioDevice] = []
    step = ""
    try:
        step = f"open group {target.group}"
        group = VfioGroup.open(target.group, target.devfs, target.noiommu)
        opened.append(group)
        trace.ok(step, group.path)
        step = "VFIO_GROUP_GET_STATUS"
        status = group.status()
        if not status.viable:
            raise _not_viable(target, status.flags)
        trace.ok(step, f"flags={status.flags:#x} viable")
        step = "open container"
        container = VfioContainer.open(target.devfs)
        opened.append(container)
        trace.ok(step, f"{container.path}, API version {container.api_version()}")
        step = "VFIO_GROUP_SET_CONTAINER"
        group.set_container(container)
        trace.ok(step)
        iommu_type = VFIO_NOIOMMU_IOMMU if target.noiommu else VFIO_TYPE1V2_IOMMU
        step = "VFIO_CHECK_EXTENSION"
        if not container.check_extension(iommu_type):
            raise VfioError(
                f"{container.path}: IOMMU type {iommu_type} is not supported",
                hint="load vfio_iommu_type1 (modprobe vfio_iommu_type1)",
                path=container.path,
            )
        trace.ok(step, "TYPE1v2" if iommu_type == VFIO_TYPE1V2_IOMMU else "NOIOMMU")
        step = "VFIO_SET_IOMMU"
        container.set_iommu(iommu_type, allow_noiommu=target.noiommu)
        trace.ok(step)
        step = "VFIO_GROUP_GET_DEVICE_FD"
        device = group.get_device(target.bdf, vf_token)
        opened.append(device)
        trace.ok(step, f"fd {device.fileno()}")
        step = "VFIO_DEVICE_GET_INFO"
        info = device.info()
        trace.ok(step, _info_text(info))
    except KataVfioError as exc:
        if isinstance(exc, VfioError) and exc.errno == EPERM and step.endswith("SET_CONTAINER"):
            exc.hint = _blocker_hint(target)
        elif isinstance(exc, VfioError) and exc.errno == ENOENT and step.startswith("open group"):
            exc.hint = render.missing_group_node_hint(target.group)
        trace.failed(step, exc)
        for handle in reversed(opened):
            handle.close()
        raise
    return LegacyDevice(target.bdf, container, group, device)


def _open_iommufd(target: _Target, vf_token: str | None, trace: _Trace) -> CdevDevice:
    if vf_token is not None:
        raise InvalidInputError(
            "a VF token cannot be passed on the iommufd path yet",
            hint="open the VF through its group (mode='legacy')",
        )
    if target.cdev is None:
        raise NotAssignableError(
            f"{target.bdf} has no vfio cdev",
            hint="bind it to vfio-pci on a kernel with CONFIG_VFIO_DEVICE_CDEV (6.6+), or "
            "use the legacy group",
        )
    opened: list[IommuFd | VfioDevice] = []
    step = ""
    try:
        step = "open iommufd"
        iommufd = IommuFd.open(target.devfs)
        opened.append(iommufd)
        trace.ok(step, iommufd.path)
        step = f"open cdev {target.cdev}"
        device = VfioDevice.open_cdev(target.cdev, target.devfs)
        opened.append(device)
        trace.ok(step, device.path)
        step = "VFIO_DEVICE_BIND_IOMMUFD"
        devid = device.bind_iommufd(iommufd)
        trace.ok(step, f"devid {devid}")
        step = "IOMMU_IOAS_ALLOC"
        ioas = iommufd.ioas_alloc()
        trace.ok(step, f"ioas {ioas}")
        step = "VFIO_DEVICE_ATTACH_IOMMUFD_PT"
        pt = device.attach_ioas(ioas)
        trace.ok(step, f"pt {pt}")
        step = "VFIO_DEVICE_GET_INFO"
        info = device.info()
        trace.ok(step, _info_text(info))
    except KataVfioError as exc:
        if isinstance(exc, VfioError) and step == "VFIO_DEVICE_BIND_IOMMUFD":
            group = target.host.group_of(target.bdf)
            if group is not None and not group.viable:
                exc.hint = _blocker_hint(target)
        trace.failed(step, exc)
        for handle in reversed(opened):
            handle.close()
        raise
    return CdevDevice(target.bdf, iommufd, ioas, devid, device)


def _info_text(info: DeviceInfo) -> str:
    return (
        f"flags={info.flags:#x} regions={info.num_regions} irqs={info.num_irqs}"
        f"{' reset' if info.can_reset else ''}"
    )


def open_legacy(
    bdf: Bdf | str,
    *,
    paths: HostPaths | None = None,
    vf_token: str | None = None,
    allow_noiommu: bool = False,
    host: Host | None = None,
) -> LegacyDevice:
    """Opens ``bdf`` through its group and a new type1v2 container (QEMU's sequence).

    :raises kata_vfio.errors.NotAssignableError: no IOMMU group, or the group is not viable
        (the hint names the blocking devices and the fix).
    :raises kata_vfio.errors.VfioError: an open or ioctl failed (errno, path, hint).
    """
    target = _target(bdf, paths, host)
    return _open_legacy(target, vf_token, allow_noiommu, _Trace())


def open_iommufd(
    bdf: Bdf | str,
    *,
    paths: HostPaths | None = None,
    host: Host | None = None,
) -> CdevDevice:
    """Opens ``bdf`` through its vfio cdev, bound to a new iommufd and attached to a new IOAS.

    :raises kata_vfio.errors.NotAssignableError: the device has no cdev.
    :raises kata_vfio.errors.VfioError: an open or ioctl failed (errno, path, hint).
    """
    target = _target(bdf, paths, host)
    return _open_iommufd(target, None, _Trace())


def check_open(
    bdf: Bdf | str,
    *,
    mode: Mode = "legacy",
    paths: HostPaths | None = None,
    vf_token: str | None = None,
    host: Host | None = None,
) -> OpenCheck:
    """Opens the device exactly as QEMU will (``mode`` legacy or iommufd), closes it again,
    and reports every step. Kernel refusals come back as ``ok=False`` with the error, errno
    and hint; only a malformed or unknown address raises."""
    target = _target(bdf, paths, host)
    trace = _Trace()
    try:
        if mode == "legacy":
            _open_legacy(target, vf_token, False, trace).close()
        else:
            _open_iommufd(target, vf_token, trace).close()
    except (DeviceNotFoundError, InvalidInputError):
        raise
    except KataVfioError as exc:
        code = exc.errno if isinstance(exc, VfioError) else None
        return OpenCheck(str(target.bdf), mode, False, tuple(trace.steps), str(exc), exc.hint, code)
    return OpenCheck(str(target.bdf), mode, True, tuple(trace.steps))


@dataclass(frozen=True)
class DeviceReport:
    """What a VFIO device offers: regions (BARs with their sizes), IRQs, reset."""

    bdf: str
    mode: Mode
    info: DeviceInfo
    regions: tuple[RegionInfo, ...]
    irqs: tuple[IrqInfo, ...]
    hot_reset: tuple[HotResetDevice, ...] | None
    """Functions a bus/slot reset would also reset; None when the device has none."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "bdf": self.bdf,
            "mode": self.mode,
            "flags": self.info.flags,
            "reset": self.info.can_reset,
            "regions": [
                {
                    "index": r.index,
                    "name": region_name(r.index),
                    "size": r.size,
                    "offset": r.offset,
                    "flags": r.flags,
                    "read": r.readable,
                    "write": r.writable,
                    "mmap": r.mmap,
                    "sparse_mmap": r.sparse_mmap,
                    "cap_ids": r.cap_ids,
                }
                for r in self.regions
            ],
            "irqs": [
                {"index": q.index, "name": irq_name(q.index), "count": q.count, "flags": q.flags}
                for q in self.irqs
            ],
            "hot_reset": None
            if self.hot_reset is None
            else [{"bdf": str(d.bdf), "id": d.id} for d in self.hot_reset],
        }


def device_report(
    bdf: Bdf | str,
    *,
    mode: Mode = "legacy",
    paths: HostPaths | None = None,
    host: Host | None = None,
) -> DeviceReport:
    """Opens the device (as :func:`open_legacy` / :func:`open_iommufd`) and reads its
    device, region and IRQ info and the hot-reset set."""
    opener = open_legacy if mode == "legacy" else open_iommufd
    with opener(bdf, paths=paths, host=host) as opened:
        device = opened.device
        info = device.info()
        regions = device.regions()
        irqs = device.irqs()
        try:
            hot_reset: tuple[HotResetDevice, ...] | None = device.hot_reset_info().devices
        except VfioError as exc:
            if exc.errno != ENODEV:
                raise
            hot_reset = None
        return DeviceReport(str(opened.bdf), mode, info, regions, irqs, hot_reset)


def passable_cdev(host: Host, bdf: Bdf | str) -> tuple[Bdf, str]:
    """The address and vfio cdev (``vfioN``) of a device that can be handed to a VMM through
    iommufd: an endpoint with a cdev, in a viable group.

    :raises kata_vfio.errors.NotAssignableError: the group is not viable (the hint names the
        blockers) or the device has no cdev.
    :raises kata_vfio.errors.InvalidInputError: a bridge.
    """
    target = _target(bdf, None, host)
    group = host.group_of(target.bdf)
    if group is not None and not group.viable:
        raise NotAssignableError(
            f"{target.bdf}: group {group.id} is not viable", hint=_blocker_hint(target)
        )
    if target.cdev is None:
        raise NotAssignableError(
            f"{target.bdf} has no vfio cdev",
            hint="bind it to vfio-pci on a kernel with CONFIG_VFIO_DEVICE_CDEV (6.6+)",
        )
    return target.bdf, target.cdev
