"""Keeping the node inventory current: rescans on kernel uevents and on a timer, the CDI specs
written before anything is advertised, and a feed that wakes every watcher on a change.

One thread (:meth:`HostWatcher.run`) owns the scan, the inventory and the CDI writer. A rescan
happens when the kernel reports a relevant uevent (a PCI function added, removed, bound or
unbound; a VFIO group or cdev node added or removed), when the uevent buffer overflowed (events
were lost), and every ``rescan_interval`` seconds everywhere (hosts without netlink, events the
kernel does not send: a node deleted from devfs). Readers (``ListAndWatch``, ``Allocate``) only
read the last published :class:`~kata_vfio.k8s.inventory.Inventory`, in memory.

A unit is published Healthy only when its device is in the CDI spec on disk: when a spec write
fails, the units it would have added are published Unhealthy with the error, and the write is
retried on the next rescan.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kata_vfio._core import HostPaths, UeventMonitor, scan
from kata_vfio.errors import KataVfioError
from kata_vfio.k8s.cdispec import CdiSpecWriter, SpecChange
from kata_vfio.k8s.inventory import (
    Inventory,
    ResourceUnits,
    Unit,
    build_inventory,
    list_devfs_nodes,
    resolve_iommu_mode,
)
from kata_vfio.k8s.resources import ResourceSpec

__all__ = [
    "EventSource",
    "HostWatcher",
    "InventoryFeed",
    "KernelEvents",
    "ManualEvents",
    "NoEvents",
    "WatchConfig",
    "default_events",
]

log = logging.getLogger(__name__)

# Subsystems whose uevents can change a unit: PCI functions (add, remove, bind, unbind,
# change), VFIO group nodes (class vfio) and cdevs (class vfio-dev).
UEVENT_SUBSYSTEMS = ("pci", "vfio", "vfio-dev")
# After the first event, how long to keep collecting: binding a group sends several events in
# a burst, and one rescan covers them all.
_SETTLE = 0.02
# The longest the watcher sleeps before it looks at its stop flag (events end a sleep at once).
_TICK = 2.0


class EventSource(Protocol):
    """Tells the watcher when the host may have changed."""

    def wait(self, timeout: float) -> str | None:
        """Blocks up to ``timeout`` seconds; returns why a rescan is due, or None."""

    def close(self) -> None:
        """Releases what it holds."""


class NoEvents:
    """No event source: the periodic rescan alone (hosts without netlink)."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def wait(self, timeout: float) -> str | None:
        """Sleeps for ``timeout`` (or until closed)."""
        self._stop.wait(timeout)
        return None

    def close(self) -> None:
        """Ends a sleep in progress."""
        self._stop.set()


class ManualEvents:
    """Events a caller injects (tests, and hosts whose changes someone else reports)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()

    def trigger(self, reason: str) -> None:
        """Asks for a rescan, saying why."""
        self._queue.put(reason)

    def wait(self, timeout: float) -> str | None:
        """The next reason, or None after ``timeout``; a burst is one reason."""
        try:
            reason = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return reason

    def close(self) -> None:
        """Nothing to release."""


class KernelEvents:
    """Kernel uevents over netlink (read in the Rust core, the GIL released while waiting)."""

    def __init__(self, subsystems: Sequence[str] = UEVENT_SUBSYSTEMS) -> None:
        self._monitor = UeventMonitor.open(list(subsystems))

    def wait(self, timeout: float) -> str | None:
        """The first relevant event of a burst, described, or None after ``timeout``."""
        batch = self._monitor.receive(timeout)
        if not batch.events and not batch.overflowed:
            return None
        overflowed = batch.overflowed
        events = list(batch.events)
        more = self._monitor.receive(_SETTLE)
        while len(more) or more.overflowed:
            overflowed = overflowed or more.overflowed
            events += more.events
            more = self._monitor.receive(_SETTLE)
        if overflowed:
            return "the uevent buffer overflowed (events lost)"
        first = events[0]
        extra = f" and {len(events) - 1} more" if len(events) > 1 else ""
        return f"uevent {first.action} {first.devpath}{extra}"

    def close(self) -> None:
        """Closes the netlink socket."""
        self._monitor.close()


class InventoryFeed:
    """The last published inventory and its version; :meth:`wait_newer` wakes on change."""

    def __init__(self, inventory: Inventory) -> None:
        self._cond = threading.Condition()
        self._inventory = inventory
        self._version = 0

    @property
    def current(self) -> Inventory:
        """The last published inventory (a plain read: never waits)."""
        return self._inventory

    @property
    def version(self) -> int:
        """Increases with every published change."""
        return self._version

    def publish(self, inventory: Inventory) -> bool:
        """Publishes ``inventory`` if it differs from the current one; returns whether it did."""
        with self._cond:
            if inventory == self._inventory:
                return False
            self._inventory = inventory
            self._version += 1
            self._cond.notify_all()
            return True

    def wake(self) -> None:
        """Wakes every waiter (at shutdown, so streams can end)."""
        with self._cond:
            self._cond.notify_all()

    def wait_newer(self, version: int, timeout: float) -> tuple[int, Inventory]:
        """Waits up to ``timeout`` for a version after ``version``; returns the current one."""
        with self._cond:
            if self._version == version:
                self._cond.wait(timeout)
            return self._version, self._inventory


@dataclass(frozen=True)
class WatchConfig:
    """What the watcher scans and how."""

    paths: HostPaths
    resources: tuple[ResourceSpec, ...]
    iommu_mode: str = "auto"
    rescan_interval: float = 30.0
    details: bool = False
    bind_on_prepare: bool = False
    """The DRA driver's view of the units (see :func:`~kata_vfio.k8s.inventory.build_inventory`)."""


class HostWatcher:
    """Scans, builds the inventory, syncs the CDI specs and publishes (see the module
    docstring). Create it, call :meth:`refresh` once (the first inventory, specs written),
    then :meth:`run` in a thread until ``stop`` is set.

    Without a ``writer`` no spec is written (the DRA driver writes one per claim); ``review``
    may add reasons to units before they are published (the DRA driver's refusals)."""

    def __init__(
        self,
        config: WatchConfig,
        writer: CdiSpecWriter | None,
        events: EventSource,
        review: Callable[[Inventory], Inventory] | None = None,
    ) -> None:
        self.config = config
        self.writer = writer
        self.events = events
        self.review = review
        self.feed: InventoryFeed | None = None
        self.scans = 0

    def refresh(self, reason: str, *, urgent: bool = True) -> Inventory:
        """One rescan: scan, inventory, CDI specs, publish. A failed scan keeps the last
        inventory (and is logged); the first one raises. A rescan that is not ``urgent`` (the
        timer's) scans on one thread: less CPU, and nobody waits for it."""
        config = self.config
        threads = None if urgent else 1
        try:
            host = scan(config.paths, details=config.details, threads=threads)
            mode = resolve_iommu_mode(host, config.iommu_mode)
            inventory = build_inventory(
                host,
                config.resources,
                mode,
                devfs_nodes=list_devfs_nodes(host),
                bind_on_prepare=config.bind_on_prepare,
            )
            if self.review is not None:
                inventory = self.review(inventory)
        except KataVfioError as exc:
            if self.feed is None:
                raise
            log.error("rescan (%s) failed, keeping the last inventory: %s", reason, exc)
            return self.feed.current
        self.scans += 1
        inventory = self._write_specs(inventory)
        if self.feed is None:
            self.feed = InventoryFeed(inventory)
            log.info("inventory (%s): %s", reason, _summary(inventory))
            for unit in inventory.units:
                _log_unit(unit, None)
            return inventory
        old = self.feed.current
        if self.feed.publish(inventory):
            if old.mode != inventory.mode:
                log.info("IOMMU mode is now %s (was %s)", inventory.mode, old.mode)
            _log_changes(old, inventory, reason)
        return inventory

    def run(self, stop: threading.Event) -> None:
        """Rescans on events and on the timer until ``stop`` is set."""
        interval = max(self.config.rescan_interval, 0.05)
        due = time.monotonic() + interval
        while not stop.is_set():
            wait = min(max(due - time.monotonic(), 0.0), _TICK)
            try:
                reason = self.events.wait(wait)
            except KataVfioError as exc:
                log.error("reading kernel uevents failed, rescanning on the timer only: %s", exc)
                self.events.close()
                self.events = NoEvents()
                continue
            if stop.is_set():
                break
            if reason is None and time.monotonic() < due:
                continue
            if reason is None:
                self.refresh(f"periodic rescan every {interval:g} s", urgent=False)
            else:
                self.refresh(reason)
            due = time.monotonic() + interval

    def _write_specs(self, inventory: Inventory) -> Inventory:
        if self.writer is None:
            return inventory
        error = None
        try:
            for change in self.writer.sync(inventory):
                _log_spec_change(change)
        except KataVfioError as exc:
            error = str(exc)
            log.error("writing the CDI specs in %s failed: %s", self.writer.cdi_dir, exc)
        return _advertisable(inventory, self.writer, error)


def _advertisable(inventory: Inventory, writer: CdiSpecWriter, error: str | None) -> Inventory:
    """Marks Unhealthy every Healthy unit whose device is not in the spec on disk."""
    specs = writer.current()
    resources = []
    for entry in inventory.resources:
        spec = specs.get(entry.resource.name)
        written = set() if spec is None else {d.name for d in spec.devices}
        units = tuple(
            u
            if not u.healthy or u.id in written
            else dataclasses.replace(
                u,
                reasons=(
                    f"not in the CDI spec {writer.path_for(u.resource)}"
                    + (f": {error}" if error else ""),
                ),
            )
            for u in entry.units
        )
        resources.append(ResourceUnits(entry.resource, units))
    return dataclasses.replace(inventory, resources=tuple(resources))


def _summary(inventory: Inventory) -> str:
    parts = [
        f"{r.resource.name}: {len(r.healthy)} healthy of {len(r.units)}"
        for r in inventory.resources
    ]
    extra = f"; host: {'; '.join(inventory.host_problems)}" if inventory.host_problems else ""
    return f"mode {inventory.mode}, " + ", ".join(parts) + extra


def _log_unit(unit: Unit, before: Unit | None) -> None:
    state = "Healthy" if unit.healthy else "Unhealthy"
    functions = ",".join(str(b) for b in unit.bdfs) or "no endpoints"
    where = f"{unit.cdi_name} (group {unit.group}: {functions})"
    why = "" if unit.healthy else f": {'; '.join(unit.reasons)}"
    if before is None:
        log.info("unit %s %s%s", where, state, why)
    elif before.healthy != unit.healthy:
        was = "Healthy" if before.healthy else "Unhealthy"
        log.info("unit %s %s -> %s%s", where, was, state, why)
    elif before != unit:
        log.info("unit %s changed (%s)", where, state)


def _log_changes(old: Inventory, new: Inventory, reason: str) -> None:
    log.info("inventory changed (%s): %s", reason, _summary(new))
    before = {(u.resource, u.id): u for u in old.units}
    after = {(u.resource, u.id): u for u in new.units}
    for key, unit in after.items():
        _log_unit(unit, before.get(key))
    for key, unit in before.items():
        if key not in after:
            log.info("unit %s gone from the host", unit.cdi_name)


def _log_spec_change(change: SpecChange) -> None:
    if change.deleted:
        log.info("removed CDI spec %s (no units left)", change.path)
        return
    log.info(
        "wrote CDI spec %s: added %s, removed %s, changed %s",
        change.path,
        ", ".join(change.added) or "none",
        ", ".join(change.removed) or "none",
        ", ".join(change.changed) or "none",
    )


def default_events(paths: HostPaths, enabled: bool = True) -> EventSource:
    """Kernel uevents for this machine's ``/sys``; the timer alone for a copied or fake tree
    (the kernel's events are about this machine, not about that tree) or without netlink."""
    if not enabled or not paths.is_live:
        return NoEvents()
    try:
        return KernelEvents()
    except KataVfioError as exc:
        log.warning("no kernel uevents (%s); rescanning on the timer only", exc)
        return NoEvents()
