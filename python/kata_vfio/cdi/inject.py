"""Injection of CDI edits into an OCI runtime spec, all or nothing.

The steps are ordered so that nothing is written before everything is known to work: the OCI
spec's shape is checked, every device node is completed from the host, and only then is a deep
copy of the spec edited. The caller's spec is never touched; on any error it is exactly as it
was, and the registry's specs are immutable records, so an injection cannot change them either.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kata_vfio.cdi.edits import OciChanges, apply_edits, merge_edits
from kata_vfio.cdi.hostdev import (
    DeviceLookup,
    HostDevice,
    NodeCompletionError,
    complete_device_node,
    lstat_device,
)
from kata_vfio.cdi.model import ContainerEdits
from kata_vfio.errors import CdiInjectionError
from kata_vfio.oci import check_oci_spec

__all__ = ["InjectionResult", "inject_edits", "is_applied"]


@dataclass(frozen=True, slots=True)
class InjectionResult:
    """The edited OCI spec (a new dict), the devices injected, and what changed."""

    spec: dict[str, Any]
    devices: tuple[str, ...]
    added: OciChanges
    replaced: OciChanges

    def to_document(self) -> dict[str, Any]:
        """A JSON-ready summary of the changes (without the spec itself)."""
        return {
            "devices": list(self.devices),
            "added": self.added.to_document(),
            "replaced": self.replaced.to_document(),
        }


def inject_edits(
    oci_spec: Mapping[str, Any],
    edits: Sequence[ContainerEdits],
    *,
    devices: Sequence[str] = (),
    lookup: DeviceLookup | None = None,
    source: str = "OCI spec",
) -> InjectionResult:
    """Applies ``edits`` (in order) to a copy of ``oci_spec``.

    Device nodes that do not fully describe themselves are completed with ``lookup`` (``lstat``
    of the host path by default). Raises :class:`OciSpecError` for a malformed spec and
    :class:`CdiInjectionError` when a node cannot be completed; ``oci_spec`` is unchanged.
    """
    check_oci_spec(oci_spec, source=source, require_version=False)
    merged = merge_edits(edits)
    memo = _MemoLookup(lookup or lstat_device)
    try:
        nodes = tuple(complete_device_node(node, memo) for node in merged.device_nodes)
    except NodeCompletionError as exc:
        raise CdiInjectionError(
            f"failed to inject devices: {exc}",
            hint="check that the device node exists on this host (is the device bound to "
            "vfio-pci?), or give type, major and minor in the spec",
        ) from exc
    complete = dataclasses.replace(merged, device_nodes=nodes)
    edited = copy.deepcopy(dict(oci_spec))
    added, replaced = apply_edits(edited, complete)
    return InjectionResult(edited, tuple(devices), added, replaced)


class _MemoLookup:
    """Asks the host once per path within one injection."""

    def __init__(self, lookup: DeviceLookup) -> None:
        self._lookup = lookup
        self._seen: dict[str, HostDevice | BaseException] = {}

    def __call__(self, path: str) -> HostDevice:
        if path not in self._seen:
            try:
                self._seen[path] = self._lookup(path)
            except (OSError, ValueError) as exc:
                self._seen[path] = exc
        found = self._seen[path]
        if isinstance(found, BaseException):
            raise found
        return found


def is_applied(oci_spec: Mapping[str, Any], changes: OciChanges) -> bool:
    """Whether every entry of ``changes`` (an injection's ``added``) is already in
    ``oci_spec``: injecting it again would only repeat entries (a cgroup rule, a hook), so a
    re-run that wants to change nothing skips it."""
    process = _dict(oci_spec.get("process"))
    linux = _dict(oci_spec.get("linux"))
    hooks = _dict(oci_spec.get("hooks"))
    present: list[tuple[Sequence[Any], Any]] = [
        (_list(process.get("env")), changes.env),
        (_list(linux.get("devices")), changes.devices),
        (_list(_dict(linux.get("resources")).get("devices")), changes.cgroup_rules),
        (_list(oci_spec.get("mounts")), changes.mounts),
        (_list(_dict(process.get("user")).get("additionalGids")), changes.additional_gids),
    ]
    if not all(entry in entries for entries, wanted in present for entry in wanted):
        return False
    net = _dict(linux.get("netDevices"))
    if any(net.get(host) != entry for host, entry in changes.net_devices):
        return False
    if any(hook not in _list(hooks.get(name)) for name, hook in changes.hooks):
        return False
    return changes.intel_rdt is None or linux.get("intelRdt") == changes.intel_rdt


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list) else []
