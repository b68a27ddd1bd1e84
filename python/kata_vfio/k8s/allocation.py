"""What the kubelet allocated to a pod, as plain data, and how a sandbox takes it.

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

:func:`sandbox_devices` is what Kata's shim does at sandbox creation: the pod is named by the
sandbox spec's ``io.kubernetes.cri.sandbox-name`` and ``-namespace`` annotations (containerd
and CRI-O set them from the pod; a pod author cannot), its allocation read from the socket.
Without a socket, with a socket path where nothing listens yet (a node without the kubelet),
or for a sandbox that is no Kubernetes pod, there is no kubelet answer: the sandbox then takes
the ``cdi.k8s.io/`` annotations, as Kata does, and the note says so. Any other failure (the
kubelet does not answer, does not know the pod) is an error: a sandbox never silently falls
back from a kubelet that should have answered.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kata_vfio._core import Bdf, Host
from kata_vfio.cdi.registry import Registry
from kata_vfio.errors import KataVfioError, PlanError

__all__ = [
    "DEFAULT_POD_RESOURCES_SOCKET",
    "SANDBOX_NAME",
    "SANDBOX_NAMESPACE",
    "SOURCE_POLICIES",
    "AllocatableDevices",
    "PodAllocation",
    "PodDevice",
    "SandboxDevices",
    "SandboxLookup",
    "SourcePolicy",
    "check_single_source",
    "functions_via",
    "pod_allocation",
    "sandbox_devices",
]

DEFAULT_POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
SourcePolicy = Literal["device-plugin", "dra", "both"]
SOURCE_POLICIES: tuple[SourcePolicy, ...] = ("both", "device-plugin", "dra")
Source = Literal["device-plugin", "dra"]
SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"


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


@dataclass(frozen=True, slots=True)
class SandboxDevices:
    """The kubelet's answer for a sandbox's pod (what Kata's sandbox plan takes)."""

    source: str
    names: tuple[str, ...]
    devices: tuple[PodDevice, ...]


@dataclass(frozen=True, slots=True)
class SandboxLookup:
    """The answer, or (``devices`` None) why there is none: the sandbox then takes the
    annotations and ``note`` says why."""

    devices: SandboxDevices | None
    note: str | None = None


Fetch = Callable[[str, str, str], PodAllocation]


def sandbox_devices(
    annotations: Mapping[str, str],
    socket: str,
    *,
    policy: SourcePolicy = "both",
    functions_of: Callable[[str], Iterable[Bdf]] | None = None,
    fetch: Fetch | None = None,
) -> SandboxLookup:
    """The devices the kubelet allocated to the sandbox's pod (see the module docstring).
    ``functions_of`` enables the one-function-two-sources check; ``fetch(socket, namespace,
    name)`` replaces the gRPC client. Raises :class:`KubernetesError` (socket, pod and what to
    do) when the kubelet fails to answer, :class:`PlanError` for a function allocated twice."""
    if not socket:
        return SandboxLookup(None)
    name = annotations.get(SANDBOX_NAME, "")
    namespace = annotations.get(SANDBOX_NAMESPACE, "")
    if not name or not namespace:
        return SandboxLookup(
            None,
            f"the sandbox has no {SANDBOX_NAME} and {SANDBOX_NAMESPACE} annotations (not a "
            "Kubernetes pod): its cdi.k8s.io/ annotations are used",
        )
    if not os.path.exists(socket):
        return SandboxLookup(
            None,
            f"no kubelet Pod Resources socket at {socket}: the cdi.k8s.io/ annotations of pod "
            f"{namespace}/{name} are used, as Kata does",
        )
    allocation = (fetch or _fetch)(socket, namespace, name)
    devices = allocation.select(policy)
    if functions_of is not None:
        check_single_source(devices, functions_of)
    return SandboxLookup(
        SandboxDevices(
            source=f"the kubelet at {socket}, pod {namespace}/{name}, sources {policy}",
            names=tuple(dict.fromkeys(d.cdi_name for d in devices)),
            devices=devices,
        )
    )


def functions_via(registry: Registry, host: Host) -> Callable[[str], tuple[Bdf, ...]]:
    """``CDI name -> PCI functions``: the device's VFIO nodes in the registry, resolved on the
    host (a group node stands for every member). Unknown names give none (injection reports
    them later)."""

    def functions(name: str) -> tuple[Bdf, ...]:
        found = registry.get_device(name)
        if found is None:
            return ()
        bdfs: list[Bdf] = []
        for node in found.device.container_edits.device_nodes:
            try:
                bdfs.extend(host.resolve_devnode(node.path).bdfs)
            except KataVfioError:
                continue
        return tuple(dict.fromkeys(bdfs))

    return functions


def _fetch(socket: str, namespace: str, name: str) -> PodAllocation:
    from kata_vfio.k8s.podresources import PodResourcesClient  # noqa: PLC0415 (needs grpc)

    with PodResourcesClient(socket) as client:
        return client.get(namespace, name)
