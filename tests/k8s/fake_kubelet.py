"""A fake kubelet for device plugins, built from the same official protos, over unix sockets.

It does what the kubelet's device manager does: serves ``Registration`` on
``<dir>/kubelet.sock`` (refusing a wrong API version, as the kubelet does), and on a restart
removes everything in the directory but its checkpoint and creates ``kubelet.sock`` anew. It
then talks to a registered plugin through its endpoint: options, ``ListAndWatch`` (read in a
thread into a queue), ``Allocate``, ``GetPreferredAllocation``.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from concurrent import futures
from typing import Any

import grpc

from kata_vfio.k8s.grpcapi import load_api

API = load_api("deviceplugin/v1beta1")
PB: Any = API.messages
CHECKPOINT = "kubelet_internal_checkpoint"


class _Registration:
    def __init__(self, kubelet: FakeKubelet) -> None:
        self.kubelet = kubelet

    def Register(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.version != "v1beta1":
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Requested device plugin version {request.version!r} is not supported",
            )
        self.kubelet.registrations.put(request)
        return PB.Empty()


class FakeKubelet:
    """Serves Registration in ``plugin_dir`` until :meth:`stop`."""

    def __init__(self, plugin_dir: str) -> None:
        self.plugin_dir = plugin_dir
        self.socket = os.path.join(plugin_dir, "kubelet.sock")
        self.registrations: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._server: grpc.Server | None = None

    def start(self, *, clean: bool = True) -> FakeKubelet:
        """Cleans the directory (but the checkpoint) and serves on a new ``kubelet.sock``;
        ``clean=False`` leaves the directory as it is."""
        os.makedirs(self.plugin_dir, exist_ok=True)
        for name in os.listdir(self.plugin_dir) if clean else ():
            if name == CHECKPOINT:
                continue
            path = os.path.join(self.plugin_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        API.services.add_RegistrationServicer_to_server(_Registration(self), server)
        server.add_insecure_port(f"unix:{self.socket}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stops serving (the socket file goes away, as when the kubelet dies)."""
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None
        if os.path.lexists(self.socket):
            os.unlink(self.socket)

    def restart(self) -> None:
        """Stop, then start: plugins must notice and register again."""
        self.stop()
        self.start()

    def wait_registration(self, timeout: float = 10.0) -> Any:
        """The next RegisterRequest (raises queue.Empty after ``timeout``)."""
        return self.registrations.get(timeout=timeout)

    def plugin(self, endpoint: str) -> PluginClient:
        """A client for the plugin registered with ``endpoint``."""
        return PluginClient(os.path.join(self.plugin_dir, endpoint))


def first_matching(updates: queue.SimpleQueue[Any], predicate: Any, timeout: float) -> Any:
    """The first item of ``updates`` for which ``predicate`` holds (queue.Empty after
    ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        update = updates.get(timeout=max(deadline - time.monotonic(), 0.001))
        if predicate(update):
            return update


class Watch:
    """A ListAndWatch stream read in a thread; responses as ``{id: (health, numa)}``."""

    def __init__(self, stub: Any) -> None:
        self.updates: queue.SimpleQueue[dict[str, tuple[str, int | None]]] = queue.SimpleQueue()
        self._call = stub.ListAndWatch(PB.Empty())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self._call:
                self.updates.put(
                    {
                        d.ID: (d.health, d.topology.nodes[0].ID if d.topology.nodes else None)
                        for d in response.devices
                    }
                )
        except grpc.RpcError:
            pass

    def next(self, timeout: float = 10.0) -> dict[str, tuple[str, int | None]]:
        """The next update."""
        return self.updates.get(timeout=timeout)

    def until(self, predicate: Any, timeout: float = 10.0) -> dict[str, tuple[str, int | None]]:
        """The first update for which ``predicate(update)`` holds."""
        return first_matching(self.updates, predicate, timeout)

    def cancel(self) -> None:
        """Hangs up, as the kubelet does when it stops."""
        self._call.cancel()
        self._thread.join(5)


class PluginClient:
    """The kubelet's calls to one plugin."""

    def __init__(self, socket: str) -> None:
        self.channel = grpc.insecure_channel(f"unix:{socket}")
        self.stub = API.services.DevicePluginStub(self.channel)

    def options(self) -> Any:
        return self.stub.GetDevicePluginOptions(PB.Empty(), timeout=10)

    def watch(self) -> Watch:
        return Watch(self.stub)

    def allocate(self, *containers: list[str]) -> Any:
        request = PB.AllocateRequest(
            container_requests=[PB.ContainerAllocateRequest(devices_ids=ids) for ids in containers]
        )
        return self.stub.Allocate(request, timeout=10)

    def preferred(self, available: list[str], must: list[str], size: int) -> list[str]:
        request = PB.PreferredAllocationRequest(
            container_requests=[
                PB.ContainerPreferredAllocationRequest(
                    available_deviceIDs=available,
                    must_include_deviceIDs=must,
                    allocation_size=size,
                )
            ]
        )
        response = self.stub.GetPreferredAllocation(request, timeout=10)
        return list(response.container_responses[0].deviceIDs)

    def close(self) -> None:
        self.channel.close()
