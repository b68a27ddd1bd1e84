"""Host device nodes: what ``lstat`` says about a spec's ``hostPath``, and how gaps are filled.

A CDI device node may give only its path; the reference then takes the type, major, minor and
permission bits from the host node with ``lstat`` (so a symlink is *not* followed and is "not
a device node"). The lookup is a plain callable, so tests and callers with another view of
``/dev`` (a fake devfs, a dev root) can pass their own; :class:`HostDeviceTable` is the test
double, behaving like ``lstat`` on a tree that holds exactly the nodes it was given.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from kata_vfio._core import device_numbers, lstat_beneath
from kata_vfio.cdi.goquote import go_quote
from kata_vfio.cdi.model import DeviceNode
from kata_vfio.errors import CdiError, HostIOError

__all__ = [
    "DevfsLookup",
    "DeviceLookup",
    "HostDevice",
    "HostDeviceTable",
    "NotADeviceNodeError",
    "complete_device_node",
    "lstat_device",
]


@dataclass(frozen=True, slots=True)
class HostDevice:
    """A host node as ``lstat`` reports it: ``b``, ``c`` or ``p``, numbers, permission bits."""

    type: str
    major: int
    minor: int
    file_mode: int


class NotADeviceNodeError(HostIOError):
    """The path exists but is not a block, character or FIFO node (a symlink, a file)."""

    def __init__(self, path: str) -> None:
        super().__init__("not a device node", errno=errno.ENODEV, path=path)


DeviceLookup = Callable[[str], HostDevice]
"""Takes a host path; returns its :class:`HostDevice` or raises :class:`OSError`."""


def lstat_device(path: str) -> HostDevice:
    """The host node at ``path`` by ``lstat`` (a symlink is not followed)."""
    st = os.lstat(path)
    found = _device(st.st_mode, st.st_rdev)
    if found is None:
        raise NotADeviceNodeError(path)
    return found


def _device(mode: int, rdev: int) -> HostDevice | None:
    """A block, character or FIFO node from its ``lstat`` mode and device number."""
    if stat.S_ISBLK(mode):
        kind = "b"
    elif stat.S_ISCHR(mode):
        kind = "c"
    elif stat.S_ISFIFO(mode):
        kind = "p"
    else:
        return None
    return HostDevice(kind, os.major(rdev), os.minor(rdev), stat.S_IMODE(mode))


class HostDeviceTable:
    """A stand-in for ``lstat`` over a fixed set of nodes.

    ``nodes`` maps host paths to what ``lstat`` would report; ``others`` names paths that
    exist but are not device nodes (files, symlinks). Every other path raises
    ``FileNotFoundError``. ``lookups`` records the paths asked for, in order.
    """

    def __init__(self, nodes: Mapping[str, HostDevice], others: Iterable[str] = ()) -> None:
        self._nodes = dict(nodes)
        self._others = frozenset(others)
        self.lookups: list[str] = []

    def __call__(self, path: str) -> HostDevice:
        self.lookups.append(path)
        if path in self._nodes:
            return self._nodes[path]
        if path in self._others:
            raise NotADeviceNodeError(path)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)


class DevfsLookup:
    """Looks host nodes up in a devfs tree at ``dev_root`` instead of ``/dev``.

    ``/dev/vfio/12`` is read at ``<dev_root>/vfio/12`` with ``lstat``, beneath the dev root
    (a link on the way that leaves it is not followed). Where that is a plain file (trees
    built for tests cannot hold device nodes), its numbers come from the kernel's name for it
    (``DEVNAME=vfio/12`` in ``<sysfs_root>/dev/{char,block}/M:m/uevent``, which the Rust core
    reads), which is how udev itself names nodes. Paths outside ``/dev`` and paths with
    ``..`` are not found.
    """

    def __init__(self, dev_root: str, sysfs_root: str) -> None:
        self._dev_root = dev_root
        self._sysfs_root = sysfs_root
        self._numbers: dict[str, tuple[str, int, int]] | None = None

    def __call__(self, path: str) -> HostDevice:
        relative = path[len("/dev/") :] if path.startswith("/dev/") else ""
        parts = relative.split("/")
        if not relative or any(part in ("", ".", "..") for part in parts):
            raise FileNotFoundError(errno.ENOENT, "not a path under /dev", path)
        code, mode, rdev = lstat_beneath(self._dev_root, relative)
        local = os.path.join(self._dev_root, *parts)
        if code:
            raise OSError(code, os.strerror(code), local)
        found = _device(mode, rdev)
        if found is not None:
            return found
        numbers = self._devnames().get(relative)
        if not stat.S_ISREG(mode) or numbers is None:
            raise NotADeviceNodeError(path)
        kind, major, minor = numbers
        return HostDevice(kind, major, minor, stat.S_IMODE(mode))

    def _devnames(self) -> dict[str, tuple[str, int, int]]:
        if self._numbers is None:
            self._numbers = device_numbers(self._sysfs_root)
        return self._numbers


class NodeCompletionError(CdiError):
    """A device node could not be completed; the message is the reference's wording."""


def complete_device_node(node: DeviceNode, lookup: DeviceLookup) -> DeviceNode:
    """A copy of ``node`` with host path, type, numbers and file mode filled in from the host.

    The reference's rules (``fillMissingInfo``): ``hostPath`` defaults to ``path``; a node
    is *minimally specified* when it has a type and a major (or is a FIFO): then a failing
    lookup is fine and only a missing file mode is taken from the host. Otherwise the lookup
    must succeed, a given type must equal the host's, and a zero major takes both numbers from
    the host. ``node`` itself is never changed. Raises :class:`NodeCompletionError`.
    """
    minimal = node.type != "" and (node.major != 0 or node.type == "p")
    host_path = node.host_path or node.path
    try:
        host = lookup(host_path)
    except (OSError, ValueError) as exc:
        if minimal:
            return dataclasses.replace(node, host_path=host_path)
        reason = _lookup_failure(exc, host_path)
        raise NodeCompletionError(
            f"failed to stat CDI host device {go_quote(host_path)}: {reason}"
        ) from exc
    file_mode = node.file_mode if node.file_mode is not None else host.file_mode
    if minimal:
        return dataclasses.replace(node, host_path=host_path, file_mode=file_mode)
    node_type = node.type or host.type
    if node_type != host.type:
        raise NodeCompletionError(
            f"CDI device ({go_quote(node.path)}, {go_quote(host_path)}), host type mismatch "
            f"({node_type}, {host.type})"
        )
    major, minor = node.major, node.minor
    if node_type != "p" and major == 0:
        major, minor = host.major, host.minor
    return dataclasses.replace(
        node, host_path=host_path, type=node_type, major=major, minor=minor, file_mode=file_mode
    )


def _lookup_failure(exc: OSError | ValueError, path: str) -> str:
    """The reason as the reference words it: ``lstat PATH: no such file or directory`` (Go's
    lower-case errno text), or ``not a device node``."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, NotADeviceNodeError):
        return f"lstat {path}: {exc.strerror[:1].lower()}{exc.strerror[1:]}"
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
