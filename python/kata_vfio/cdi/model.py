"""The CDI spec document as immutable records, versions 0.3.0 to 1.1.0.

Field names are Python spellings of the exact JSON keys (``additionalGids``, ``hostPath``,
``schemata``, ``hostInterfaceName``, ...); :meth:`Spec.to_document` gives them back in the
reference's field order with its ``omitempty`` rules. Every record is frozen and holds tuples,
so a spec held by a registry can never be changed by an injection.

A leaf: the records know no rules. Validation is :func:`kata_vfio.cdi.validate.validate_spec`,
the version a document needs :func:`kata_vfio.cdi.versions.minimum_version`.

Zero values mean "not set", as in the reference: ``type=""``, ``major=0``, ``host_path=""``.
Fields the reference keeps as pointers (``fileMode``, ``uid``, ``gid``, ``timeout``,
``intelRdt``, ``schemata``) are ``None`` when absent, because presence matters there
(``schemata: []`` still requires spec version 1.1.0).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kata_vfio.cdi.names import parse_qualifier, qualified_name

__all__ = [
    "ContainerEdits",
    "Device",
    "DeviceNode",
    "FrozenMap",
    "Hook",
    "IntelRdt",
    "Mount",
    "NetDevice",
    "Spec",
    "frozen_mapping",
]


class FrozenMap(Mapping[str, str]):
    """A read-only, hashable, picklable string map (spec and device annotations)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, str] = dict(items or {})

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return dict(self._items) == other if isinstance(other, Mapping) else NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def __reduce__(self) -> tuple[type[FrozenMap], tuple[dict[str, str]]]:
        return FrozenMap, (self._items,)


_EMPTY = FrozenMap()


def frozen_mapping(items: Mapping[str, str] | None) -> Mapping[str, str]:
    """A read-only copy of ``items`` (keys sorted, so equal maps print alike)."""
    if not items:
        return _EMPTY
    return FrozenMap({key: items[key] for key in sorted(items)})


@dataclass(frozen=True, slots=True)
class DeviceNode:
    """A device node to create in the container (``linux.devices``)."""

    path: str
    host_path: str = ""
    type: str = ""
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    permissions: str = ""
    uid: int | None = None
    gid: int | None = None

    def to_document(self) -> dict[str, Any]:
        """The JSON object, keys in the reference's order, unset fields left out."""
        doc: dict[str, Any] = {"path": self.path}
        if self.host_path:
            doc["hostPath"] = self.host_path
        if self.type:
            doc["type"] = self.type
        if self.major:
            doc["major"] = self.major
        if self.minor:
            doc["minor"] = self.minor
        if self.file_mode is not None:
            doc["fileMode"] = self.file_mode
        if self.permissions:
            doc["permissions"] = self.permissions
        if self.uid is not None:
            doc["uid"] = self.uid
        if self.gid is not None:
            doc["gid"] = self.gid
        return doc


@dataclass(frozen=True, slots=True)
class Mount:
    """A mount to add to the container (``mounts``)."""

    host_path: str
    container_path: str
    options: tuple[str, ...] = ()
    type: str = ""

    def to_document(self) -> dict[str, Any]:
        """The JSON object, keys in the reference's order, unset fields left out."""
        doc: dict[str, Any] = {"hostPath": self.host_path, "containerPath": self.container_path}
        if self.options:
            doc["options"] = list(self.options)
        if self.type:
            doc["type"] = self.type
        return doc


@dataclass(frozen=True, slots=True)
class Hook:
    """An OCI hook to add under ``hooks.<hook_name>``."""

    hook_name: str
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None

    def to_document(self) -> dict[str, Any]:
        """The JSON object, keys in the reference's order, unset fields left out."""
        doc: dict[str, Any] = {"hookName": self.hook_name, "path": self.path}
        if self.args:
            doc["args"] = list(self.args)
        if self.env:
            doc["env"] = list(self.env)
        if self.timeout is not None:
            doc["timeout"] = self.timeout
        return doc


@dataclass(frozen=True, slots=True)
class IntelRdt:
    """Intel RDT (resctrl) settings; replaces ``linux.intelRdt`` wholesale."""

    clos_id: str = ""
    l3_cache_schema: str = ""
    mem_bw_schema: str = ""
    schemata: tuple[str, ...] | None = None
    enable_monitoring: bool = False

    def to_document(self) -> dict[str, Any]:
        """The JSON object, keys in the reference's order, unset fields left out."""
        doc: dict[str, Any] = {}
        if self.clos_id:
            doc["closID"] = self.clos_id
        if self.l3_cache_schema:
            doc["l3CacheSchema"] = self.l3_cache_schema
        if self.mem_bw_schema:
            doc["memBwSchema"] = self.mem_bw_schema
        if self.schemata is not None:
            doc["schemata"] = list(self.schemata)
        if self.enable_monitoring:
            doc["enableMonitoring"] = True
        return doc


@dataclass(frozen=True, slots=True)
class NetDevice:
    """A host network interface to move into the container under a new name (1.1.0)."""

    host_interface_name: str
    name: str

    def to_document(self) -> dict[str, Any]:
        """The JSON object."""
        return {"hostInterfaceName": self.host_interface_name, "name": self.name}


@dataclass(frozen=True, slots=True)
class ContainerEdits:
    """Edits to an OCI spec, at spec level (applied once) or device level."""

    env: tuple[str, ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    net_devices: tuple[NetDevice, ...] = ()
    hooks: tuple[Hook, ...] = ()
    mounts: tuple[Mount, ...] = ()
    intel_rdt: IntelRdt | None = None
    additional_gids: tuple[int, ...] = ()

    def is_empty(self) -> bool:
        """True when there is nothing to edit (invalid for a device, fine for a spec)."""
        return not (
            self.env
            or self.device_nodes
            or self.net_devices
            or self.hooks
            or self.mounts
            or self.intel_rdt is not None
            or self.additional_gids
        )

    def to_document(self) -> dict[str, Any]:
        """The JSON object, keys in the reference's order, empty lists left out."""
        doc: dict[str, Any] = {}
        if self.env:
            doc["env"] = list(self.env)
        if self.device_nodes:
            doc["deviceNodes"] = [node.to_document() for node in self.device_nodes]
        if self.net_devices:
            doc["netDevices"] = [dev.to_document() for dev in self.net_devices]
        if self.hooks:
            doc["hooks"] = [hook.to_document() for hook in self.hooks]
        if self.mounts:
            doc["mounts"] = [mount.to_document() for mount in self.mounts]
        if self.intel_rdt is not None:
            doc["intelRdt"] = self.intel_rdt.to_document()
        if self.additional_gids:
            doc["additionalGids"] = list(self.additional_gids)
        return doc


@dataclass(frozen=True, slots=True)
class Device:
    """One device of a spec: its unqualified name and its own edits."""

    name: str
    container_edits: ContainerEdits = field(default_factory=ContainerEdits)
    annotations: Mapping[str, str] = field(default=_EMPTY)

    def to_document(self) -> dict[str, Any]:
        """The JSON object, keys in the reference's order."""
        doc: dict[str, Any] = {"name": self.name}
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        doc["containerEdits"] = self.container_edits.to_document()
        return doc


@dataclass(frozen=True, slots=True)
class Spec:
    """A CDI spec document: the devices of one ``vendor/class`` kind."""

    version: str
    kind: str
    devices: tuple[Device, ...] = ()
    container_edits: ContainerEdits = field(default_factory=ContainerEdits)
    annotations: Mapping[str, str] = field(default=_EMPTY)

    @property
    def vendor(self) -> str:
        """The part of ``kind`` before the first ``/`` (empty when there is none)."""
        return parse_qualifier(self.kind)[0]

    @property
    def cls(self) -> str:
        """The part of ``kind`` after the first ``/``."""
        return parse_qualifier(self.kind)[1]

    def device(self, name: str) -> Device | None:
        """The device with this unqualified name, or None."""
        for device in self.devices:
            if device.name == name:
                return device
        return None

    def qualified_names(self) -> tuple[str, ...]:
        """``vendor/class=name`` for each device, in document order."""
        vendor, cls = parse_qualifier(self.kind)
        return tuple(qualified_name(vendor, cls, d.name) for d in self.devices)

    def to_document(self) -> dict[str, Any]:
        """The JSON object, keys in the reference's order; empty spec-level edits left out."""
        doc: dict[str, Any] = {"cdiVersion": self.version, "kind": self.kind}
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        doc["devices"] = [device.to_document() for device in self.devices]
        edits = self.container_edits.to_document()
        if edits:
            doc["containerEdits"] = edits
        return doc
