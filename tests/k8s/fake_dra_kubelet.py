"""A fake kubelet for DRA plugins, built from the official protos, over unix sockets.

It does what the kubelet's plugin watcher and DRA manager do: finds ``<driver>-reg.sock`` in
the registry directory, calls ``GetInfo``, checks the answer the way the kubelet does (type
``DRAPlugin``, a supported service among ``v1.DRAPlugin`` and ``v1beta1.DRAPlugin``, an
endpoint that exists), reports the verdict with ``NotifyRegistrationStatus``, then calls
``NodePrepareResources`` / ``NodeUnprepareResources`` on the endpoint with the version it
picked, within the kubelet's 45 s, and reads ``NodeWatchResources`` in a thread.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc
from fake_kubelet import first_matching

from kata_vfio.k8s.grpcapi import load_api

REGISTRATION: Any = load_api("pluginregistration/v1")
HEALTH: Any = load_api("dra-health/v1")
KUBELET_TIMEOUT = 45.0
SERVICES = {"v1.DRAPlugin": "dra/v1", "v1beta1.DRAPlugin": "dra/v1beta1"}


@dataclass(frozen=True)
class Registered:
    name: str
    endpoint: str
    versions: tuple[str, ...]


class FakeDraKubelet:
    """The kubelet's side of one node's DRA plugins."""

    def __init__(self, registry_dir: str) -> None:
        self.registry_dir = registry_dir

    def wait_socket(self, driver: str, timeout: float = 20.0) -> str:
        path = os.path.join(self.registry_dir, f"{driver}-reg.sock")
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not appear")
            time.sleep(0.02)
        return path

    def register(self, driver: str, *, refuse: str = "") -> Registered:
        """GetInfo, the kubelet's checks, then NotifyRegistrationStatus (``refuse`` makes the
        verdict a refusal with that reason)."""
        socket = self.wait_socket(driver)
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            stub = REGISTRATION.services.RegistrationStub(channel)
            info = stub.GetInfo(REGISTRATION.messages.InfoRequest(), timeout=10)
            problem = refuse or _problem(info, driver)
            status = REGISTRATION.messages.RegistrationStatus(
                plugin_registered=not problem, error=problem
            )
            stub.NotifyRegistrationStatus(status, timeout=10)
        if problem and not refuse:
            raise AssertionError(problem)
        return Registered(info.name, info.endpoint, tuple(info.supported_versions))

    def plugin(self, registered: Registered, service: str = "v1.DRAPlugin") -> DraClient:
        """A client of the plugin's ``service`` (one it registered)."""
        assert service in registered.versions, registered.versions
        return DraClient(registered.endpoint, SERVICES[service])


def _problem(info: Any, driver: str) -> str:
    if info.type != "DRAPlugin":
        return f"unexpected plugin type {info.type!r}"
    if info.name != driver:
        return f"plugin name {info.name!r}, socket for {driver!r}"
    if not set(info.supported_versions) & set(SERVICES):
        return f"none of the supported versions {list(info.supported_versions)} is served"
    if not os.path.exists(info.endpoint):
        return f"endpoint {info.endpoint} does not exist"
    return ""


class DraClient:
    """``DRAPlugin`` calls of one API version, and the health stream."""

    def __init__(self, endpoint: str, api: str) -> None:
        self.api = load_api(api)
        self.pb: Any = self.api.messages
        self.channel = grpc.insecure_channel(f"unix:{endpoint}")
        self.stub = self.api.services.DRAPluginStub(self.channel)

    def _claims(self, claims: list[tuple[str, str, str]]) -> list[Any]:
        return [self.pb.Claim(namespace=ns, name=name, uid=uid) for ns, name, uid in claims]

    def prepare(self, *claims: tuple[str, str, str]) -> dict[str, Any]:
        """Per claim UID: the NodePrepareResourceResponse."""
        request = self.pb.NodePrepareResourcesRequest(claims=self._claims(list(claims)))
        response = self.stub.NodePrepareResources(request, timeout=KUBELET_TIMEOUT)
        return dict(response.claims)

    def unprepare(self, *claims: tuple[str, str, str]) -> dict[str, str]:
        """Per claim UID: its error (empty when done)."""
        request = self.pb.NodeUnprepareResourcesRequest(claims=self._claims(list(claims)))
        response = self.stub.NodeUnprepareResources(request, timeout=KUBELET_TIMEOUT)
        return {uid: entry.error for uid, entry in response.claims.items()}

    def watch_health(self) -> HealthWatch:
        return HealthWatch(self.channel)

    def close(self) -> None:
        self.channel.close()


class HealthWatch:
    """A NodeWatchResources stream read in a thread: updates as ``{device: (status, msg)}``."""

    def __init__(self, channel: grpc.Channel) -> None:
        stub = HEALTH.services.DRAResourceHealthStub(channel)
        self.updates: queue.SimpleQueue[dict[str, tuple[str, str]]] = queue.SimpleQueue()
        self.pools: set[str] = set()
        self._call = stub.NodeWatchResources(HEALTH.messages.NodeWatchResourcesRequest())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self._call:
                update = {}
                for d in response.devices:
                    self.pools.add(d.device.pool_name)
                    status = HEALTH.messages.HealthStatus.Name(d.health)
                    update[d.device.device_name] = (status, d.message)
                self.updates.put(update)
        except grpc.RpcError:
            pass

    def until(self, predicate: Any, timeout: float = 15.0) -> dict[str, tuple[str, str]]:
        """The first update for which ``predicate(update)`` holds."""
        result: dict[str, tuple[str, str]] = first_matching(self.updates, predicate, timeout)
        return result

    def cancel(self) -> None:
        self._call.cancel()
        self._thread.join(5)
