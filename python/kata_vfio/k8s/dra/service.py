"""The DRA plugin's gRPC services: plugin registration, ``DRAPlugin`` (v1 and v1beta1, one
implementation) and ``DRAResourceHealth``.

* ``Registration`` on ``<registry-dir>/<driver>-reg.sock``: the kubelet's plugin watcher calls
  ``GetInfo`` (type ``DRAPlugin``, the driver name, the endpoint ``dra.sock``, the services
  ``v1.DRAPlugin`` and ``v1beta1.DRAPlugin``) and then ``NotifyRegistrationStatus``; a refusal
  is kept so the plugin can stop with the kubelet's reason.
* ``DRAPlugin`` on ``dra.sock``: each claim of a call is prepared or unprepared by the
  :class:`~kata_vfio.k8s.dra.prepare.Preparer` within one deadline for the whole call (the
  configured one, or less when the kubelet's own deadline is nearer); a claim's failure is
  that claim's ``error``, never the call's, so the others still count.
* ``DRAResourceHealth.NodeWatchResources`` on the same socket: the full device list with
  HEALTHY, UNHEALTHY (the inventory's reasons as the message) or UNKNOWN (a prepared device
  that is gone from the host), sent at once, on every inventory change, and at least every
  ``heartbeat`` seconds so the kubelet never times a device out to Unknown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from kata_vfio.k8s.dra.checkpoint import ClaimRecord, PreparedUnit
from kata_vfio.k8s.dra.ports import ClaimRef, device_name
from kata_vfio.k8s.dra.prepare import ClaimResult, Deadline, Preparer
from kata_vfio.k8s.grpcapi import load_api
from kata_vfio.k8s.inventory import Inventory
from kata_vfio.k8s.watch import InventoryFeed

__all__ = [
    "DRA_SERVICES",
    "PLUGIN_TYPE",
    "DraPluginService",
    "HealthService",
    "RegistrationService",
    "device_health",
]

PLUGIN_TYPE = "DRAPlugin"
DRA_SERVICES = ("v1.DRAPlugin", "v1beta1.DRAPlugin")
"""The ``supported_versions`` a DRA plugin registers: the gRPC services it serves, as the
kubelet names them (``k8s.io/kubelet/pkg/apis/dra/<version>``'s ``DRAPluginService``)."""

# The kubelet's call must get its answer back: stop this long before its deadline.
_REPLY_MARGIN = 2.0
# The longest a health message may be (the proto's limit).
_MESSAGE_MAX = 1024

log = logging.getLogger(__name__)

_Health = tuple[str, str, str]  # device name, status, message


class RegistrationService:
    """``pluginregistration.Registration`` of the DRA plugin."""

    def __init__(self, driver: str, endpoint: str) -> None:
        self.driver = driver
        self.endpoint = endpoint
        self.pb: Any = load_api("pluginregistration/v1").messages
        self.registered = threading.Event()
        self.refused: str | None = None
        self.changed = threading.Event()

    def GetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Who we are and where the kubelet finds us."""
        del request, context
        log.info("kubelet asked for the plugin info (endpoint %s)", self.endpoint)
        return self.pb.PluginInfo(
            type=PLUGIN_TYPE,
            name=self.driver,
            endpoint=self.endpoint,
            supported_versions=list(DRA_SERVICES),
        )

    def NotifyRegistrationStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        """The kubelet's verdict: logged; a refusal is kept for the plugin to stop on."""
        del context
        if request.plugin_registered:
            log.info("registered with the kubelet as %s", self.driver)
            self.refused = None
            self.registered.set()
        else:
            log.error("the kubelet refused the registration of %s: %s", self.driver, request.error)
            self.refused = request.error or "no reason given"
            self.registered.clear()
        self.changed.set()
        return self.pb.RegistrationStatusResponse()


class DraPluginService:
    """``DRAPlugin`` for one API version (``dra/v1`` or ``dra/v1beta1``): both versions share
    this class and differ only in their message module."""

    def __init__(self, preparer: Preparer, api: str, deadline: float) -> None:
        self.preparer = preparer
        self.api = api
        self.deadline = deadline
        self.pb: Any = load_api(api).messages

    def NodePrepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Prepares each claim; a claim's failure is in its ``error``."""
        deadline = self._deadline(context)
        response = self.pb.NodePrepareResourcesResponse()
        for claim in request.claims:
            ref = ClaimRef(claim.namespace, claim.name, claim.uid)
            result = self.preparer.prepare(ref, deadline)
            entry = response.claims[claim.uid]
            if result.error:
                entry.error = result.error
            else:
                entry.devices.extend(self._device(unit) for unit in result.units)
            self._log("prepare", ref, result)
        return response

    def NodeUnprepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Unprepares each claim; a claim's failure is in its ``error``."""
        deadline = self._deadline(context)
        response = self.pb.NodeUnprepareResourcesResponse()
        for claim in request.claims:
            ref = ClaimRef(claim.namespace, claim.name, claim.uid)
            result = self.preparer.unprepare(ref, deadline)
            response.claims[claim.uid].error = result.error
            self._log("unprepare", ref, result)
        return response

    def _deadline(self, context: grpc.ServicerContext) -> Deadline:
        seconds = self.deadline
        remaining = context.time_remaining()
        if remaining is not None:
            seconds = min(seconds, max(remaining - _REPLY_MARGIN, 0.0))
        return Deadline(seconds)

    def _device(self, unit: PreparedUnit) -> Any:
        return self.pb.Device(
            request_names=list(unit.requests),
            pool_name=self.preparer.pool,
            device_name=unit.device,
            cdi_device_ids=[unit.cdi_id],
        )

    def _log(self, verb: str, claim: ClaimRef, result: ClaimResult) -> None:
        if result.error:
            log.warning("%s (%s) %s: %s", verb, self.api, claim, result.error)
        else:
            log.info(
                "%s (%s) %s: %s",
                verb,
                self.api,
                claim,
                ", ".join(u.cdi_id for u in result.units) or "nothing to do",
            )


def device_health(inventory: Inventory, prepared: list[ClaimRecord]) -> list[_Health]:
    """``(device, status, message)`` for every unit, by device name; a prepared device gone
    from the host is UNKNOWN. A group two resources select counts once (the first)."""
    seen: dict[str, _Health] = {}
    for unit in inventory.units:
        name = device_name(unit.id)
        if name in seen:
            continue
        if unit.healthy:
            seen[name] = (name, "HEALTHY", "")
        else:
            seen[name] = (name, "UNHEALTHY", "; ".join(unit.reasons)[:_MESSAGE_MAX])
    for record in prepared:
        for prepared_unit in record.units:
            if prepared_unit.device not in seen:
                seen[prepared_unit.device] = (
                    prepared_unit.device,
                    "UNKNOWN",
                    f"prepared for {record.claim}, but no longer found on the host",
                )
    return sorted(seen.values())


class HealthService:
    """``DRAResourceHealth`` over the inventory feed."""

    def __init__(
        self,
        feed: InventoryFeed,
        pool: str,
        stop: threading.Event,
        prepared: Callable[[], list[ClaimRecord]],
        *,
        heartbeat: float = 30.0,
    ) -> None:
        self.feed = feed
        self.pool = pool
        self.stop = stop
        self.prepared = prepared
        self.heartbeat = heartbeat
        self.pb: Any = load_api("dra-health/v1").messages

    def NodeWatchResources(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """The device list now, on every change, and every ``heartbeat`` seconds, until the
        kubelet hangs up or the plugin stops."""
        del request
        log.info("kubelet opened NodeWatchResources")
        context.add_callback(self.feed.wake)
        version = -1
        sent: list[_Health] | None = None
        while not self.stop.is_set() and context.is_active():
            before = version
            version, inventory = self.feed.wait_newer(version, self.heartbeat if sent else 0)
            if self.stop.is_set() or not context.is_active():
                break
            devices = device_health(inventory, self.prepared())
            if devices != sent or version == before:
                if devices != sent:
                    unhealthy = [d for d in devices if d[1] != "HEALTHY"]
                    log.info(
                        "health: %d devices, not healthy: %s",
                        len(devices),
                        ", ".join(f"{n} {s}" for n, s, _ in unhealthy) or "none",
                    )
                sent = devices
                yield self._response(devices)
        log.info("NodeWatchResources stream ended")

    def _response(self, devices: list[_Health]) -> Any:
        now = int(time.time())
        timeout = int(self.heartbeat * 3)
        return self.pb.NodeWatchResourcesResponse(
            devices=[
                self.pb.DeviceHealth(
                    device=self.pb.DeviceIdentifier(pool_name=self.pool, device_name=name),
                    health=self.pb.HealthStatus.Value(status),
                    last_updated_time=now,
                    health_check_timeout_seconds=timeout,
                    message=message,
                )
                for name, status, message in devices
            ]
        )
