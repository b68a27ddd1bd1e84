"""The DRA kubelet plugin: one long-running function, :func:`run_dra_plugin`.

Order of things, so the kubelet never calls into a half-started plugin:

1. read the boot ID, load the checkpoint and recover (interrupted prepares rolled back,
   claims that no longer exist released, stray CDI specs removed);
2. scan and build the DRA view of the inventory (refusals included), publish the
   ResourceSlices;
3. serve ``DRAPlugin`` v1, v1beta1 and ``DRAResourceHealth`` on ``<plugin-dir>/<driver>/dra.sock``,
   then ``Registration`` on ``<registry-dir>/<driver>-reg.sock``; the kubelet's plugin watcher
   finds the latter and registers us;
4. keep the inventory current (uevents, the rescan timer) in one thread and the slices in
   another; check the sockets twice a second (one removed by hand or by a kubelet clean-up is
   served anew) and, every ``reconcile_interval``, release prepared claims that no longer
   exist;
5. a refused registration stops the plugin with the kubelet's reason (an error exit);
   ``stop`` (SIGTERM, SIGINT) stops the servers and removes the sockets, keeps the CDI specs
   and the checkpoint (running pods still need them), and with ``cleanup`` deletes the
   node's ResourceSlices.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import grpc

from kata_vfio._trust import make_directories
from kata_vfio.errors import KataVfioError, KubernetesError
from kata_vfio.k8s.cdispec import DEFAULT_CDI_DIR
from kata_vfio.k8s.dra.checkpoint import read_boot_id
from kata_vfio.k8s.dra.claimspec import ClaimSpecs
from kata_vfio.k8s.dra.ports import ClaimSource, SlicePublisher, check_driver_name, pool_name
from kata_vfio.k8s.dra.prepare import (
    DEFAULT_DEADLINE,
    HostAccess,
    Preparer,
    StepHook,
    with_refusals,
)
from kata_vfio.k8s.dra.service import DraPluginService, HealthService, RegistrationService
from kata_vfio.k8s.grpcapi import load_api
from kata_vfio.k8s.unixgrpc import UnixGrpcServer
from kata_vfio.k8s.watch import EventSource, HostWatcher, InventoryFeed, WatchConfig, default_events

__all__ = [
    "DEFAULT_PLUGIN_DIR",
    "DEFAULT_REGISTRY_DIR",
    "DraConfig",
    "run_dra_plugin",
    "validate_driver_name",
]

DEFAULT_PLUGIN_DIR = "/var/lib/kubelet/plugins"
DEFAULT_REGISTRY_DIR = "/var/lib/kubelet/plugins_registry"

_POLL = 0.5
_PUBLISH_RETRY = 5.0

log = logging.getLogger(__name__)


# The shared check, under the name this module has always exported.
validate_driver_name = check_driver_name


@dataclass(frozen=True)
class DraConfig:
    """Everything ``kata-vfio k8s dra-plugin`` takes."""

    driver: str
    node: str
    access: HostAccess
    plugin_dir: str = DEFAULT_PLUGIN_DIR
    registry_dir: str = DEFAULT_REGISTRY_DIR
    cdi_dir: str = DEFAULT_CDI_DIR
    state_dir: str | None = None
    """Default: ``<plugin_dir>/<driver>`` (beside ``dra.sock``)."""
    deadline: float = DEFAULT_DEADLINE
    rescan_interval: float = 30.0
    reconcile_interval: float = 300.0
    uevents: bool = True
    cleanup: bool = False

    @property
    def endpoint(self) -> str:
        """The ``dra.sock`` path the kubelet is told."""
        return os.path.join(self.plugin_dir, self.driver, "dra.sock")

    @property
    def registration_socket(self) -> str:
        """Where the kubelet's plugin watcher finds us."""
        return os.path.join(self.registry_dir, f"{self.driver}-reg.sock")

    @property
    def state(self) -> str:
        """The checkpoint and journal directory."""
        return self.state_dir or os.path.join(self.plugin_dir, self.driver)


class _Slices:
    """Publishes the Healthy units on every inventory change, in its own thread (API server
    calls never hold up the kubelet's); a failure is logged and retried."""

    def __init__(self, publisher: SlicePublisher, feed: InventoryFeed, stop: threading.Event):
        self.publisher = publisher
        self.feed = feed
        self.stop = stop

    def run(self) -> None:
        version = -1
        published = -1
        while not self.stop.is_set():
            if version == published:
                version, _ = self.feed.wait_newer(version, 2.0)
                continue
            units = [u for u in self.feed.current.units if u.healthy]
            try:
                self.publisher.publish(units)
            except KataVfioError as exc:
                log.error("publishing the ResourceSlices failed (retried): %s", exc)
                self.stop.wait(_PUBLISH_RETRY)
                continue
            published = version
            log.info("published %d device(s) in the ResourceSlices", len(units))


def run_dra_plugin(
    config: DraConfig,
    stop: threading.Event,
    claims: ClaimSource,
    slices: SlicePublisher | None = None,
    *,
    events: EventSource | None = None,
    hook: StepHook | None = None,
) -> None:
    """Runs the plugin until ``stop`` is set (see the module docstring). ``events`` replaces
    the kernel's uevents and ``hook`` sees each prepare step (tests). Raises
    :class:`KataVfioError` when it cannot start, or when the kubelet refuses the
    registration."""
    validate_driver_name(config.driver)
    for directory, what in ((config.plugin_dir, "plugin"), (config.registry_dir, "registry")):
        if not os.path.isdir(directory):
            raise KubernetesError(
                f"the kubelet's {what} directory {directory} does not exist",
                hint=f"mount it from the host or pass --{what}-dir",
            )
    access = config.access
    pool = pool_name(config.node)
    preparer = Preparer(
        driver=config.driver,
        pool=pool,
        access=access,
        state_dir=config.state,
        boot_id=read_boot_id(access.paths.procfs),
        specs=ClaimSpecs(config.cdi_dir, config.driver),
        claims=claims,
        hook=hook,
    )
    preparer.recover()
    watch = WatchConfig(
        access.paths,
        access.resources,
        iommu_mode=access.iommu_mode,
        rescan_interval=config.rescan_interval,
        details=True,
        bind_on_prepare=True,
    )
    source = events or default_events(access.paths, config.uevents)
    watcher = HostWatcher(
        watch, None, source, review=lambda inv: with_refusals(inv, access, preparer.journal_dir)
    )
    threads: list[threading.Thread] = []
    servers: list[UnixGrpcServer] = []
    try:
        watcher.refresh("start")
        feed = watcher.feed
        assert feed is not None  # refresh() published the first inventory
        registration = RegistrationService(config.driver, config.endpoint)
        make_directories(os.path.dirname(config.endpoint), mode=0o750)
        servers.append(_dra_server(config, preparer, feed, stop))
        servers.append(
            UnixGrpcServer(
                config.registration_socket,
                lambda server: load_api(
                    "pluginregistration/v1"
                ).services.add_RegistrationServicer_to_server(registration, server),
                name=f"{config.driver} registration",
                hint=f"check that {config.registry_dir} is the kubelet's plugins_registry",
            )
        )
        for server in servers:
            server.start()
        threads.append(threading.Thread(target=watcher.run, args=(stop,), name="kv-dra-watch"))
        if slices is not None:
            threads.append(
                threading.Thread(target=_Slices(slices, feed, stop).run, name="kv-dra-slices")
            )
        for thread in threads:
            thread.start()
        _serve(config, stop, servers, registration, preparer)
    finally:
        stop.set()
        if watcher.feed is not None:
            watcher.feed.wake()
        for server in reversed(servers):
            server.stop()
        for thread in threads:
            thread.join()
        source.close()
        if config.cleanup and slices is not None:
            _delete_slices(slices)
    kept = len(preparer.prepared())
    log.info("stopped after %d scans; %d claim(s) stay prepared", watcher.scans, kept)


def _dra_server(
    config: DraConfig, preparer: Preparer, feed: InventoryFeed, stop: threading.Event
) -> UnixGrpcServer:
    health = HealthService(
        feed, preparer.pool, stop, preparer.prepared, heartbeat=config.rescan_interval
    )

    def add(server: grpc.Server) -> None:
        for api in ("dra/v1", "dra/v1beta1"):
            service = DraPluginService(preparer, api, config.deadline)
            load_api(api).services.add_DRAPluginServicer_to_server(service, server)
        load_api("dra-health/v1").services.add_DRAResourceHealthServicer_to_server(health, server)

    return UnixGrpcServer(
        config.endpoint,
        add,
        name=config.driver,
        hint=f"check that {config.plugin_dir} is the kubelet's plugins directory",
    )


def _serve(
    config: DraConfig,
    stop: threading.Event,
    servers: list[UnixGrpcServer],
    registration: RegistrationService,
    preparer: Preparer,
) -> None:
    reconcile = max(config.reconcile_interval, _POLL)
    waited = 0.0
    while not stop.is_set():
        if registration.refused is not None:
            raise KubernetesError(
                f"the kubelet refused the DRA plugin {config.driver}: {registration.refused}",
                hint="check the kubelet's log; is DRA enabled and the driver name unique?",
            )
        for server in servers:
            if not server.socket_present():
                log.warning("%s was removed; serving anew", server.path)
                server.restart()
        if waited >= reconcile:
            waited = 0.0
            preparer.release_gone()
        registration.changed.wait(_POLL)
        registration.changed.clear()
        waited += _POLL
    log.info("stopping: removing the sockets, keeping the CDI specs and the checkpoint")


def _delete_slices(slices: SlicePublisher) -> None:
    try:
        slices.delete_all()
    except KataVfioError as exc:
        log.error("deleting the ResourceSlices failed: %s", exc)
        return
    log.info("deleted the ResourceSlices of this node (--cleanup)")
