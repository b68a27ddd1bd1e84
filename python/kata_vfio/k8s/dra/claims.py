"""Reading a ResourceClaim's allocation from the API server: the :class:`ClaimSource` of the
kubelet plugin, with the official client (``ResourceV1Api.read_namespaced_resource_claim``).

The kubelet names a claim by namespace, name and UID. The UID is checked: a claim deleted and
created again under the same name is another claim, and its devices are not the ones the
kubelet asked to prepare. Every call is bounded by :data:`~.apiclient.REQUEST_TIMEOUT`, so a
slow API server fails the kubelet's call with a reason instead of running into its 45 s.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import kubernetes.client
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from kata_vfio._echo import echo
from kata_vfio.errors import ClaimError, ClaimGoneError
from kata_vfio.k8s.dra.apiclient import REQUEST_TIMEOUT, api_failure, to_json
from kata_vfio.k8s.dra.ports import AllocatedDevice, ClaimRef, is_dns_subdomain

__all__ = ["ClaimReader", "allocated_devices"]

_log = logging.getLogger(__name__)

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class ClaimReader:
    """Reads claims through ``api_client``; ``driver`` and ``pool``, when given, keep only
    the results of that driver and pool (by default every result is returned, as
    :class:`~.ports.ClaimSource` says)."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        driver: str | None = None,
        pool: str | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._api_client = api_client
        self._api = kubernetes.client.ResourceV1Api(api_client)
        self._driver = driver
        self._pool = pool
        self._timeout = timeout

    def allocated(self, claim: ClaimRef) -> list[AllocatedDevice]:
        """The devices the scheduler allocated to ``claim``
        (``status.allocation.devices.results``).

        Raises :class:`ClaimGoneError` when the API server has no such claim (404) or the
        name now belongs to a claim with another UID, and :class:`ClaimError` when the claim
        cannot be read or is not allocated; each names the claim.
        """
        _check_ref(claim)
        what = f"read ResourceClaim {claim}"
        try:
            found = self._api.read_namespaced_resource_claim(
                claim.name, claim.namespace, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                raise ClaimGoneError(
                    f"ResourceClaim {claim} no longer exists",
                    hint="its devices are released when the kubelet unprepares it",
                ) from None
            raise api_failure(what, exc, ClaimError) from None
        except (urllib3.exceptions.HTTPError, ValueError) as exc:
            raise api_failure(what, exc, ClaimError) from None
        document = to_json(self._api_client, found)
        devices = allocated_devices(claim, document)
        kept = [
            d
            for d in devices
            if (self._driver is None or d.driver == self._driver)
            and (self._pool is None or d.pool == self._pool)
        ]
        _log.info(
            "ResourceClaim %s: %d allocated device(s), %d of this driver and pool",
            claim,
            len(devices),
            len(kept),
        )
        return kept


def allocated_devices(claim: ClaimRef, document: Any) -> list[AllocatedDevice]:
    """The allocation results of a ResourceClaim given as its JSON document (the API's field
    names). Raises :class:`ClaimGoneError` when its UID is not ``claim.uid``, and
    :class:`ClaimError` when it is not allocated or a result lacks a field."""
    metadata = _mapping(document, "metadata")
    uid = metadata.get("uid")
    if uid != claim.uid:
        raise ClaimGoneError(
            f"ResourceClaim {claim} was deleted and created again: it now has uid {uid}",
            hint="the kubelet prepares the new claim in a call of its own",
        )
    allocation = _mapping(_mapping(document, "status"), "allocation")
    if not allocation:
        raise ClaimError(
            f"ResourceClaim {claim} is not allocated",
            hint="the scheduler allocates a claim before the kubelet prepares it; "
            "see `kubectl describe resourceclaim`",
        )
    results = _mapping(allocation, "devices").get("results") or []
    if not isinstance(results, list):
        raise ClaimError(f"ResourceClaim {claim}: status.allocation.devices.results is no list")
    devices = []
    for index, result in enumerate(results):
        fields = {}
        for key in ("request", "driver", "pool", "device"):
            value = result.get(key) if isinstance(result, dict) else None
            if not isinstance(value, str) or not value:
                raise ClaimError(
                    f"ResourceClaim {claim}: status.allocation.devices.results[{index}] "
                    f"has no {key}",
                    hint="the API server wrote an allocation this driver does not understand",
                )
            fields[key] = value
        devices.append(AllocatedDevice(**fields))
    return devices


def _mapping(document: Any, key: str) -> dict[str, Any]:
    value = document.get(key) if isinstance(document, dict) else None
    return value if isinstance(value, dict) else {}


def _check_ref(claim: ClaimRef) -> None:
    # They become a URL path: refuse what is no Kubernetes name rather than quote it.
    if not _DNS_LABEL.fullmatch(claim.namespace):
        raise ClaimError(
            f"ResourceClaim namespace {echo(claim.namespace)} is not a DNS label",
            hint="the kubelet sent a claim reference that no API object can have",
        )
    if not is_dns_subdomain(claim.name):
        raise ClaimError(
            f"ResourceClaim name {echo(claim.name)} is not a DNS subdomain",
            hint="the kubelet sent a claim reference that no API object can have",
        )
