"""The node agent's device-plugin mode: one long-running function, :func:`run_device_plugin`.

Order of things, so the kubelet never sees a unit that does not resolve:

1. scan, build the inventory and write the CDI specs;
2. start one gRPC server per resource (a stale socket a killed agent left is replaced);
3. register each with the kubelet once its socket exists; the kubelet then opens
   ``ListAndWatch`` and gets the units;
4. keep the inventory current (uevents, the rescan timer) in a second thread, and watch the
   plugin directory: when the kubelet restarts it recreates ``kubelet.sock`` and removes every
   other socket, so a missing socket or a new ``kubelet.sock`` means new servers and a new
   registration (checked twice a second: well inside 2 s);
5. when ``stop`` is set (SIGTERM, SIGINT): stop the servers, remove the sockets, keep the CDI
   specs (running pods still need them).

A SIGKILL strands nothing that matters: the sockets are replaced on the next start, the specs
stay valid, temporary spec files are never read by CDI (``.tmp``) and are removed on start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from kata_vfio.errors import KataVfioError, KubernetesError
from kata_vfio.k8s.cdispec import DEFAULT_CDI_DIR, CdiSpecWriter
from kata_vfio.k8s.deviceplugin import (
    DEFAULT_PLUGIN_DIR,
    KUBELET_SOCKET,
    DevicePluginService,
    PluginServer,
)
from kata_vfio.k8s.watch import EventSource, HostWatcher, WatchConfig, default_events

__all__ = ["AgentConfig", "run_device_plugin"]

log = logging.getLogger(__name__)

# How often the plugin directory is checked for a kubelet restart (two stats; the kubelet
# expects plugins back within seconds).
_POLL = 0.5
# Registration failures are retried this often (and logged once per change of message).
_RETRY = 1.0


@dataclass(frozen=True)
class AgentConfig:
    """Everything ``kata-vfio k8s device-plugin`` takes."""

    watch: WatchConfig
    plugin_dir: str = DEFAULT_PLUGIN_DIR
    cdi_dir: str = DEFAULT_CDI_DIR
    device_specs: bool = False
    uevents: bool = True


class _Registration:
    """One plugin's registration state against the current kubelet socket."""

    def __init__(self, server: PluginServer) -> None:
        self.server = server
        self.kubelet: tuple[int, int, int] | None = None
        self.next_try = 0.0
        self.last_error = ""

    def check(self, kubelet_socket: str) -> None:
        name = self.server.service.resource.name
        kubelet = _identity(kubelet_socket)
        if kubelet is None:
            if self.kubelet is not None:
                log.warning("%s: %s is gone; waiting for the kubelet", name, kubelet_socket)
            self.kubelet = None
            return
        if not self.server.socket_present():
            log.warning(
                "%s: %s was removed (kubelet restart?); serving anew", name, self.server.path
            )
            self.server.restart()
            self.kubelet = None
        if kubelet == self.kubelet or time.monotonic() < self.next_try:
            return
        try:
            self.server.register(kubelet_socket)
        except KataVfioError as exc:
            if str(exc) != self.last_error:
                log.error("%s", exc)
                self.last_error = str(exc)
            self.next_try = time.monotonic() + _RETRY
            return
        self.kubelet = kubelet
        self.last_error = ""


def run_device_plugin(
    config: AgentConfig, stop: threading.Event, events: EventSource | None = None
) -> None:
    """Runs the device plugins until ``stop`` is set (see the module docstring). ``events``
    replaces the kernel's uevents (tests). Raises :class:`KataVfioError` when it cannot start
    (first scan, CDI directory, sockets); afterwards problems are logged and retried."""
    if not os.path.isdir(config.plugin_dir):
        raise KubernetesError(
            f"the plugin directory {config.plugin_dir} does not exist",
            hint="mount the kubelet's device-plugins directory (hostPath "
            "/var/lib/kubelet/device-plugins) or pass --plugin-dir",
        )
    writer = CdiSpecWriter(config.cdi_dir)
    source = events or default_events(config.watch.paths, config.uevents)
    watcher = HostWatcher(config.watch, writer, source)
    servers: list[PluginServer] = []
    thread = None
    try:
        watcher.refresh("start")
        feed = watcher.feed
        assert feed is not None  # refresh() published the first inventory
        for resource in config.watch.resources:
            service = DevicePluginService(resource, feed, stop, device_specs=config.device_specs)
            server = PluginServer(service, config.plugin_dir)
            server.start()
            servers.append(server)
        thread = threading.Thread(target=watcher.run, args=(stop,), name="kata-vfio-watch")
        thread.start()
        registrations = [_Registration(s) for s in servers]
        kubelet_socket = os.path.join(config.plugin_dir, KUBELET_SOCKET)
        while not stop.is_set():
            for registration in registrations:
                registration.check(kubelet_socket)
            stop.wait(_POLL)
        log.info("stopping: removing the plugin sockets, keeping the CDI specs")
    finally:
        stop.set()
        if watcher.feed is not None:
            watcher.feed.wake()
        for server in servers:
            server.stop()
        if thread is not None:
            thread.join()
        source.close()
    log.info("stopped after %d scans", watcher.scans)


def _identity(path: str) -> tuple[int, int, int] | None:
    """Device, inode and change time of a socket file: a recreated one differs."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)
