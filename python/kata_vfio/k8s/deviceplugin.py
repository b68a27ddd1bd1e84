"""The kubelet device plugin (``deviceplugin/v1beta1``) of one resource: its gRPC service, its
server on a unix socket in the plugin directory, and its registration with the kubelet.

Every call answers from the last published inventory, in memory: ``Allocate`` runs inside pod
admission, one pod at a time on the whole node (kubernetes#117435), so it never scans, binds,
writes or waits on anything but a dictionary lookup. Its answer for each container:

* ``cdi_devices``: the fully qualified CDI names (``nvidia.com/pgpu=0000:18:00.0``), which the
  kubelet passes to the runtime (CRI ``CDIDevices``, or ``cdi.k8s.io/`` annotations for older
  runtimes) and Kata resolves in the agent's spec;
* ``envs``: ``PCI_RESOURCE_<RESOURCE>`` = the PCI addresses of every function of every unit,
  comma-separated (the variable KubeVirt's plugin sets);
* ``devices`` (DeviceSpecs: the VFIO nodes and the control node) only when asked for, for
  runtimes without CDI.

An ID the inventory does not know, or a unit that is Unhealthy, fails the whole call with a
message naming it: a silent skip would start a pod without its device.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from kata_vfio._echo import echo
from kata_vfio.errors import KubernetesError
from kata_vfio.k8s.grpcapi import load_api
from kata_vfio.k8s.inventory import IOMMUFD_NODE, VFIO_CONTAINER_NODE, Inventory, Unit
from kata_vfio.k8s.preferred import preferred_allocation
from kata_vfio.k8s.resources import ResourceSpec
from kata_vfio.k8s.unixgrpc import UnixGrpcServer, rpc_error
from kata_vfio.k8s.watch import InventoryFeed

__all__ = [
    "API_VERSION",
    "DEFAULT_PLUGIN_DIR",
    "KUBELET_SOCKET",
    "DevicePluginService",
    "PluginServer",
    "socket_name",
]

DEFAULT_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET = "kubelet.sock"
API_VERSION = "v1beta1"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
# A ListAndWatch stream wakes on a change, when the kubelet hangs up (an RPC callback) and at
# shutdown; this is only the longest it sleeps otherwise.
_STREAM_TICK = 30.0

log = logging.getLogger(__name__)

_Device = tuple[str, bool, int | None]


def socket_name(resource: ResourceSpec) -> str:
    """``kata-vfio-nvidia.com-pgpu.sock``: the plugin's socket file in the plugin directory."""
    return f"kata-vfio-{resource.vendor}-{resource.cls}.sock"


class DevicePluginService:
    """The ``DevicePlugin`` service of one resource (the method names are the proto's)."""

    def __init__(
        self,
        resource: ResourceSpec,
        feed: InventoryFeed,
        stop: threading.Event,
        *,
        device_specs: bool = False,
    ) -> None:
        self.resource = resource
        self.feed = feed
        self.stop = stop
        self.device_specs = device_specs
        self.pb: Any = load_api("deviceplugin/v1beta1").messages

    # --- the service ---------------------------------------------------------------------

    def GetDevicePluginOptions(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Preferred allocation is available; no PreStartContainer call is needed."""
        del request, context
        return self.options()

    def ListAndWatch(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """Every unit with its health and NUMA node; again on every change, until the kubelet
        hangs up or the plugin stops."""
        del request
        version = -1
        sent: list[_Device] | None = None
        log.info("%s: kubelet opened ListAndWatch", self.resource.name)
        context.add_callback(self.feed.wake)
        while not self.stop.is_set() and context.is_active():
            version, inventory = self.feed.wait_newer(version, _STREAM_TICK)
            devices = self._devices(inventory)
            if devices == sent:
                continue
            sent = devices
            healthy = sum(1 for _, ok, _ in devices if ok)
            log.info(
                "%s: ListAndWatch sends %d devices (%d healthy)",
                self.resource.name,
                len(devices),
                healthy,
            )
            yield self.pb.ListAndWatchResponse(devices=[self._device(d) for d in devices])
        log.info("%s: ListAndWatch stream ended", self.resource.name)

    def Allocate(self, request: Any, context: grpc.ServicerContext) -> Any:
        """The CDI names, environment and (optionally) device nodes of each container's units;
        an unknown or Unhealthy ID aborts the call naming it."""
        inventory = self.feed.current
        responses = []
        for index, container in enumerate(request.container_requests):
            units, problem = self._units(inventory, container.devices_ids)
            if problem is not None:
                log.warning("%s: Allocate refused: %s", self.resource.name, problem)
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, problem)
            responses.append(self._container_response(units, inventory))
            log.info(
                "%s: Allocate container %d: %s",
                self.resource.name,
                index,
                ", ".join(f"{u.id} (group {u.group})" for u in units) or "no devices",
            )
        return self.pb.AllocateResponse(container_responses=responses)

    def GetPreferredAllocation(self, request: Any, context: grpc.ServicerContext) -> Any:
        """For each container: ``allocation_size`` IDs, ``must_include_deviceIDs`` among them,
        close together (see :mod:`kata_vfio.k8s.preferred`)."""
        del context
        units = self._units_of(self.feed.current)
        responses = []
        for container in request.container_requests:
            chosen = preferred_allocation(
                units,
                list(container.available_deviceIDs),
                list(container.must_include_deviceIDs),
                container.allocation_size,
            )
            log.info(
                "%s: preferred %d of %d available: %s",
                self.resource.name,
                container.allocation_size,
                len(container.available_deviceIDs),
                ", ".join(chosen),
            )
            responses.append(self.pb.ContainerPreferredAllocationResponse(deviceIDs=chosen))
        return self.pb.PreferredAllocationResponse(container_responses=responses)

    def PreStartContainer(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Nothing to do before a container starts (the options say so)."""
        del request, context
        return self.pb.PreStartContainerResponse()

    # --- helpers ------------------------------------------------------------------------------

    def options(self) -> Any:
        """The plugin's options (also sent with the registration)."""
        return self.pb.DevicePluginOptions(
            pre_start_required=False, get_preferred_allocation_available=True
        )

    def _units_of(self, inventory: Inventory) -> dict[str, Unit]:
        try:
            entry = inventory.resource(self.resource.name)
        except KeyError:
            return {}
        return {u.id: u for u in entry.units}

    def _devices(self, inventory: Inventory) -> list[_Device]:
        return [(u.id, u.healthy, u.locality.numa_node) for u in self._units_of(inventory).values()]

    def _device(self, device: _Device) -> Any:
        unit_id, healthy, numa = device
        topology = None
        if numa is not None:
            topology = self.pb.TopologyInfo(nodes=[self.pb.NUMANode(ID=numa)])
        return self.pb.Device(
            ID=unit_id, health=HEALTHY if healthy else UNHEALTHY, topology=topology
        )

    def _units(self, inventory: Inventory, ids: Sequence[str]) -> tuple[list[Unit], str | None]:
        known = self._units_of(inventory)
        units = []
        for unit_id in dict.fromkeys(ids):
            unit = known.get(unit_id)
            if unit is None:
                return [], (
                    f"unknown device ID {echo(unit_id)} for {self.resource.name}: this node has "
                    f"{', '.join(known) or 'no units'}"
                )
            if not unit.healthy:
                return [], (
                    f"device {unit_id} of {self.resource.name} is Unhealthy: "
                    + "; ".join(unit.reasons)
                )
            units.append(unit)
        return units, None

    def _container_response(self, units: Sequence[Unit], inventory: Inventory) -> Any:
        bdfs = sorted(b for u in units for b in u.bdfs)
        response = self.pb.ContainerAllocateResponse(
            envs={self.resource.env_name: ",".join(str(b) for b in bdfs)},
            cdi_devices=[self.pb.CDIDevice(name=u.cdi_name) for u in units],
        )
        if self.device_specs and units:
            control = VFIO_CONTAINER_NODE if inventory.mode == "legacy" else IOMMUFD_NODE
            paths = [control, *(n for u in units for n in u.nodes)]
            response.devices.extend(
                self.pb.DeviceSpec(container_path=p, host_path=p, permissions="rw")
                for p in dict.fromkeys(paths)
            )
        return response


class PluginServer:
    """The gRPC server of one :class:`DevicePluginService` on ``<plugin_dir>/<socket>``."""

    def __init__(self, service: DevicePluginService, plugin_dir: str, workers: int = 8) -> None:
        self.service = service
        self.plugin_dir = plugin_dir
        self.path = os.path.join(plugin_dir, socket_name(service.resource))
        api = load_api("deviceplugin/v1beta1")
        self._server = UnixGrpcServer(
            self.path,
            lambda server: api.services.add_DevicePluginServicer_to_server(service, server),
            name=service.resource.name,
            hint=f"check that {plugin_dir} exists and is writable (the kubelet's "
            "device-plugins directory, mounted from the host)",
            workers=workers,
        )

    def start(self) -> None:
        """Serves on a fresh socket (a stale one a killed agent left is replaced)."""
        self._server.start()

    def stop(self, grace: float = 1.0) -> None:
        """Stops serving and removes the socket if it is still this server's."""
        self._server.stop(grace)

    def restart(self) -> None:
        """A new server on a new socket (after the kubelet removed ours)."""
        self._server.restart()

    def socket_present(self) -> bool:
        """Our socket file is still there (the kubelet removes it when it restarts)."""
        return self._server.socket_present()

    def register(self, kubelet_socket: str, timeout: float = 5.0) -> None:
        """``Registration.Register`` with the kubelet; raises :class:`KubernetesError` naming
        the socket and the kubelet's answer."""
        api = load_api("deviceplugin/v1beta1")
        request = api.messages.RegisterRequest(
            version=API_VERSION,
            endpoint=os.path.basename(self.path),
            resource_name=self.service.resource.name,
            options=self.service.options(),
        )
        with grpc.insecure_channel(f"unix:{kubelet_socket}") as channel:
            try:
                api.services.RegistrationStub(channel).Register(request, timeout=timeout)
            except grpc.RpcError as exc:
                raise KubernetesError(
                    f"registering {self.service.resource.name} with the kubelet at "
                    f"{kubelet_socket} failed: {rpc_error(exc)}",
                    hint="check that the kubelet runs and that no other plugin registered "
                    "this resource name",
                ) from None
        log.info(
            "%s: registered with the kubelet at %s (endpoint %s)",
            self.service.resource.name,
            kubelet_socket,
            os.path.basename(self.path),
        )
