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

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc

from kata_vfio._echo import echo
from kata_vfio.errors import KubernetesError
from kata_vfio.k8s.grpcapi import load_api
from kata_vfio.k8s.inventory import IOMMUFD_NODE, VFIO_CONTAINER_NODE, Inventory, Unit
from kata_vfio.k8s.preferred import preferred_allocation
from kata_vfio.k8s.resources import ResourceSpec
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
# The kernel's limit for a unix socket path (sun_path, without the NUL).
_SUN_PATH_MAX = 107
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
        self.workers = workers
        self._server: grpc.Server | None = None
        self._identity: tuple[int, int] | None = None
        if len(self.path.encode()) > _SUN_PATH_MAX:
            raise KubernetesError(
                f"the socket path {self.path} is longer than a unix socket allows "
                f"({_SUN_PATH_MAX} bytes)",
                hint="use a shorter --plugin-dir or resource name",
            )

    def start(self) -> None:
        """Serves on a fresh socket (a stale one a killed agent left is replaced)."""
        self._remove_stale()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers))
        api = load_api("deviceplugin/v1beta1")
        api.services.add_DevicePluginServicer_to_server(self.service, server)
        try:
            port = server.add_insecure_port(f"unix:{self.path}")
        except RuntimeError as exc:
            port = 0
            detail = str(exc)
        else:
            detail = ""
        if port == 0:
            raise KubernetesError(
                f"cannot listen on {self.path}{': ' + detail if detail else ''}",
                hint=f"check that {self.plugin_dir} exists and is writable (the kubelet's "
                "device-plugins directory, mounted from the host)",
            )
        server.start()
        os.chmod(self.path, 0o600)
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        self._server = server
        log.info("%s: serving on %s", self.service.resource.name, self.path)

    def stop(self, grace: float = 1.0) -> None:
        """Stops serving and removes the socket if it is still this server's."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait()
        if self.socket_present():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._identity = None

    def restart(self) -> None:
        """A new server on a new socket (after the kubelet removed ours)."""
        self.stop(grace=0)
        self.start()

    def socket_present(self) -> bool:
        """Our socket file is still there (the kubelet removes it when it restarts)."""
        if self._identity is None:
            return False
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

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
                    f"{kubelet_socket} failed: {_rpc_error(exc)}",
                    hint="check that the kubelet runs and that no other plugin registered "
                    "this resource name",
                ) from None
        log.info(
            "%s: registered with the kubelet at %s (endpoint %s)",
            self.service.resource.name,
            kubelet_socket,
            os.path.basename(self.path),
        )

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise KubernetesError(
                f"{self.path} exists and is not a socket",
                hint="remove it; the plugin directory holds only the kubelet's sockets",
            )
        os.unlink(self.path)
        log.info("%s: removed the stale socket %s", self.service.resource.name, self.path)


def _rpc_error(exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else None
    name = code.name if code is not None else "error"
    return f"{name}: {details}" if details else name
