"""The node agent's CDI specs: one per resource, one device per unit, kept in step with the
inventory.

The spec of ``nvidia.com/pgpu`` is ``<cdi-dir>/nvidia.com-pgpu.yaml`` (the file NVIDIA's
sandbox plugin writes too), kind ``nvidia.com/pgpu``, each device named by its unit ID and
carrying the unit's VFIO nodes: ``/dev/vfio/<group>`` in legacy mode, every cdev of the group
in iommufd mode. The control node (``/dev/vfio/vfio`` or ``/dev/iommu``) is a spec-level edit,
added once per injection. There is no ``all`` device: a pod gets the units the kubelet
allocated, never a wildcard.

Rules the agent relies on:

* a unit is written to the spec before it is advertised (the caller syncs first);
* a unit that is still on the host keeps its device even while Unhealthy, with its last known
  nodes when the current ones cannot be named (an iommufd unit that lost its cdev), because
  running pods may still need to resolve it; it leaves the spec only when it leaves the host;
* a write happens only when the document changes (a rescan that finds nothing new writes
  nothing), atomically (temporary file, fsync, rename; mode 0644);
* specs are kept on shutdown (running pods still need them); a resource without units has no
  spec file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kata_vfio._atomic import remove_file
from kata_vfio.cdi.encode import dump_spec
from kata_vfio.cdi.loader import load_spec
from kata_vfio.cdi.model import ContainerEdits, Device, DeviceNode, Spec
from kata_vfio.cdi.registry import Registry, spec_file_name
from kata_vfio.cdi.validate import validate_spec
from kata_vfio.cdi.versions import minimum_version
from kata_vfio.errors import KataVfioError
from kata_vfio.k8s.inventory import (
    IOMMUFD_NODE,
    VFIO_CONTAINER_NODE,
    Inventory,
    IommuMode,
    ResourceUnits,
)

__all__ = [
    "DEFAULT_CDI_DIR",
    "CdiSpecWriter",
    "SpecChange",
    "remove_temporaries",
    "resource_spec",
    "vfio_spec",
]

DEFAULT_CDI_DIR = "/var/run/cdi"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SpecChange:
    """What one sync did to one resource's spec file."""

    resource: str
    path: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    deleted: bool = False


def resource_spec(
    units: ResourceUnits, mode: IommuMode, previous: Spec | None = None
) -> Spec | None:
    """The spec of one resource (None when no unit has nodes). ``previous`` (the spec as last
    written) supplies the nodes of units that are present but cannot name theirs now."""
    devices = []
    for unit in units.units:
        paths = unit.nodes
        if not paths and previous is not None:
            old = previous.device(unit.id)
            paths = () if old is None else tuple(n.path for n in old.container_edits.device_nodes)
        if paths:
            devices.append((unit.id, paths))
    if not devices:
        return None
    return vfio_spec(units.resource.name, devices, mode)


def vfio_spec(kind: str, devices: Sequence[tuple[str, Sequence[str]]], mode: IommuMode) -> Spec:
    """A validated spec of ``kind`` whose devices (``(name, node paths)``) carry VFIO nodes,
    with the mode's control node (``/dev/vfio/vfio`` or ``/dev/iommu``) as a spec-level edit.
    Raises :class:`~kata_vfio.errors.CdiSpecError` for an invalid kind or name."""
    control = VFIO_CONTAINER_NODE if mode == "legacy" else IOMMUFD_NODE
    spec = Spec(
        version="",
        kind=kind,
        devices=tuple(
            Device(
                name=name,
                container_edits=ContainerEdits(
                    device_nodes=tuple(DeviceNode(path=p) for p in paths)
                ),
            )
            for name, paths in devices
        ),
        container_edits=ContainerEdits(device_nodes=(DeviceNode(path=control),)),
    )
    spec = dataclasses.replace(spec, version=minimum_version(spec))
    validate_spec(spec, source=f"CDI spec for {kind}")
    return spec


class CdiSpecWriter:
    """Writes each resource's spec into ``cdi_dir`` when it changes (see the module docstring).

    Not thread-safe: one agent loop owns it.
    """

    def __init__(self, cdi_dir: str = DEFAULT_CDI_DIR) -> None:
        self.cdi_dir = cdi_dir
        self._registry = Registry([cdi_dir])
        self._written: dict[str, tuple[Spec | None, bytes | None]] = {}

    def path_for(self, resource: str) -> str:
        """Where the spec of ``resource`` lives."""
        vendor, _, cls = resource.partition("/")
        return os.path.join(self.cdi_dir, spec_file_name(vendor, cls) + ".yaml")

    def sync(self, inventory: Inventory) -> list[SpecChange]:
        """Brings every resource's spec file in line with ``inventory``; returns the changes
        (empty when nothing changed). Raises :class:`HostIOError` when a write fails (the
        old file then stays as it was)."""
        changes = []
        for units in inventory.resources:
            change = self._sync_one(units, inventory.mode)
            if change is not None:
                changes.append(change)
        return changes

    def current(self) -> Mapping[str, Spec | None]:
        """The spec last written (or found) per resource."""
        return {name: spec for name, (spec, _) in self._written.items()}

    def _sync_one(self, units: ResourceUnits, mode: IommuMode) -> SpecChange | None:
        name = units.resource.name
        path = self.path_for(name)
        if name not in self._written:
            remove_temporaries(path)
            self._written[name] = self._read_existing(path)
        old_spec, old_bytes = self._written[name]
        spec = resource_spec(units, mode, old_spec)
        if spec is not None and spec == old_spec:
            return None  # the usual rescan: nothing to encode, nothing to write
        data = None if spec is None else dump_spec(spec)
        if data == old_bytes:
            return None
        if spec is None:
            remove_file(path)
            self._written[name] = (None, None)
            return SpecChange(name, path, removed=_names(old_spec), deleted=True)
        self._registry.write_spec(spec)
        self._written[name] = (spec, data)
        before = {d.name: d for d in old_spec.devices} if old_spec else {}
        after = {d.name: d for d in spec.devices}
        return SpecChange(
            name,
            path,
            added=tuple(n for n in after if n not in before),
            removed=tuple(n for n in before if n not in after),
            changed=tuple(n for n in after if n in before and before[n] != after[n]),
        )

    @staticmethod
    def _read_existing(path: str) -> tuple[Spec | None, bytes | None]:
        """The spec a previous run left (its nodes outlive a restart); an unreadable or invalid
        file is replaced, and said so."""
        if not os.path.lexists(path):
            return None, None
        try:
            spec = load_spec(path)
        except KataVfioError as exc:
            log.warning("replacing the CDI spec %s: %s", path, exc)
            return None, b""
        return spec, dump_spec(spec)


def remove_temporaries(path: str) -> None:
    """Removes what a writer killed mid-write left (``.<name>.XXXX.tmp``, which CDI never
    reads); the caller must be the only writer of this file name."""
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for entry in names:
        if entry.startswith(f".{base}.") and entry.endswith(".tmp"):
            remove_file(os.path.join(directory, entry))
            log.info("removed %s, left by an interrupted write", os.path.join(directory, entry))


def _names(spec: Spec | None) -> tuple[str, ...]:
    return () if spec is None else tuple(d.name for d in spec.devices)
