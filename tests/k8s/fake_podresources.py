"""A fake kubelet Pod Resources server (``podresources/v1``, the official proto) on a unix
socket: it answers List, Get and GetAllocatableResources from a table of pods, as the kubelet
does (NOT_FOUND for an unknown pod; UNIMPLEMENTED for Get when the feature gate is off)."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

from kata_vfio.k8s.grpcapi import load_api

API = load_api("podresources/v1")
PB: Any = API.messages


@dataclass
class Claim:
    """A DRA claim's devices: ``(driver, pool, device, [cdi names])``."""

    namespace: str
    name: str
    devices: list[tuple[str, str, str, list[str]]]


@dataclass
class Container:
    name: str
    devices: dict[str, list[str]] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)


def pod_message(namespace: str, name: str, containers: list[Container]) -> Any:
    """A PodResources message as the kubelet builds it."""
    return PB.PodResources(
        name=name,
        namespace=namespace,
        containers=[
            PB.ContainerResources(
                name=c.name,
                devices=[
                    PB.ContainerDevices(resource_name=r, device_ids=ids)
                    for r, ids in c.devices.items()
                ],
                dynamic_resources=[
                    PB.DynamicResource(
                        claim_name=claim.name,
                        claim_namespace=claim.namespace,
                        claim_resources=[
                            PB.ClaimResource(
                                driver_name=driver,
                                pool_name=pool,
                                device_name=device,
                                cdi_devices=[PB.CDIDevice(name=n) for n in names],
                            )
                            for driver, pool, device, names in claim.devices
                        ],
                    )
                    for claim in c.claims
                ],
            )
            for c in containers
        ],
    )


class FakePodResources:
    """Serves the pods in ``pods`` (``{(namespace, name): [Container, ...]}``)."""

    def __init__(self, socket: str, *, get_implemented: bool = True) -> None:
        self.socket = socket
        self.pods: dict[tuple[str, str], list[Container]] = {}
        self.allocatable: dict[str, list[tuple[str, int | None]]] = {}
        self.get_implemented = get_implemented
        self.calls: list[str] = []
        self._server: grpc.Server | None = None

    def start(self) -> FakePodResources:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        API.services.add_PodResourcesListerServicer_to_server(self, server)
        server.add_insecure_port(f"unix:{self.socket}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None

    def List(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.calls.append("List")
        return PB.ListPodResourcesResponse(
            pod_resources=[pod_message(ns, n, c) for (ns, n), c in self.pods.items()]
        )

    def Get(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.calls.append(f"Get {request.pod_namespace}/{request.pod_name}")
        if not self.get_implemented:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "PodResources API Get method disabled")
        key = (request.pod_namespace, request.pod_name)
        if key not in self.pods:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"pod {request.pod_name} not found in {request.pod_namespace}",
            )
        return PB.GetPodResourcesResponse(pod_resources=pod_message(*key, self.pods[key]))

    def GetAllocatableResources(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.calls.append("GetAllocatableResources")
        return PB.AllocatableResourcesResponse(
            devices=[
                PB.ContainerDevices(
                    resource_name=resource,
                    device_ids=[device_id],
                    topology=PB.TopologyInfo(nodes=[] if numa is None else [PB.NUMANode(ID=numa)]),
                )
                for resource, entries in self.allocatable.items()
                for device_id, numa in entries
            ]
        )
