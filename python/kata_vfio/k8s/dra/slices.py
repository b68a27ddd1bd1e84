"""The node's ResourceSlices (``resource.k8s.io/v1``): one DRA device per Healthy allocatable
unit, kept in step with the inventory through the API server.

:func:`build_slices` is pure: units in, ResourceSlice documents (the API's JSON) out.
:class:`SlicePublisher` lists the node's slices of the driver, and writes only when they differ
from what the units call for; a change bumps the pool's generation in every slice of the pool,
as the API asks of a driver (consumers use only the highest generation and wait until they
have seen ``resourceSliceCount`` slices of it).

A device carries the standard attributes ``resource.kubernetes.io/pciBusID`` (the unit's
primary function, ``DDDD:BB:DD.F``) and ``resource.kubernetes.io/pcieRoot`` (the host bridge,
``pci<domain>:<bus>`` as sysfs names it), and, under the driver's domain: ``resource``,
``vendorID``, ``deviceID``, ``class`` (hex strings of the primary function), ``numaNode``,
``iommuGroup``, ``functionCount`` (ints), ``functions`` (the group's addresses joined by commas,
left out when longer than the API's 64 characters), ``driver`` (the vfio driver a prepare
binds the primary function to, vfio-pci or a variant: the unit's ``passthrough_driver``, left
out when not known; never the current driver, which changes at every prepare and would
rewrite the slices each time); the capacity ``largestBar`` is the largest memory BAR of the
group in bytes. An Unhealthy unit is left out (and logged): the scheduler must not pick it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import kubernetes.client
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from kata_vfio.errors import InvalidInputError, KubernetesError
from kata_vfio.k8s.dra.apiclient import (
    REQUEST_TIMEOUT,
    api_failure,
    api_status,
    from_json,
    to_json,
)
from kata_vfio.k8s.dra.ports import check_driver_name, check_node_name, device_name, pool_name
from kata_vfio.k8s.inventory import Unit

__all__ = [
    "MAX_DEVICES_PER_SLICE",
    "PCIE_ROOT",
    "PCI_BUS_ID",
    "SlicePublisher",
    "build_slices",
    "check_driver_name",
    "device_entry",
    "quantity",
]

_log = logging.getLogger(__name__)

MAX_DEVICES_PER_SLICE = 128
"""The API's limit on the devices of one ResourceSlice."""
PCI_BUS_ID = "resource.kubernetes.io/pciBusID"
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"

_API_VERSION = "resource.k8s.io/v1"
_MAX_VALUE = 64  # characters of a string attribute
_ROOT = re.compile(r"pci[0-9a-f]{4}:[0-9a-f]{2}")
_BINARY_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_ATTEMPTS = 3  # a publish that meets another writer lists again, this often


def quantity(size: int) -> str:
    """``size`` bytes as a Kubernetes quantity in the API server's canonical form (the largest
    binary suffix that divides it: 16 MiB -> ``16Mi``), so a slice read back compares equal."""
    if size < 0:
        raise InvalidInputError(f"a size cannot be negative: {size}")
    exponent = 0
    while size and exponent < len(_BINARY_SUFFIXES) - 1 and size % 1024 == 0:
        size //= 1024
        exponent += 1
    return f"{size}{_BINARY_SUFFIXES[exponent]}"


def device_entry(unit: Unit, driver: str) -> dict[str, Any]:
    """The ``spec.devices[]`` entry of ``unit`` (see the module docstring)."""
    primary = next((f for f in unit.functions if str(f.bdf) == unit.id), None)
    attributes: dict[str, dict[str, Any]] = {PCI_BUS_ID: {"string": unit.id}}
    if _ROOT.fullmatch(unit.locality.root_complex):
        attributes[PCIE_ROOT] = {"string": unit.locality.root_complex}
    mine = {
        "resource": {"string": unit.resource} if len(unit.resource) <= _MAX_VALUE else None,
        "iommuGroup": {"int": unit.group},
        "functionCount": {"int": len(unit.functions)},
        "numaNode": None if unit.locality.numa_node is None else {"int": unit.locality.numa_node},
    }
    functions = ",".join(str(b) for b in unit.bdfs)
    if len(functions) <= _MAX_VALUE:
        mine["functions"] = {"string": functions}
    if primary is not None:
        mine["vendorID"] = {"string": f"{primary.vendor:04x}"}
        mine["deviceID"] = {"string": f"{primary.device:04x}"}
        mine["class"] = {"string": f"{primary.class_code:06x}"}
    if unit.passthrough_driver is not None:
        mine["driver"] = {"string": unit.passthrough_driver}
    attributes.update({f"{driver}/{k}": v for k, v in sorted(mine.items()) if v is not None})
    entry: dict[str, Any] = {"name": device_name(unit.id), "attributes": attributes}
    if unit.largest_bar is not None:
        entry["capacity"] = {f"{driver}/largestBar": {"value": quantity(unit.largest_bar)}}
    return entry


def build_slices(
    units: Sequence[Unit],
    *,
    driver: str,
    node: str,
    pool: str | None = None,
    generation: int = 1,
    owner: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The node's ResourceSlices for the Healthy ``units``, by device name, at most
    :data:`MAX_DEVICES_PER_SLICE` devices each (always one slice: an empty pool is published
    as such). ``owner`` is an ``ownerReferences`` entry (the Node). Each document has
    ``metadata.generateName``; :class:`SlicePublisher` gives it the name of a slice it
    replaces."""
    check_driver_name(driver)
    check_node_name(node)
    devices: dict[str, dict[str, Any]] = {}
    for unit in units:
        if unit.healthy:
            entry = device_entry(unit, driver)
            devices.setdefault(entry["name"], entry)
    ordered = [devices[name] for name in sorted(devices)]
    chunks = [
        ordered[i : i + MAX_DEVICES_PER_SLICE]
        for i in range(0, len(ordered), MAX_DEVICES_PER_SLICE)
    ] or [[]]
    metadata: dict[str, Any] = {"generateName": _generate_name(node, driver)}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return [
        {
            "apiVersion": _API_VERSION,
            "kind": "ResourceSlice",
            "metadata": dict(metadata),
            "spec": {
                "driver": driver,
                "nodeName": node,
                "pool": {
                    "name": pool or pool_name(node),
                    "generation": generation,
                    "resourceSliceCount": len(chunks),
                },
                "devices": chunk,
            },
        }
        for chunk in chunks
    ]


def _generate_name(node: str, driver: str) -> str:
    # The API server appends 5 characters to a generateName; keep the whole under 253.
    return f"{node}-{driver}"[:247].rstrip(".-") + "-"


class SlicePublisher:
    """Publishes the units of ``node`` as the ResourceSlices of ``driver`` in pool ``pool``
    (the node's name by default) through ``api_client``."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        driver: str,
        node: str,
        pool: str | None = None,
        *,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        check_driver_name(driver)
        check_node_name(node)
        self.driver = driver
        self.node = node
        self.pool = pool or pool_name(node)
        self._api_client = api_client
        self._resource = kubernetes.client.ResourceV1Api(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._timeout = timeout
        self._owner: dict[str, Any] | None = None
        self._omitted: dict[str, tuple[str, ...]] = {}

    def publish(self, units: Sequence[Unit]) -> None:
        """Makes the node's slices of the driver hold exactly the Healthy ``units``; writes
        nothing when they already do. Raises :class:`KubernetesError` naming the call."""
        self._log_omitted(units)
        owner = self._node_owner()
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                self._sync(units, owner)
                return
            except ApiException as exc:
                code, reason, _ = api_status(exc)
                if code != 409 or attempt == _ATTEMPTS:
                    raise self._failure("publish ResourceSlices", exc) from None
                _log.info("ResourceSlices of %s changed meanwhile (%s); again", self.node, reason)
            except (urllib3.exceptions.HTTPError, ValueError) as exc:
                raise self._failure("publish ResourceSlices", exc) from None

    def delete_all(self) -> None:
        """Deletes every ResourceSlice of this driver on this node (a clean shutdown with
        ``--cleanup``); a slice already gone is fine."""
        try:
            existing = self._list()
            for item in existing:
                self._delete(item["metadata"]["name"])
        except (ApiException, urllib3.exceptions.HTTPError, ValueError) as exc:
            raise self._failure("delete ResourceSlices", exc) from None
        _log.info("deleted %d ResourceSlice(s) of %s on %s", len(existing), self.driver, self.node)

    def _sync(self, units: Sequence[Unit], owner: dict[str, Any] | None) -> None:
        existing = sorted(self._list(), key=_slice_order)
        generations = {_dig(s, "spec", "pool", "generation") for s in existing}
        current = max((g for g in generations if isinstance(g, int)), default=0)
        desired = self._build(units, owner, max(current, 1))
        pool_changed = len(generations) > 1 or [_spec(s) for s in existing] != [
            _spec(s) for s in desired
        ]
        if pool_changed:
            desired = self._build(units, owner, current + 1)
        writes = 0
        for old, new in zip(existing, desired, strict=False):  # the longer tail is below
            # Without an owner (the Node could not be read) a slice keeps the one it has.
            if pool_changed or (owner is not None and _owners(old) != [owner]):
                new["metadata"] = {**old["metadata"], **new["metadata"]}
                new["metadata"].pop("generateName", None)
                self._resource.replace_resource_slice(
                    old["metadata"]["name"], self._model(new), _request_timeout=self._timeout
                )
                writes += 1
        for new in desired[len(existing) :]:
            self._resource.create_resource_slice(self._model(new), _request_timeout=self._timeout)
            writes += 1
        for old in existing[len(desired) :]:
            self._delete(old["metadata"]["name"])
            writes += 1
        if writes:
            devices = sum(len(s["spec"]["devices"]) for s in desired)
            _log.info(
                "published %d device(s) of %s on %s in %d ResourceSlice(s), pool %s "
                "generation %d (%d write(s))",
                devices,
                self.driver,
                self.node,
                len(desired),
                self.pool,
                desired[0]["spec"]["pool"]["generation"],
                writes,
            )

    def _build(
        self, units: Sequence[Unit], owner: dict[str, Any] | None, generation: int
    ) -> list[dict[str, Any]]:
        return build_slices(
            units,
            driver=self.driver,
            node=self.node,
            pool=self.pool,
            generation=generation,
            owner=owner,
        )

    def _model(self, document: dict[str, Any]) -> Any:
        return from_json(self._api_client, document, "V1ResourceSlice")

    def _list(self) -> list[dict[str, Any]]:
        found = self._resource.list_resource_slice(
            field_selector=f"spec.nodeName={self.node},spec.driver={self.driver}",
            _request_timeout=self._timeout,
        )
        items = to_json(self._api_client, found).get("items") or []
        # Another pool of this driver on this node is not ours to change.
        return [i for i in items if _dig(i, "spec", "pool", "name") == self.pool]

    def _delete(self, name: str) -> None:
        try:
            self._resource.delete_resource_slice(name, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _node_owner(self) -> dict[str, Any] | None:
        """The Node as the slices' owner (the garbage collector deletes them with the Node);
        None, logged, when the Node cannot be read: the slices are published all the same."""
        if self._owner is None:
            try:
                node = self._core.read_node(self.node, _request_timeout=self._timeout)
                uid = to_json(self._api_client, node)["metadata"]["uid"]
            except (ApiException, urllib3.exceptions.HTTPError, ValueError, KeyError) as exc:
                _log.warning(
                    "%s; publishing without an owner reference",
                    api_failure(f"read Node {self.node}", exc),
                )
                return None
            self._owner = {
                "apiVersion": "v1",
                "kind": "Node",
                "name": self.node,
                "uid": uid,
                "controller": True,
            }
        return self._owner

    def _log_omitted(self, units: Sequence[Unit]) -> None:
        omitted = {u.id: u.reasons for u in units if not u.healthy}
        if omitted != self._omitted:
            for unit_id, reasons in sorted(omitted.items()):
                _log.warning("unit %s not published (Unhealthy): %s", unit_id, "; ".join(reasons))
            self._omitted = omitted

    def _failure(self, what: str, exc: BaseException) -> KubernetesError:
        return api_failure(f"{what} of {self.driver} on node {self.node}", exc)


def _dig(document: Any, *path: str) -> Any:
    for key in path:
        document = document.get(key) if isinstance(document, dict) else None
    return document


def _spec(document: dict[str, Any]) -> dict[str, Any]:
    """What of a slice's spec the driver sets (an API server may add defaults of its own)."""
    spec = document.get("spec") or {}
    return {
        "driver": spec.get("driver"),
        "nodeName": spec.get("nodeName"),
        "pool": spec.get("pool"),
        "devices": spec.get("devices") or [],
    }


def _owners(document: dict[str, Any]) -> list[Any]:
    return list(_dig(document, "metadata", "ownerReferences") or [])


def _slice_order(document: dict[str, Any]) -> tuple[str, str]:
    # A stable order, so that the same slice keeps the same devices from one publish to the
    # next: the first device's name, then the slice's.
    devices = _dig(document, "spec", "devices") or [{}]
    return str(devices[0].get("name", "")), str(_dig(document, "metadata", "name") or "")
