"""What the DRA kubelet plugin needs from the API server, as two Protocols, and the names the
plugin and the API-server side share.

The kubelet gives ``NodePrepareResources`` only a claim's namespace, name and UID; the plugin
asks a :class:`ClaimSource` which devices the scheduler allocated to it
(``status.allocation.devices.results``). A :class:`SlicePublisher` keeps the node's
ResourceSlices in step with the inventory. The real implementations talk to the API server
with the ``kubernetes`` client; tests use in-memory ones.

Names, shared with the ResourceSlices:

* the pool of a node is named after the node (:func:`pool_name`), one pool per node and
  driver;
* a unit's DRA device name is its ID (the PCI address of its first selected function) made a
  DNS label: ``0000:18:00.0`` -> ``pci-0000-18-00-0`` (:func:`device_name`,
  :func:`unit_id_of`); a device name must be a lowercase RFC 1123 label of at most 63
  characters, and ``:``/``.`` are not allowed in one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kata_vfio._echo import echo
from kata_vfio.errors import InvalidInputError
from kata_vfio.k8s.inventory import Unit

__all__ = [
    "AllocatedDevice",
    "ClaimRef",
    "ClaimSource",
    "SlicePublisher",
    "check_driver_name",
    "check_node_name",
    "device_name",
    "is_dns_subdomain",
    "pool_name",
    "unit_id_of",
]

_DEVICE_PREFIX = "pci-"
_UNIT_ID = re.compile(r"([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])")
_DEVICE_NAME = re.compile(r"pci-([0-9a-f]{4})-([0-9a-f]{2})-([0-9a-f]{2})-([0-7])")


@dataclass(frozen=True, slots=True)
class ClaimRef:
    """A ResourceClaim as the kubelet names it in a prepare or unprepare call."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} (uid {self.uid})"


@dataclass(frozen=True, slots=True)
class AllocatedDevice:
    """One entry of a claim's ``status.allocation.devices.results``."""

    request: str
    """The name of the claim's request the device satisfies (may be ``<request>/<sub>``)."""
    driver: str
    pool: str
    device: str


class ClaimSource(Protocol):
    """Reads ResourceClaims from the API server."""

    def allocated(self, claim: ClaimRef) -> list[AllocatedDevice]:
        """Every device allocated to ``claim`` (all drivers and pools; the caller keeps its
        own). Raises :class:`~kata_vfio.errors.ClaimGoneError` when the claim does not exist
        or has another UID now, :class:`~kata_vfio.errors.ClaimError` when it cannot be read
        or is not allocated; both name the claim."""
        ...


class SlicePublisher(Protocol):
    """Keeps the node's ResourceSlices of the driver in step with the inventory."""

    def publish(self, units: Sequence[Unit]) -> None:
        """Makes the node's pool hold exactly ``units`` (one device each, see
        :func:`device_name`). Raises :class:`~kata_vfio.errors.KubernetesError`."""
        ...

    def delete_all(self) -> None:
        """Deletes every ResourceSlice of this driver on this node (clean shutdown)."""
        ...


# RFC 1123 DNS subdomain: dot-separated lowercase labels, at most 253 characters in all.
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")


def is_dns_subdomain(name: str, limit: int = 253) -> bool:
    """Whether ``name`` is an RFC 1123 DNS subdomain of at most ``limit`` characters (the
    API server's rule for object names, node names and DRA driver names)."""
    return len(name) <= limit and _DNS_SUBDOMAIN.fullmatch(name) is not None


def check_node_name(name: str) -> None:
    """Raises :class:`~kata_vfio.errors.InvalidInputError` unless ``name`` can be a Node's
    name (it becomes the slices' pool and a field selector)."""
    if not is_dns_subdomain(name):
        raise InvalidInputError(
            f"invalid node name {echo(name)}: not a DNS subdomain of at most 253 characters",
            hint="give the Kubernetes node's name (a lowercase DNS subdomain), e.g. from the "
            "downward API's spec.nodeName",
        )


def check_driver_name(name: str) -> None:
    """Raises :class:`~kata_vfio.errors.InvalidInputError` unless ``name`` is a DNS subdomain
    of at most 63 characters (what the API server accepts as a ResourceSlice's driver and as
    an attribute domain): the one check the plugin, the slices and the manifests share."""
    if not is_dns_subdomain(name, 63):
        raise InvalidInputError(
            f"invalid DRA driver name {echo(name)}: not a DNS subdomain of at most 63 characters",
            hint="use lowercase letters, digits, '-' and '.', e.g. vfio.kata-vfio.io",
        )


def pool_name(node_name: str) -> str:
    """The node's pool: the node's name."""
    return node_name


def device_name(unit_id: str) -> str:
    """The DRA device name of the unit ``unit_id`` (``0000:18:00.0`` -> ``pci-0000-18-00-0``).
    Raises :class:`~kata_vfio.errors.InvalidInputError` for an ID that is not a PCI address."""
    match = _UNIT_ID.fullmatch(unit_id)
    if match is None:
        raise InvalidInputError(
            f"unit ID {unit_id!r} is not a PCI address (DDDD:BB:DD.F, lowercase)",
            hint="unit IDs come from the node inventory",
        )
    return _DEVICE_PREFIX + "-".join(match.groups())


def unit_id_of(name: str) -> str | None:
    """The unit ID a DRA device name stands for; None when ``name`` is not one of ours."""
    match = _DEVICE_NAME.fullmatch(name)
    if match is None:
        return None
    domain, bus, slot, function = match.groups()
    return f"{domain}:{bus}:{slot}.{function}"
