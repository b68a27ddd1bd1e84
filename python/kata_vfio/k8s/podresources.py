"""A client of the kubelet's Pod Resources API (``podresources/v1``) on its unix socket.

The answers become :class:`~kata_vfio.k8s.allocation.PodAllocation` records (device plugin and
DRA devices with their CDI names); see :mod:`kata_vfio.k8s.allocation` for what a sandbox does
with them.
"""

from __future__ import annotations

from typing import Any

import grpc

from kata_vfio.errors import KubernetesError
from kata_vfio.k8s.allocation import (
    DEFAULT_POD_RESOURCES_SOCKET,
    AllocatableDevices,
    PodAllocation,
    pod_allocation,
)
from kata_vfio.k8s.grpcapi import load_api

__all__ = ["PodResourcesClient"]

# The kubelet's own Pod Resources client allows 16 MiB answers (a busy node's List).
_MAX_MESSAGE = 16 << 20
_TIMEOUT = 10.0


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
