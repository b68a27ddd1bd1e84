"""CDI spec versions: one table of every known version and the features that require it
(:data:`SPEC_VERSIONS`), as the reference's ``specs-go/version.go`` keeps them, so a new spec
version is one entry. A feature counts at spec level or in any device:

===========  ============================================================================
1.1.0        ``netDevices``; ``intelRdt.schemata`` present (even ``[]``) or
             ``intelRdt.enableMonitoring: true``
1.0.0, 0.8.0 Go API changes only, never required
0.7.0        ``intelRdt`` present (even ``{}``); ``additionalGids`` non-empty (even ``[0]``)
0.6.0        spec or device ``annotations``; a ``.`` in the class part of ``kind``
0.5.0        a device name starting with a digit; any ``hostPath`` (even equal to ``path``)
0.4.0        a mount ``type``
0.3.0        the baseline; 0.1.0 and 0.2.0 are known but always too old
===========  ============================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from kata_vfio.cdi.goquote import go_quote
from kata_vfio.cdi.model import ContainerEdits, Spec

__all__ = [
    "CURRENT_VERSION",
    "EARLIEST_VERSION",
    "KNOWN_VERSIONS",
    "SPEC_VERSIONS",
    "Requirement",
    "minimum_version",
    "normalize_version",
    "version_problem",
]

Requirement = Callable[[Spec], bool]
"""Whether a document uses a feature of one spec version."""

EARLIEST_VERSION = "0.3.0"
_DIGITS = frozenset("0123456789")


def normalize_version(version: str) -> str:
    """Drops one optional leading ``v`` (``v1.0.0`` is ``1.0.0``)."""
    return version[1:] if version.startswith("v") else version


def minimum_version(spec: Spec) -> str:
    """The oldest spec version that supports every feature ``spec`` uses: the newest version
    whose features it uses, else :data:`EARLIEST_VERSION`."""
    for version in reversed(KNOWN_VERSIONS):
        requires = SPEC_VERSIONS[version]
        if requires is not None and requires(spec):
            return version
    return EARLIEST_VERSION


def version_problem(spec: Spec) -> str | None:
    """Why ``spec.version`` is not acceptable for this document, or None."""
    declared = normalize_version(spec.version)
    if declared not in _ORDER:
        return f"invalid version {go_quote(spec.version)}"
    required = minimum_version(spec)
    if _ORDER[declared] < _ORDER[required]:
        return f"the spec version must be at least v{required}"
    return None


def _all_edits(spec: Spec) -> Iterator[ContainerEdits]:
    yield spec.container_edits
    for device in spec.devices:
        yield device.container_edits


def _requires_1_1_0(spec: Spec) -> bool:
    for edits in _all_edits(spec):
        if edits.net_devices:
            return True
        rdt = edits.intel_rdt
        if rdt is not None and (rdt.schemata is not None or rdt.enable_monitoring):
            return True
    return False


def _requires_0_7_0(spec: Spec) -> bool:
    return any(edits.intel_rdt is not None or edits.additional_gids for edits in _all_edits(spec))


def _requires_0_6_0(spec: Spec) -> bool:
    if spec.annotations or any(device.annotations for device in spec.devices):
        return True
    _, sep, cls = spec.kind.partition("/")
    return bool(sep) and "." in cls


def _requires_0_5_0(spec: Spec) -> bool:
    if any(device.name[:1] in _DIGITS for device in spec.devices):
        return True
    return any(node.host_path for edits in _all_edits(spec) for node in edits.device_nodes)


def _requires_0_4_0(spec: Spec) -> bool:
    return any(mount.type for edits in _all_edits(spec) for mount in edits.mounts)


SPEC_VERSIONS: Mapping[str, Requirement | None] = {
    "0.1.0": None,
    "0.2.0": None,
    "0.3.0": None,
    "0.4.0": _requires_0_4_0,
    "0.5.0": _requires_0_5_0,
    "0.6.0": _requires_0_6_0,
    "0.7.0": _requires_0_7_0,
    "0.8.0": None,
    "1.0.0": None,
    "1.1.0": _requires_1_1_0,
}
"""Every released spec version, oldest first, with what requires it (None: nothing a
document can use; the version changed the Go API only, or predates the earliest one)."""

KNOWN_VERSIONS: tuple[str, ...] = tuple(SPEC_VERSIONS)
CURRENT_VERSION = KNOWN_VERSIONS[-1]
_ORDER = {version: index for index, version in enumerate(KNOWN_VERSIONS)}
