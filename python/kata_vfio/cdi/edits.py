"""Applying container edits to an OCI runtime spec, in the reference's order and merge rules.

All edits of one injection are merged first (lists concatenated, the last ``intelRdt`` wins)
and applied category by category:

1. env: an entry replaces the one with the same name in place (name = text before the first
   ``=``), otherwise it is appended; ``process`` is created when missing;
2. device nodes: each replaces the ``linux.devices`` entry with its path (the entry ends up
   last); ``uid``/``gid`` default to ``process.user``'s when those are above 0; ``b`` and ``c``
   nodes get a cgroup allow rule (``permissions`` as access, ``""`` is ``rwm``, ``none`` is
   empty);
3. net devices: ``linux.netDevices[hostInterfaceName] = {name}``;
4. mounts: each replaces the mount with the same destination (exact string), then all mounts
   are sorted stably by path depth; with a user namespace, bind mounts get ``idmap``/``ridmap``;
5. hooks: appended to their lifecycle list;
6. intelRdt: replaces ``linux.intelRdt`` wholesale;
7. additionalGids: 0 skipped, appended unless present.

Everything here is pure: :func:`apply_edits` works on the dict it is given (callers pass a
copy) and returns what it added and what it replaced.
"""

from __future__ import annotations

import posixpath
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from kata_vfio.cdi.model import ContainerEdits, DeviceNode, Hook, IntelRdt, Mount, NetDevice
from kata_vfio.cdi.validate import NO_PERMISSIONS

__all__ = ["OciChanges", "apply_edits", "merge_edits"]


@dataclass(frozen=True, slots=True)
class OciChanges:
    """OCI entries written by an injection (or the entries they replaced)."""

    env: tuple[str, ...] = ()
    devices: tuple[dict[str, Any], ...] = ()
    cgroup_rules: tuple[dict[str, Any], ...] = ()
    net_devices: tuple[tuple[str, dict[str, Any]], ...] = ()
    mounts: tuple[dict[str, Any], ...] = ()
    hooks: tuple[tuple[str, dict[str, Any]], ...] = ()
    intel_rdt: dict[str, Any] | None = None
    additional_gids: tuple[int, ...] = ()

    def is_empty(self) -> bool:
        """True when nothing is recorded."""
        return self.intel_rdt is None and not any(
            getattr(self, f.name) for f in fields(self) if f.name != "intel_rdt"
        )

    def to_document(self) -> dict[str, Any]:
        """A JSON-ready summary (empty categories left out); the category keys are this
        tool's (snake_case), the entries are OCI's as written into the spec."""
        doc: dict[str, Any] = {}
        if self.env:
            doc["env"] = list(self.env)
        if self.devices:
            doc["devices"] = [dict(d) for d in self.devices]
        if self.cgroup_rules:
            doc["cgroup_rules"] = [dict(r) for r in self.cgroup_rules]
        if self.net_devices:
            doc["net_devices"] = {host: dict(entry) for host, entry in self.net_devices}
        if self.mounts:
            doc["mounts"] = [dict(m) for m in self.mounts]
        if self.hooks:
            doc["hooks"] = [{"lifecycle": name, **hook} for name, hook in self.hooks]
        if self.intel_rdt is not None:
            doc["intel_rdt"] = dict(self.intel_rdt)
        if self.additional_gids:
            doc["additional_gids"] = list(self.additional_gids)
        return doc


@dataclass(slots=True)
class _Recorder:
    env: list[str] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    cgroup_rules: list[dict[str, Any]] = field(default_factory=list)
    net_devices: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    hooks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    intel_rdt: dict[str, Any] | None = None
    additional_gids: list[int] = field(default_factory=list)

    def freeze(self) -> OciChanges:
        values: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
        return OciChanges(**values)


def merge_edits(edits: Iterable[ContainerEdits]) -> ContainerEdits:
    """Concatenates edits in order; the last non-null ``intelRdt`` wins (no deduplication)."""
    env: list[str] = []
    nodes: list[DeviceNode] = []
    nets: list[NetDevice] = []
    hooks: list[Hook] = []
    mounts: list[Mount] = []
    gids: list[int] = []
    rdt: IntelRdt | None = None
    for one in edits:
        env.extend(one.env)
        nodes.extend(one.device_nodes)
        nets.extend(one.net_devices)
        hooks.extend(one.hooks)
        mounts.extend(one.mounts)
        gids.extend(one.additional_gids)
        if one.intel_rdt is not None:
            rdt = one.intel_rdt
    return ContainerEdits(
        env=tuple(env),
        device_nodes=tuple(nodes),
        net_devices=tuple(nets),
        hooks=tuple(hooks),
        mounts=tuple(mounts),
        intel_rdt=rdt,
        additional_gids=tuple(gids),
    )


def apply_edits(spec: dict[str, Any], edits: ContainerEdits) -> tuple[OciChanges, OciChanges]:
    """Applies complete edits (device nodes already filled in) to ``spec`` in place.

    ``spec`` must have passed :func:`kata_vfio.oci.check_oci_spec`. Returns
    ``(added, replaced)``.
    """
    added = _Recorder()
    replaced = _Recorder()
    if edits.env:
        _apply_env(spec, edits.env, added, replaced)
    if edits.device_nodes:
        _apply_device_nodes(spec, edits.device_nodes, added, replaced)
    for net in edits.net_devices:
        _apply_net_device(spec, net, added, replaced)
    if edits.mounts:
        _apply_mounts(spec, edits.mounts, added, replaced)
    for hook in edits.hooks:
        entry = hook_entry(hook)
        _ensure_list(_ensure_dict(spec, "hooks"), hook.hook_name).append(entry)
        added.hooks.append((hook.hook_name, entry))
    if edits.intel_rdt is not None:
        linux = _ensure_dict(spec, "linux")
        if isinstance(linux.get("intelRdt"), dict):
            replaced.intel_rdt = linux["intelRdt"]
        linux["intelRdt"] = intel_rdt_entry(edits.intel_rdt)
        added.intel_rdt = linux["intelRdt"]
    if any(edits.additional_gids):
        _apply_additional_gids(spec, edits.additional_gids, added)
    return added.freeze(), replaced.freeze()


def device_entry(node: DeviceNode, spec: dict[str, Any]) -> dict[str, Any]:
    """The ``linux.devices`` entry for a complete node (host path and permissions dropped)."""
    entry: dict[str, Any] = {
        "path": node.path,
        "type": node.type,
        "major": node.major,
        "minor": node.minor,
    }
    if node.file_mode is not None:
        entry["fileMode"] = node.file_mode
    user = _process_user(spec)
    uid = node.uid if node.uid is not None else _positive(user.get("uid"))
    gid = node.gid if node.gid is not None else _positive(user.get("gid"))
    if uid is not None:
        entry["uid"] = uid
    if gid is not None:
        entry["gid"] = gid
    return entry


def mount_entry(mount: Mount, *, user_namespace: bool) -> dict[str, Any]:
    """The OCI ``mounts`` entry; with a user namespace, bind mounts get an ID-mapping option."""
    entry: dict[str, Any] = {"destination": mount.container_path}
    if mount.type:
        entry["type"] = mount.type
    entry["source"] = mount.host_path
    options = list(mount.options)
    if user_namespace:
        option = _idmap_option(mount)
        if option:
            options.append(option)
    if options:
        entry["options"] = options
    return entry


def hook_entry(hook: Hook) -> dict[str, Any]:
    """The OCI hook object: the CDI hook without its name."""
    entry = hook.to_document()
    del entry["hookName"]
    return entry


def intel_rdt_entry(rdt: IntelRdt) -> dict[str, Any]:
    """The OCI ``linux.intelRdt`` object (empty strings and lists left out)."""
    entry = rdt.to_document()
    if not entry.get("schemata"):
        entry.pop("schemata", None)
    return entry


def mount_depth(destination: str) -> int:
    """Path depth as the reference sorts by it: ``/`` count of the cleaned path."""
    return _go_clean(destination).count("/")


def _apply_env(
    spec: dict[str, Any], entries: Sequence[str], added: _Recorder, replaced: _Recorder
) -> None:
    env = _ensure_list(_ensure_dict(spec, "process"), "env")
    index_of = {entry.partition("=")[0]: i for i, entry in enumerate(env)}
    for entry in entries:
        name = entry.partition("=")[0]
        position = index_of.get(name)
        if position is None:
            env.append(entry)
            index_of[name] = len(env) - 1
        else:
            replaced.env.append(env[position])
            env[position] = entry
        added.env.append(entry)


class _KeyedList:
    """A list with "remove the first entry with this key" and "replace the first entry with
    this key" in constant time: removed slots become holes, closed up by :meth:`entries`.

    Keys are the entries' ``field`` when it is a string (nothing else can equal the string
    keys asked for); each key's live slots are kept in increasing order.
    """

    def __init__(self, entries: list[Any], field: str) -> None:
        self._slots: list[Any] = list(entries)
        self._field = field
        self._where: dict[str, deque[int]] = {}
        for index, entry in enumerate(entries):
            key = entry.get(field) if isinstance(entry, dict) else None
            if isinstance(key, str):
                self._where.setdefault(key, deque()).append(index)

    def pop_first(self, key: str) -> Any:
        """Removes the first entry with ``key``; returns it, or _HOLE when there is none."""
        slots = self._where.get(key)
        if not slots:
            return _HOLE
        index = slots.popleft()
        entry, self._slots[index] = self._slots[index], _HOLE
        return entry

    def replace_first(self, key: str, entry: dict[str, Any]) -> Any:
        """Puts ``entry`` in place of the first entry with ``key`` (returned), or appends it
        (and returns _HOLE)."""
        slots = self._where.setdefault(key, deque())
        if slots:
            index = slots[0]
            previous, self._slots[index] = self._slots[index], entry
            return previous
        slots.append(len(self._slots))
        self._slots.append(entry)
        return _HOLE

    def append(self, key: str, entry: dict[str, Any]) -> None:
        """Appends ``entry`` under ``key``."""
        self._where.setdefault(key, deque()).append(len(self._slots))
        self._slots.append(entry)

    def entries(self) -> list[Any]:
        """The entries left, in order."""
        return [entry for entry in self._slots if entry is not _HOLE]


_HOLE: Any = object()


def _apply_device_nodes(
    spec: dict[str, Any], nodes: Sequence[DeviceNode], added: _Recorder, replaced: _Recorder
) -> None:
    linux = _ensure_dict(spec, "linux")
    devices = _ensure_list(linux, "devices")
    keyed = _KeyedList(devices, "path")
    for node in nodes:
        entry = device_entry(node, spec)
        # The reference's RemoveDevice + AddDevice: remove the first entry with this path,
        # then replace another one in place or append.
        removed = keyed.pop_first(node.path)
        if removed is not _HOLE:
            replaced.devices.append(removed)
        previous = keyed.replace_first(node.path, entry)
        if previous is not _HOLE:
            replaced.devices.append(previous)
        added.devices.append(entry)
        if node.type in ("b", "c"):
            rule = _cgroup_rule(node)
            _ensure_list(_ensure_dict(linux, "resources"), "devices").append(rule)
            added.cgroup_rules.append(rule)
    devices[:] = keyed.entries()


def _cgroup_rule(node: DeviceNode) -> dict[str, Any]:
    access = node.permissions
    if access == "":
        access = "rwm"
    elif access == NO_PERMISSIONS:
        access = ""
    rule: dict[str, Any] = {
        "allow": True,
        "type": node.type,
        "major": node.major,
        "minor": node.minor,
    }
    if access:
        rule["access"] = access
    return rule


def _apply_additional_gids(spec: dict[str, Any], gids: Sequence[int], added: _Recorder) -> None:
    user = _ensure_dict(_ensure_dict(spec, "process"), "user")
    current = _ensure_list(user, "additionalGids")
    present = {gid for gid in current if isinstance(gid, int | float | str)}
    for gid in gids:
        if gid != 0 and gid not in present:
            present.add(gid)
            current.append(gid)
            added.additional_gids.append(gid)


def _apply_net_device(
    spec: dict[str, Any], net: NetDevice, added: _Recorder, replaced: _Recorder
) -> None:
    nets = _ensure_dict(_ensure_dict(spec, "linux"), "netDevices")
    if net.host_interface_name in nets:
        replaced.net_devices.append((net.host_interface_name, nets[net.host_interface_name]))
    entry = {"name": net.name}
    nets[net.host_interface_name] = entry
    added.net_devices.append((net.host_interface_name, entry))


def _apply_mounts(
    spec: dict[str, Any], mounts: Sequence[Mount], added: _Recorder, replaced: _Recorder
) -> None:
    user_namespace = _has_user_namespace(spec)
    current = _ensure_list(spec, "mounts")
    keyed = _KeyedList(current, "destination")
    for mount in mounts:
        removed = keyed.pop_first(mount.container_path)
        if removed is not _HOLE:
            replaced.mounts.append(removed)
        entry = mount_entry(mount, user_namespace=user_namespace)
        keyed.append(mount.container_path, entry)
        added.mounts.append(entry)
    # sorted() is stable: same-depth mounts keep their order (the reference's fix for #240).
    current[:] = sorted(keyed.entries(), key=lambda m: mount_depth(str(m.get("destination", ""))))


def _idmap_option(mount: Mount) -> str:
    option = "idmap" if mount.type == "bind" else ""
    for existing in mount.options:
        if existing in ("idmap", "ridmap"):
            return ""
        if existing == "bind":
            option = "idmap"
        elif existing == "rbind":
            option = "ridmap"
    return option


def _has_user_namespace(spec: dict[str, Any]) -> bool:
    linux = spec.get("linux")
    if not isinstance(linux, dict):
        return False
    return any(
        isinstance(ns, dict) and ns.get("type") == "user" for ns in linux.get("namespaces") or ()
    )


def _process_user(spec: dict[str, Any]) -> dict[str, Any]:
    process = spec.get("process")
    user = process.get("user") if isinstance(process, dict) else None
    return user if isinstance(user, dict) else {}


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _ensure_dict(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        value = {}
        parent[key] = value
    return value


def _ensure_list(parent: dict[str, Any], key: str) -> list[Any]:
    value = parent.get(key)
    if not isinstance(value, list):
        value = []
        parent[key] = value
    return value


def _go_clean(path: str) -> str:
    """Go's ``filepath.Clean`` for slash paths (``//a`` is ``/a``, ``""`` is ``.``)."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned
