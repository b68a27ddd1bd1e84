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
    "device_name",
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


# A DRA driver name is a DNS subdomain of at most 63 characters (ResourceSlice spec.driver).
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DRIVER_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")


def check_driver_name(name: str) -> None:
    """Raises :class:`~kata_vfio.errors.InvalidInputError` unless ``name`` is a DNS subdomain
    of at most 63 characters (what the API server accepts as a ResourceSlice's driver and as
    an attribute domain): the one check the plugin, the slices and the manifests share."""
    if len(name) > 63 or not _DRIVER_NAME.fullmatch(name):
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
