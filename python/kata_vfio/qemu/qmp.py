"""QMP operations on a running QEMU, with the QEMU project's own ``qemu.qmp`` library.

:class:`QmpSession` is a synchronous session (``qemu.qmp``'s asyncio client on a private
event loop) with timeouts on every call. On top of it: hot-plug of a device into a free root
or switch port (``object-add`` of an iommufd object for a cdev device, then ``device_add``),
unplug (``device_del``, wait for ``DEVICE_DELETED``, then ``object-del``), ``query-pci`` and
the guest PCI path of a device from the QOM tree (``addr`` and the ``parent_bus`` chain).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from qemu.qmp import EventListener, QMPClient, QMPError
from qemu.qmp.qmp_client import ExecuteError

from kata_vfio._echo import echo
from kata_vfio._numbers import natural_key
from kata_vfio.errors import PlanError, QmpError
from kata_vfio.qemu.argv import validate_id
from kata_vfio.vm.pci_path import PciPath

__all__ = [
    "PORT_DRIVERS",
    "HotplugFunction",
    "HotplugRequest",
    "HotplugResult",
    "QmpSession",
    "free_ports",
    "guest_pci_path",
    "hotplug",
    "list_ports",
    "port_occupancy",
    "query_pci",
    "resume",
    "unplug",
]

_T = TypeVar("_T")
# Device types a hot-pluggable device can go into.
PORT_DRIVERS = ("pcie-root-port", "xio3130-downstream")
_PERIPHERAL = "/machine/peripheral"
_MAX_BUS_DEPTH = 16


class QmpSession:
    """A synchronous QMP connection to one QEMU.

    Use as a context manager or call :meth:`close`. Every call has a timeout (``timeout``
    seconds unless given); a QEMU error becomes :class:`~kata_vfio.errors.QmpError` carrying
    the command, QEMU's error class and its message.
    """

    def __init__(self, socket_path: str, *, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient("kata-vfio")
        self._connected = False

    def connect(self, timeout: float | None = None) -> QmpSession:
        """Connects and negotiates capabilities; raises QmpError when QEMU does not answer
        (the session is closed then)."""
        try:
            self._run(self._client.connect(self.socket_path), timeout)
        except (QMPError, OSError, EOFError, asyncio.TimeoutError) as exc:
            self.close()
            raise QmpError(
                f"cannot connect to QMP socket {self.socket_path}: {_describe(exc)}",
                hint="check that QEMU is running with this -qmp/-mon socket",
            ) from exc
        self._connected = True
        return self

    def close(self) -> None:
        """Disconnects (idempotent) and releases the event loop."""
        if self._loop.is_closed():
            return
        try:
            # Also after a failed connect: it may have left a half-open socket behind.
            self._run(self._client.disconnect(), self.timeout)
        except (QMPError, OSError, EOFError, asyncio.TimeoutError):
            pass  # QEMU may already be gone; the connection is closed either way
        finally:
            self._connected = False
            self._loop.close()

    def __enter__(self) -> QmpSession:
        if not self._connected:
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def execute(
        self,
        command: str,
        arguments: Mapping[str, object] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Runs one QMP command and returns its ``return`` value."""
        try:
            return self._run(
                self._client.execute(command, dict(arguments) if arguments else None), timeout
            )
        except ExecuteError as exc:
            raise QmpError(
                f"QMP {command} failed: {exc.error_class}: {exc}",
                hint=_hint_for(command, exc.error_class),
            ) from exc
        except asyncio.TimeoutError as exc:
            raise QmpError(
                f"QMP {command} got no answer within {timeout or self.timeout:g} s",
                hint="QEMU may be hung; check its log",
            ) from exc
        except (QMPError, OSError, EOFError) as exc:
            raise QmpError(
                f"QMP {command} failed: {_describe(exc)}",
                hint="the QMP connection was lost; is QEMU still running?",
            ) from exc

    def pass_fd(self, fd: int, name: str) -> None:
        """Hands QEMU a copy of ``fd`` under ``name`` (SCM_RIGHTS, then ``getfd``), for the
        ``fd=<name>`` property of a device or object added next: an unprivileged QEMU gets
        a VFIO cdev or ``/dev/iommu`` that it could not open itself. ``closefd`` (or using
        it) releases QEMU's copy; this process keeps its own."""
        validate_id(name, "fd name")
        try:
            self._client.send_fd_scm(fd)
        except (QMPError, OSError, ValueError) as exc:
            raise QmpError(
                f"cannot pass fd {fd} to QEMU over {self.socket_path}: {_describe(exc)}",
                hint="fds can only be passed over a unix socket to a running QEMU",
            ) from exc
        self.execute("getfd", {"fdname": name})

    def listen(self, *names: str) -> EventWatch:
        """Starts collecting the named events (before issuing the command that causes them)."""
        listener = EventListener(names=names)
        self._client.register_listener(listener)
        return EventWatch(self, listener)

    def _run(self, awaitable: Awaitable[_T], timeout: float | None = None) -> _T:
        if self._loop.is_closed():
            raise QmpError(f"QMP session to {self.socket_path} is closed")
        limit = self.timeout if timeout is None else timeout
        return self._loop.run_until_complete(asyncio.wait_for(awaitable, limit))

    def _drop_listener(self, listener: EventListener) -> None:
        self._client.remove_listener(listener)
        # The client's default listener keeps every event; nothing here reads it.
        self._client.events.clear()


class EventWatch:
    """Events collected since :meth:`QmpSession.listen`; a context manager."""

    def __init__(self, session: QmpSession, listener: EventListener) -> None:
        self._session = session
        self._listener = listener

    def __enter__(self) -> EventWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._session._drop_listener(self._listener)

    def wait_for_devices(
        self, ids: Iterable[str], timeout: float, *, deadline: float | None = None
    ) -> None:
        """Waits until a ``DEVICE_DELETED`` event arrived for each device id, ``timeout``
        seconds from now (or until ``deadline``, a ``time.monotonic()`` value)."""
        pending = set(ids)
        if deadline is None:
            deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError(
                    f"device(s) {', '.join(sorted(pending))} not removed within {timeout:g} s",
                    hint="the guest did not release the device (no PCIe hot-plug driver "
                    "running, or the device is busy); retry, or stop the VM",
                )
            try:
                event = self._session._run(self._listener.get(), left)
            except asyncio.TimeoutError:
                continue
            data = event.get("data")
            if isinstance(data, dict):
                pending.discard(data.get("device"))


@dataclass(frozen=True)
class HotplugFunction:
    """One function of a hot-plugged device: its QEMU id, driver and properties."""

    qemu_id: str
    guest_function: int
    driver: str = "vfio-pci"
    props: tuple[tuple[str, str | int | bool], ...] = ()


@dataclass(frozen=True)
class HotplugRequest:
    """Devices to hot-plug, one port each (``slots``: the functions of each device), and the
    iommufd object to create first (None for legacy VFIO or emulated devices); functions
    that use it name it in their ``iommufd`` property.

    ``fds`` are ``(name, fd)`` pairs handed to QEMU before anything is added (see
    :meth:`QmpSession.pass_fd`): functions name theirs in an ``fd`` property instead of
    ``host``, and ``iommufd_fd`` names the one the iommufd object is created from."""

    slots: tuple[tuple[HotplugFunction, ...], ...]
    iommufd: str | None = None
    fds: tuple[tuple[str, int], ...] = ()
    iommufd_fd: str | None = None


@dataclass(frozen=True)
class HotplugResult:
    """What was plugged where."""

    ports: tuple[str, ...]
    ids: tuple[str, ...]
    iommufd: str | None
    paths: tuple[str, ...]


def resume(session: QmpSession) -> str:
    """Lets a paused guest run (QMP ``cont``: a VM started with ``-S``, or stopped); returns
    the status QEMU reports afterwards (``running``). Resuming a running VM changes nothing."""
    session.execute("cont")
    status = session.execute("query-status")
    return str(status.get("status")) if isinstance(status, dict) else "unknown"


def query_pci(session: QmpSession) -> list[dict[str, Any]]:
    """QEMU's ``query-pci``: every root bus with its devices (bridges carry their subtree)."""
    result = session.execute("query-pci")
    if not isinstance(result, list):
        raise QmpError("QMP query-pci returned something that is not a list")
    return result


def guest_pci_path(session: QmpSession, qemu_id: str) -> PciPath:
    """The guest PCI path of a device, from its ``addr`` and the ``parent_bus`` chain."""
    validate_id(qemu_id, "device id")
    path = f"{_PERIPHERAL}/{qemu_id}"
    slots: list[int] = []
    function = -1
    for _ in range(_MAX_BUS_DEPTH):
        devfn = session.execute("qom-get", {"path": path, "property": "addr"})
        if not isinstance(devfn, int):
            raise QmpError(f"QOM {path} addr is {echo(devfn)}, not a PCI address")
        if function < 0:
            function = devfn & 7
        slots.append(devfn >> 3)
        bus = session.execute("qom-get", {"path": path, "property": "parent_bus"})
        if not isinstance(bus, str):
            raise QmpError(f"QOM {path} parent_bus is {echo(bus)}")
        parent = bus.rsplit("/", 1)[0]
        parent_type = session.execute("qom-get", {"path": parent, "property": "type"})
        if parent_type not in PORT_DRIVERS and parent_type not in (
            "x3130-upstream",
            "pcie-pci-bridge",
            "pci-bridge",
        ):
            # A root bus: pcie.0 (its parent is the q35 host) or a pxb-pcie's bus.
            root = bus.rsplit("/", 1)[1]
            bus_nr = 0
            if parent_type == "pxb-host":
                # QEMU names an expander's root bus after the pxb-pcie device's id.
                expander = f"{_PERIPHERAL}/{root}"
                bus_nr = session.execute("qom-get", {"path": expander, "property": "bus_nr"})
                if not isinstance(bus_nr, int):
                    raise QmpError(f"QOM {expander} bus_nr is {echo(bus_nr)}, not a bus number")
            return PciPath(
                root=root, slots=tuple(reversed(slots)), function=function, root_bus_nr=bus_nr
            )
        path = parent
    raise QmpError(f"device {qemu_id} sits deeper than {_MAX_BUS_DEPTH} buses")


def list_ports(session: QmpSession) -> tuple[str, ...]:
    """The ids of every hot-pluggable port (root and switch downstream ports), in numeric
    order (``rp2`` before ``rp10``)."""
    ports = [
        name
        for name, kind in _peripherals(session).items()
        if kind in {f"child<{d}>" for d in PORT_DRIVERS}
    ]
    return tuple(sorted(ports, key=natural_key))


def port_occupancy(session: QmpSession) -> dict[str, tuple[str, ...]]:
    """Port id -> ids of the devices on its secondary bus."""
    occupancy: dict[str, list[str]] = {}
    for name in sorted(_peripherals(session), key=natural_key):
        try:
            bus = session.execute(
                "qom-get", {"path": f"{_PERIPHERAL}/{name}", "property": "parent_bus"}
            )
        except QmpError:
            continue  # objects without a bus (not devices)
        if isinstance(bus, str) and bus.startswith(_PERIPHERAL + "/"):
            parts = bus[len(_PERIPHERAL) + 1 :].split("/")
            occupancy.setdefault(parts[0], []).append(name)
    return {port: tuple(ids) for port, ids in occupancy.items()}


def free_ports(session: QmpSession, candidates: Sequence[str] | None = None) -> tuple[str, ...]:
    """Ports with nothing on them, in the order of ``candidates`` (default: every port QEMU
    has, in numeric order)."""
    ports = tuple(candidates) if candidates is not None else list_ports(session)
    occupied = port_occupancy(session)
    return tuple(p for p in ports if not occupied.get(p))


def hotplug(
    session: QmpSession,
    request: HotplugRequest,
    *,
    ports: Sequence[str] | None = None,
) -> HotplugResult:
    """Hot-plugs each device of ``request`` into its own free port (the first free ones of
    ``ports``, default all of QEMU's ports in numeric order).

    Checks everything before QEMU is asked to change: enough free ports, unused ids. Functions
    other than 0 are added first and function 0 last (QEMU exposes a multi-function device to
    the guest when function 0 arrives). On a failure the devices added so far are removed
    again where QEMU can do so without the guest, and the iommufd object is deleted.
    """
    if not request.slots or any(not slot for slot in request.slots):
        raise PlanError("nothing to hot-plug: the request has no device")
    ids = [f.qemu_id for slot in request.slots for f in slot]
    for qemu_id in ids:
        validate_id(qemu_id, "device id")
    if request.iommufd is not None:
        validate_id(request.iommufd, "iommufd object id")
    existing = set(_peripherals(session))
    taken = sorted(set(ids) & existing)
    if taken or len(set(ids)) != len(ids):
        raise PlanError(
            f"device id(s) {', '.join(taken) or 'repeated in the request'} already in use",
            hint="unplug the device first, or give other ids",
        )
    available = free_ports(session, ports)
    if len(available) < len(request.slots):
        raise PlanError(
            f"{len(request.slots)} free PCIe port(s) needed, {len(available)} free "
            f"({', '.join(available) or 'none'})",
            hint="plan the sandbox with more ports (pcie_root_port / pcie_switch_port) or "
            "unplug a device",
        )
    chosen = available[: len(request.slots)]
    created_object = False
    added: list[str] = []
    passed: list[str] = []
    try:
        for name, fd in request.fds:
            session.pass_fd(fd, name)
            passed.append(name)
        if request.iommufd is not None and request.iommufd not in _objects(session):
            iommufd: dict[str, object] = {"qom-type": "iommufd", "id": request.iommufd}
            if request.iommufd_fd is not None:
                iommufd["fd"] = request.iommufd_fd
            session.execute("object-add", iommufd)
            created_object = True
        for port, slot in zip(chosen, request.slots, strict=True):
            multifunction = len(slot) > 1
            for function in sorted(slot, key=lambda f: f.guest_function == 0):
                arguments: dict[str, object] = {
                    "driver": function.driver,
                    "id": function.qemu_id,
                    "bus": port,
                    "addr": f"00.{function.guest_function:x}",
                }
                arguments.update(dict(function.props))
                if multifunction and function.guest_function == 0:
                    arguments["multifunction"] = True
                session.execute("device_add", arguments)
                added.append(function.qemu_id)
    except QmpError:
        _roll_back(session, added, request.iommufd if created_object else None)
        raise
    finally:
        # What QEMU used, it holds on its own; named fds left over are closed in QEMU.
        _close_passed(session, passed)
    paths = tuple(str(guest_pci_path(session, slot[0].qemu_id)) for slot in request.slots)
    return HotplugResult(ports=chosen, ids=tuple(ids), iommufd=request.iommufd, paths=paths)


def unplug(
    session: QmpSession,
    ids: Sequence[str],
    *,
    iommufd: str | None = None,
    timeout: float = 10.0,
) -> None:
    """Unplugs devices: ``device_del`` of each device's function 0 (QEMU removes the whole
    slot), waits for ``DEVICE_DELETED`` of every id in ``ids``, then deletes the iommufd
    object. Raises QmpError on timeout, leaving the object in place (still in use)."""
    for qemu_id in ids:
        validate_id(qemu_id, "device id")
    present = set(_peripherals(session))
    missing = sorted(set(ids) - present)
    if missing:
        raise PlanError(
            f"no device {', '.join(missing)} in this VM",
            hint="list the VM's devices with: kata-vfio qemu ports --qmp SOCKET",
        )
    slot_heads = _function_zero_ids(session, ids)
    deadline = time.monotonic() + timeout
    with session.listen("DEVICE_DELETED") as watch:
        for qemu_id in slot_heads:
            _request_removal(session, qemu_id, deadline)
        watch.wait_for_devices(ids, timeout, deadline=deadline)
    if iommufd is not None:
        validate_id(iommufd, "iommufd object id")
        if iommufd in _objects(session):
            session.execute("object-del", {"id": iommufd})


def _request_removal(session: QmpSession, qemu_id: str, deadline: float) -> None:
    """``device_del``, retried while the guest is still busy with the slot (its power
    indicator blinks while it handles an earlier plug or unplug)."""
    while True:
        try:
            session.execute("device_del", {"id": qemu_id})
            return
        except QmpError as exc:
            if "power indicator blinking" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.25)


def _function_zero_ids(session: QmpSession, ids: Sequence[str]) -> list[str]:
    """One id per slot: the function-0 device if it is among ``ids``, else each device."""
    by_bus: dict[str, list[tuple[int, str]]] = {}
    for qemu_id in ids:
        path = f"{_PERIPHERAL}/{qemu_id}"
        bus = session.execute("qom-get", {"path": path, "property": "parent_bus"})
        devfn = session.execute("qom-get", {"path": path, "property": "addr"})
        by_bus.setdefault(str(bus), []).append((int(devfn), qemu_id))
    heads: list[str] = []
    for members in by_bus.values():
        members.sort()
        if members[0][0] & 7 == 0:
            heads.append(members[0][1])
        else:
            heads.extend(qemu_id for _, qemu_id in members)
    return heads


def _roll_back(session: QmpSession, added: Sequence[str], iommufd: str | None) -> None:
    # Functions whose function 0 never arrived are not visible to the guest: QEMU removes
    # them at once. A complete device would need the guest; leave it and report.
    for qemu_id in reversed(added):
        with contextlib.suppress(QmpError):
            session.execute("device_del", {"id": qemu_id})
    if iommufd is not None:
        try:
            if not (set(added) & set(_peripherals(session))):
                session.execute("object-del", {"id": iommufd})
        except QmpError:
            pass


def _close_passed(session: QmpSession, names: Sequence[str]) -> None:
    for name in names:
        with contextlib.suppress(QmpError):
            session.execute("closefd", {"fdname": name})


def _peripherals(session: QmpSession) -> dict[str, str]:
    """Id -> ``child<type>`` of every device created with an id."""
    entries = session.execute("qom-list", {"path": _PERIPHERAL})
    return {
        e["name"]: e["type"]
        for e in entries
        if isinstance(e, dict) and str(e.get("type", "")).startswith("child<")
    }


def _objects(session: QmpSession) -> set[str]:
    entries = session.execute("qom-list", {"path": "/objects"})
    return {
        e["name"]
        for e in entries
        if isinstance(e, dict) and str(e.get("type", "")).startswith("child<")
    }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text or type(exc).__name__


def _hint_for(command: str, error_class: str) -> str | None:
    if error_class == "DeviceNotFound":
        return "check the id with: kata-vfio qemu ports --qmp SOCKET"
    if command == "device_add":
        return "check the device's properties and that its port is free"
    return None
