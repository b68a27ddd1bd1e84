"""The kubelet's Pod Resources API (``podresources/v1``): which devices a pod was given.

Kata's shim asks it at sandbox creation (``pod_resource_api_sock``, Kata PR #12087) instead of
trusting ``cdi.k8s.io/`` annotations, which anyone who can write a pod spec controls. A pod's
devices come from two sources:

* device plugins: ``(resource_name, device_ids)`` per container; the CDI name is
  ``<resource_name>=<device_id>`` (which is why this project's plugin uses the CDI device names
  as its IDs);
* DRA: ``dynamic_resources[].claim_resources[]`` with their own ``cdi_devices``.

A :data:`SourcePolicy` chooses which sources count (Kata runtime-rs PR #13420 does the same),
and :func:`check_single_source` refuses a physical function (BDF) that two allocations both
name, which would pass one device to the VM twice or to two pods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc

from kata_vfio._core import Bdf
from kata_vfio.errors import KubernetesError, PlanError
from kata_vfio.k8s.grpcapi import load_api

__all__ = [
    "DEFAULT_POD_RESOURCES_SOCKET",
    "SOURCE_POLICIES",
    "AllocatableDevices",
    "PodAllocation",
    "PodDevice",
    "PodResourcesClient",
    "SourcePolicy",
    "check_single_source",
    "pod_allocation",
]

DEFAULT_POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
SourcePolicy = Literal["device-plugin", "dra", "both"]
SOURCE_POLICIES: tuple[SourcePolicy, ...] = ("both", "device-plugin", "dra")
Source = Literal["device-plugin", "dra"]

# The kubelet's own Pod Resources client allows 16 MiB answers (a busy node's List).
_MAX_MESSAGE = 16 << 20
_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class PodDevice:
    """One device a container of the pod was given."""

    cdi_name: str
    source: Source
    container: str
    resource: str
    """The device plugin's resource name, or the DRA driver's name."""
    device: str
    """The device plugin's device ID, or the DRA device name (``pool/device``)."""
    claim: str | None = None
    """``namespace/name`` of the DRA claim."""


@dataclass(frozen=True, slots=True)
class PodAllocation:
    """The devices of one pod, in the kubelet's order (containers, then devices)."""

    namespace: str
    name: str
    devices: tuple[PodDevice, ...]

    def select(self, policy: SourcePolicy) -> tuple[PodDevice, ...]:
        """The devices of the sources ``policy`` allows."""
        if policy == "both":
            return self.devices
        return tuple(d for d in self.devices if d.source == policy)

    def cdi_names(self, policy: SourcePolicy = "both") -> tuple[str, ...]:
        """The CDI names of the allowed devices, each once, in order."""
        return tuple(dict.fromkeys(d.cdi_name for d in self.select(policy)))


@dataclass(frozen=True, slots=True)
class AllocatableDevices:
    """``GetAllocatableResources``: the devices one resource offers on this node."""

    resource: str
    device_ids: tuple[str, ...]
    numa_nodes: tuple[int, ...]


def pod_allocation(message: Any) -> PodAllocation:
    """A ``PodResources`` message as a :class:`PodAllocation`."""
    devices: list[PodDevice] = []
    for container in message.containers:
        for group in container.devices:
            devices.extend(
                PodDevice(
                    cdi_name=f"{group.resource_name}={device_id}",
                    source="device-plugin",
                    container=container.name,
                    resource=group.resource_name,
                    device=device_id,
                )
                for device_id in group.device_ids
            )
        for dynamic in container.dynamic_resources:
            claim = f"{dynamic.claim_namespace}/{dynamic.claim_name}"
            for resource in dynamic.claim_resources:
                devices.extend(
                    PodDevice(
                        cdi_name=cdi.name,
                        source="dra",
                        container=container.name,
                        resource=resource.driver_name,
                        device=f"{resource.pool_name}/{resource.device_name}",
                        claim=claim,
                    )
                    for cdi in resource.cdi_devices
                )
    return PodAllocation(message.namespace, message.name, tuple(devices))


def check_single_source(
    devices: Sequence[PodDevice], functions_of: Callable[[str], Iterable[Bdf]]
) -> None:
    """Raises :class:`PlanError` when a PCI function belongs to two different CDI devices
    (from two sources, or two plugins): it names the function and both devices.
    ``functions_of`` maps a CDI name to the functions it passes (through the CDI registry and
    the host's devnode resolution)."""
    owner: dict[Bdf, PodDevice] = {}
    clashes = []
    for device in devices:
        for bdf in functions_of(device.cdi_name):
            first = owner.setdefault(bdf, device)
            if first.cdi_name != device.cdi_name:
                clashes.append(
                    f"{bdf} is in {first.cdi_name} ({_origin(first)}) and in "
                    f"{device.cdi_name} ({_origin(device)})"
                )
    if clashes:
        raise PlanError(
            "a physical device is allocated twice: " + "; ".join(dict.fromkeys(clashes)),
            hint="serve each device from one source only (a device plugin or a DRA driver), "
            "or choose one with the source policy",
        )


def _origin(device: PodDevice) -> str:
    if device.source == "dra":
        return f"DRA claim {device.claim}, driver {device.resource}"
    return f"device plugin {device.resource}"


class PodResourcesClient:
    """A client of the kubelet's ``PodResourcesLister`` on a unix socket (a context manager)."""

    def __init__(
        self, socket: str = DEFAULT_POD_RESOURCES_SOCKET, timeout: float = _TIMEOUT
    ) -> None:
        self.socket = socket
        self.timeout = timeout
        self._api = load_api("podresources/v1")
        self._channel = grpc.insecure_channel(
            f"unix:{socket}",
            options=[("grpc.max_receive_message_length", _MAX_MESSAGE)],
        )
        self._stub = self._api.services.PodResourcesListerStub(self._channel)

    def __enter__(self) -> PodResourcesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def list(self) -> tuple[PodAllocation, ...]:
        """Every pod on the node with its devices."""
        response = self._call("List", self._api.messages.ListPodResourcesRequest(), "List")
        return tuple(pod_allocation(p) for p in response.pod_resources)

    def get(self, namespace: str, name: str) -> PodAllocation:
        """One pod's devices. Uses ``Get``, or ``List`` on kubelets without it (the
        ``KubeletPodResourcesGet`` feature gate off). Raises :class:`KubernetesError` naming
        the pod when the kubelet does not know it."""
        pod = f"{namespace}/{name}"
        request = self._api.messages.GetPodResourcesRequest(pod_name=name, pod_namespace=namespace)
        try:
            response = self._call("Get", request, f"Get {pod}", raw=True)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.UNIMPLEMENTED:
                for allocation in self.list():
                    if (allocation.namespace, allocation.name) == (namespace, name):
                        return allocation
                raise self._not_found(pod) from None
            if code == grpc.StatusCode.NOT_FOUND:
                raise self._not_found(pod) from None
            raise self._error(f"Get {pod}", exc) from None
        return pod_allocation(response.pod_resources)

    def allocatable(self) -> tuple[AllocatableDevices, ...]:
        """Every device the kubelet can hand out, per resource."""
        request = self._api.messages.AllocatableResourcesRequest()
        response = self._call("GetAllocatableResources", request, "GetAllocatableResources")
        merged: dict[str, tuple[list[str], set[int]]] = {}
        for group in response.devices:
            ids, numa = merged.setdefault(group.resource_name, ([], set()))
            ids.extend(group.device_ids)
            numa.update(n.ID for n in group.topology.nodes)
        return tuple(
            AllocatableDevices(name, tuple(ids), tuple(sorted(numa)))
            for name, (ids, numa) in sorted(merged.items())
        )

    def _call(self, method: str, request: Any, what: str, *, raw: bool = False) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            if raw:
                raise
            raise self._error(what, exc) from None

    def _error(self, what: str, exc: grpc.RpcError) -> KubernetesError:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        unreachable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        hint = (
            "check that the kubelet runs and that this socket is mounted "
            "(hostPath /var/lib/kubelet/pod-resources)"
            if unreachable
            else "see the kubelet's log"
        )
        name = code.name if code is not None else "error"
        return KubernetesError(
            f"Pod Resources {what} on {self.socket} failed: {name}: {details}", hint=hint
        )

    def _not_found(self, pod: str) -> KubernetesError:
        return KubernetesError(
            f"the kubelet at {self.socket} does not know pod {pod}",
            hint="check the pod's name and namespace (the sandbox's "
            "io.kubernetes.cri.sandbox-name/-namespace annotations)",
        )
