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

from kata_vfio.cdi.model import DeviceNode

__all__ = [
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


class NotADeviceNodeError(OSError):
    """The path exists but is not a block, character or FIFO node (a symlink, a file)."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ENODEV, "not a device node", path)


DeviceLookup = Callable[[str], HostDevice]
"""Takes a host path; returns its :class:`HostDevice` or raises :class:`OSError`."""


def lstat_device(path: str) -> HostDevice:
    """The host node at ``path`` by ``lstat`` (a symlink is not followed)."""
    st = os.lstat(path)
    mode = st.st_mode
    if stat.S_ISBLK(mode):
        kind = "b"
    elif stat.S_ISCHR(mode):
        kind = "c"
    elif stat.S_ISFIFO(mode):
        kind = "p"
    else:
        raise NotADeviceNodeError(path)
    return HostDevice(kind, os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(mode))


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


class NodeCompletionError(Exception):
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
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise NodeCompletionError(
            f"failed to stat CDI host device {host_path!r}: {reason}"
        ) from exc
    file_mode = node.file_mode if node.file_mode is not None else host.file_mode
    if minimal:
        return dataclasses.replace(node, host_path=host_path, file_mode=file_mode)
    node_type = node.type or host.type
    if node_type != host.type:
        raise NodeCompletionError(
            f"CDI device ({node.path!r}, {host_path!r}), host type mismatch "
            f"({node_type}, {host.type})"
        )
    major, minor = node.major, node.minor
    if node_type != "p" and major == 0:
        major, minor = host.major, host.minor
    return dataclasses.replace(
        node, host_path=host_path, type=node_type, major=major, minor=minor, file_mode=file_mode
    )
