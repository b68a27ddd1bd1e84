"""Preparing and unpreparing claims: whole IOMMU groups bound to vfio with the journal, a
per-claim CDI spec, a checkpoint, and recovery after a crash or a reboot.

``prepare(claim)``, one claim at a time (a lock; a caller that cannot get it before its
deadline gets a "busy" error naming what holds it, instead of waiting past kubelet's 45 s):

1. the devices the scheduler allocated to the claim for this driver and this node's pool
   (:class:`~kata_vfio.k8s.dra.ports.ClaimSource`), each mapped to a unit of a fresh scan;
   a device this node does not have, or a unit that is not viable, fails the claim before
   anything is written;
2. the checkpoint records the claim ``preparing`` with its units;
3. each unit's whole group is bound to vfio-pci (or its variant driver) by
   :func:`kata_vfio.binding.bind`, which journals each device's original driver before its
   first write and refuses devices the host uses (a mounted disk, a live NIC);
4. a rescan names the group's VFIO nodes, and the claim's CDI spec is written;
5. the checkpoint records the claim ``prepared`` with its CDI device IDs.

A failure or the deadline at any step rolls back everything the claim touched (restore from
the journal, spec removed, record dropped) and returns an error that names the device and
the reason: ``busy``, ``refused``, ``not viable``, ``unknown device``, ``timed out``. A repeated
prepare of a prepared claim returns the same IDs and binds nothing.

``unprepare(claim)`` records ``unpreparing``, restores each device to the driver its journal
entry recorded (whatever that was: not a fixed driver), removes the spec and drops the record;
a claim it does not know is already unprepared.

``recover()`` runs at start: a record still ``preparing`` is rolled back, one ``unpreparing``
is finished, one ``prepared`` whose claim no longer exists (the API server says 404) is
unprepared; journal entries no record covers are restored; spec files of claims not prepared
are removed. The journal lives in ``<state-dir>/journal/<boot-id>``: after a reboot the old
one, which describes bindings the reboot undid, is removed unread rather than replayed.
"""

from __future__ import annotations

import dataclasses
import errno as errno_codes
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from kata_vfio import binding
from kata_vfio._core import HostPaths, scan
from kata_vfio._trust import make_directories
from kata_vfio.errors import BindError, ClaimError, ClaimGoneError, KataVfioError
from kata_vfio.k8s.dra.checkpoint import Checkpoint, ClaimRecord, PreparedUnit
from kata_vfio.k8s.dra.claimspec import ClaimSpecs, validate_claim_uid
from kata_vfio.k8s.dra.ports import AllocatedDevice, ClaimRef, ClaimSource, unit_id_of
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
    "DEFAULT_DEADLINE",
    "ClaimResult",
    "Deadline",
    "HostAccess",
    "Preparer",
    "StepHook",
    "dra_inventory",
    "with_refusals",
]

DEFAULT_DEADLINE = 30.0
"""Seconds a prepare or unprepare call may take: well inside the kubelet's 45 s."""

StepHook = Callable[[str], None]
"""Called with the name of each step a prepare or unprepare finished (crash tests)."""

log = logging.getLogger(__name__)


class Deadline:
    """A point in time a call must finish by."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(self.end - time.monotonic(), 0.0)

    def check(self, step: str) -> None:
        """Raises :class:`_TimedOut` when the deadline has passed before ``step``."""
        if time.monotonic() >= self.end:
            raise _TimedOut(f"timed out: {self.seconds:g} s passed before {step}")


class _TimedOut(Exception):
    """The deadline passed between two steps (internal: becomes a claim's error)."""


class _ClaimFailed(Exception):
    """A claim cannot be prepared (internal: becomes a claim's error)."""


@dataclass(frozen=True)
class HostAccess:
    """Where the host is and how binding reaches it (tests inject the kernel simulator)."""

    paths: HostPaths
    resources: tuple[ResourceSpec, ...]
    iommu_mode: str = "auto"
    modules_root: str = "/"
    kernel_release: str | None = None
    sysfs_writer: binding.SysfsWriter | None = None
    module_loader: binding.ModuleLoader | None = None


@dataclass(frozen=True)
class ClaimResult:
    """What a prepare or unprepare did for one claim: its units, or an error."""

    units: tuple[PreparedUnit, ...] = ()
    error: str = ""


def dra_inventory(access: HostAccess) -> Inventory:
    """A fresh scan's units as the DRA driver sees them: groups not on vfio yet count as
    allocatable (they are bound at prepare)."""
    host = scan(access.paths, details=True)
    mode = resolve_iommu_mode(host, access.iommu_mode)
    return build_inventory(
        host,
        access.resources,
        mode,
        devfs_nodes=list_devfs_nodes(host),
        bind_on_prepare=True,
    )


def _bind_group(
    access: HostAccess, bdfs: Sequence[str], journal_dir: str, *, dry_run: bool = False
) -> binding.BindReport:
    return binding.bind(
        list(bdfs),
        group=True,
        dry_run=dry_run,
        paths=access.paths,
        state_dir=journal_dir,
        modules_root=access.modules_root,
        kernel_release=access.kernel_release,
        module_loader=access.module_loader,
        sysfs_writer=access.sysfs_writer,
    )


def with_refusals(inventory: Inventory, access: HostAccess, journal_dir: str) -> Inventory:
    """``inventory`` with a reason on each Healthy unit not on vfio yet whose binding would be
    refused (a member backs a mounted filesystem, has a live interface, is the boot VGA...):
    a dry run of the prepare's bind, which writes nothing. The scheduler must not be offered
    a unit whose prepare is certain to fail. Each Healthy unit also gets its
    ``passthrough_driver``: the dry run's target, or the vfio driver it is on already."""
    resources = []
    for entry in inventory.resources:
        units = [_refusal_checked(u, access, journal_dir) for u in entry.units]
        resources.append(ResourceUnits(entry.resource, tuple(units)))
    return dataclasses.replace(inventory, resources=tuple(resources))


def _refusal_checked(unit: Unit, access: HostAccess, journal_dir: str) -> Unit:
    if not unit.healthy:
        return unit
    primary = next((f for f in unit.functions if str(f.bdf) == unit.id), None)
    if all(f.vfio_bound for f in unit.functions):
        driver = None if primary is None else primary.driver
        return dataclasses.replace(unit, passthrough_driver=driver)
    try:
        report = _bind_group(access, [str(b) for b in unit.bdfs], journal_dir, dry_run=True)
    except BindError as exc:
        if exc.errno is None:
            return dataclasses.replace(unit, reasons=(f"prepare would be refused: {exc}",))
        return unit
    except KataVfioError:
        return unit  # a device that vanished: the next rescan says so
    target = next((o.target for o in report.devices if str(o.bdf) == unit.id), None)
    return dataclasses.replace(unit, passthrough_driver=target)


@dataclass
class _Busy:
    what: str = ""
    since: float = field(default_factory=time.monotonic)


class Preparer:
    """Prepares and unprepares claims of driver ``driver`` on node ``node`` (see the module
    docstring). Thread-safe: one claim at a time."""

    def __init__(
        self,
        *,
        driver: str,
        pool: str,
        access: HostAccess,
        state_dir: str,
        boot_id: str,
        specs: ClaimSpecs,
        claims: ClaimSource,
        hook: StepHook | None = None,
    ) -> None:
        self.driver = driver
        self.pool = pool
        self.access = access
        self.specs = specs
        self.claims = claims
        self.hook = hook
        self.checkpoint = Checkpoint(state_dir, boot_id)
        self.journal_root = os.path.join(state_dir, "journal")
        self.journal_dir = os.path.join(self.journal_root, boot_id)
        self._lock = threading.Lock()
        self._busy = _Busy()

    # --- the kubelet's calls ------------------------------------------------------------

    def prepare(self, claim: ClaimRef, deadline: Deadline) -> ClaimResult:
        """Prepares one claim (see the module docstring); never raises for the claim's own
        problems, which come back as ``error``."""
        return self._serialised(claim, "prepare", deadline, self._prepare)

    def unprepare(self, claim: ClaimRef, deadline: Deadline) -> ClaimResult:
        """Unprepares one claim; a claim this plugin does not know is done already."""
        return self._serialised(claim, "unprepare", deadline, self._unprepare)

    def recover(self) -> None:
        """Brings the host in line with the checkpoint after a start (see the module
        docstring). Raises :class:`KataVfioError` when the state directory is unusable."""
        with self._lock:
            self._busy = _Busy("recovery at start")
            self._recover()

    def release_gone(self) -> None:
        """Unprepares prepared claims that no longer exist (a periodic check: pods
        force-deleted while the plugin was away). The API server is asked without the lock,
        so a slow answer never holds up a kubelet call."""
        gone = [r.claim.uid for r in self.prepared() if self._is_gone(r)]
        if not gone or not self._lock.acquire(timeout=0):
            return  # nothing to do, or a kubelet call is running: the next round looks again
        try:
            self._busy = _Busy("the release of claims that no longer exist")
            for uid in gone:
                record = self.checkpoint.get(uid)
                if record is not None and record.state == "prepared":
                    self._release_quietly(record, "its claim no longer exists")
        finally:
            self._lock.release()

    def prepared(self) -> list[ClaimRecord]:
        """The claims prepared now (a snapshot, read without the lock)."""
        return [r for r in self.checkpoint if r.state == "prepared"]

    # --- steps --------------------------------------------------------------------------

    def _serialised(
        self,
        claim: ClaimRef,
        verb: str,
        deadline: Deadline,
        work: Callable[[ClaimRef, Deadline], tuple[PreparedUnit, ...]],
    ) -> ClaimResult:
        try:
            validate_claim_uid(claim.uid)
        except KataVfioError as exc:
            return ClaimResult(error=f"{verb} {claim}: {exc}")
        if not self._lock.acquire(timeout=deadline.remaining()):
            busy = self._busy
            age = time.monotonic() - busy.since
            message = (
                f"busy: cannot {verb} {claim} now, {busy.what} has been running for "
                f"{age:.1f} s; the kubelet retries"
            )
            log.warning("%s", message)
            return ClaimResult(error=message)
        try:
            self._busy = _Busy(f"the {verb} of {claim}")
            started = time.monotonic()
            units = work(claim, deadline)
        except (_ClaimFailed, _TimedOut) as exc:
            log.error("%s %s failed: %s", verb, claim, exc)
            return ClaimResult(error=f"{verb} {claim}: {exc}")
        except KataVfioError as exc:
            # The state directory failed under us (disk full, removed): the record says
            # what was done, and the next call or start finishes or undoes it.
            log.error("%s %s failed in the state directory: %s", verb, claim, exc)
            return ClaimResult(error=f"{verb} {claim}: the plugin's state failed: {exc}")
        finally:
            self._lock.release()
        log.info("%s %s done in %.3f s", verb, claim, time.monotonic() - started)
        return ClaimResult(units)

    def _step(self, name: str) -> None:
        if self.hook is not None:
            self.hook(name)

    def _prepare(self, claim: ClaimRef, deadline: Deadline) -> tuple[PreparedUnit, ...]:
        record = self.checkpoint.get(claim.uid)
        if record is not None and record.state == "prepared":
            if os.path.exists(self.specs.path_for(claim.uid)):
                log.info("%s is prepared already: same CDI devices, nothing bound", claim)
                return record.units
            log.warning("%s: its CDI spec is gone; writing it again", claim)
            return self._write_spec(record, self._inventory(), rollback=False)
        if record is not None:
            log.warning("%s was left %s; rolling it back first", claim, record.state)
            self._release(record, "a retried prepare")
        wanted = self._allocated(claim)
        if not wanted:
            log.info("%s has no devices of %s in pool %s", claim, self.driver, self.pool)
            return ()
        inventory = self._inventory()
        units = self._units(inventory, wanted)
        deadline.check("binding")
        record = ClaimRecord(claim, "preparing", units)
        self.checkpoint.put(record)
        self._step("preparing-recorded")
        try:
            for unit in units:
                deadline.check(f"binding group {unit.group} ({unit.device})")
                self._bind(unit)
                self._step(f"bound {unit.device}")
            deadline.check("writing the CDI spec")
            return self._write_spec(record, self._inventory(), rollback=True)
        except (_ClaimFailed, _TimedOut) as exc:
            self._rollback(record, str(exc))
            raise

    def _write_spec(
        self, record: ClaimRecord, inventory: Inventory, *, rollback: bool
    ) -> tuple[PreparedUnit, ...]:
        by_id = {u.id: u for u in inventory.units}
        devices = []
        for prepared in record.units:
            unit = by_id.get(prepared.unit_id)
            if unit is None or not unit.healthy or not unit.nodes:
                why = "gone from the host" if unit is None else "; ".join(unit.reasons)
                raise _ClaimFailed(
                    f"device {prepared.device} (group {prepared.group}) is not viable after "
                    f"binding: {why or 'its VFIO nodes cannot be named'}"
                )
            devices.append((prepared.device, unit.nodes))
        try:
            path = self.specs.write(record.claim.uid, devices, inventory.mode)
        except KataVfioError as exc:
            raise _ClaimFailed(f"writing its CDI spec failed: {exc}") from None
        self._step("spec-written")
        log.info(
            "%s: wrote %s (%s)",
            record.claim,
            path,
            ", ".join(f"{name}: {' '.join(nodes)}" for name, nodes in devices),
        )
        units = tuple(
            PreparedUnit(
                u.device,
                u.requests,
                u.unit_id,
                u.group,
                u.bdfs,
                self.specs.cdi_id(record.claim.uid, u.device),
            )
            for u in record.units
        )
        try:
            self.checkpoint.put(ClaimRecord(record.claim, "prepared", units))
        except KataVfioError as exc:
            if rollback:
                raise _ClaimFailed(f"recording it in the checkpoint failed: {exc}") from None
            raise
        self._step("prepared-recorded")
        return units

    def _allocated(self, claim: ClaimRef) -> list[AllocatedDevice]:
        try:
            devices = self.claims.allocated(claim)
        except ClaimError as exc:
            raise _ClaimFailed(str(exc)) from None
        except KataVfioError as exc:
            raise _ClaimFailed(f"reading the claim failed: {exc}") from None
        return [d for d in devices if d.driver == self.driver and d.pool == self.pool]

    def _inventory(self) -> Inventory:
        try:
            return dra_inventory(self.access)
        except KataVfioError as exc:
            raise _ClaimFailed(f"scanning the host failed: {exc}") from None

    def _units(
        self, inventory: Inventory, wanted: Sequence[AllocatedDevice]
    ) -> tuple[PreparedUnit, ...]:
        by_id: dict[str, Unit] = {}
        for entry in inventory.units:
            by_id.setdefault(entry.id, entry)  # a group two resources select: the first
        requests: dict[str, list[str]] = {}
        for device in wanted:
            requests.setdefault(device.device, []).append(device.request)
        units = []
        for name, names in requests.items():
            unit_id = unit_id_of(name)
            unit = None if unit_id is None else by_id.get(unit_id)
            if unit is None:
                raise _ClaimFailed(
                    f"unknown device {name!r}: node {self.pool} has no such unit of "
                    f"{self.driver} (was the ResourceSlice stale?)"
                )
            if not unit.healthy:
                raise _ClaimFailed(
                    f"device {name} (group {unit.group}) is not viable: " + "; ".join(unit.reasons)
                )
            units.append(
                PreparedUnit(
                    name, tuple(names), unit.id, unit.group, tuple(str(b) for b in unit.bdfs)
                )
            )
        return tuple(units)

    def _bind(self, unit: PreparedUnit) -> None:
        started = time.monotonic()
        try:
            report = _bind_group(self.access, unit.bdfs, self.journal_dir)
        except BindError as exc:
            reason = (
                "refused"
                if exc.errno is None
                else "busy"
                if exc.errno == errno_codes.EBUSY
                else "binding failed"
            )
            raise _ClaimFailed(
                f"device {unit.device} (group {unit.group}): {reason}: {exc}"
            ) from None
        except KataVfioError as exc:
            raise _ClaimFailed(
                f"device {unit.device} (group {unit.group}): binding failed: {exc}"
            ) from None
        for outcome in report.devices:
            log.info(
                "group %d: %s %s (%s -> %s)",
                unit.group,
                outcome.bdf,
                outcome.action,
                outcome.driver_before,
                outcome.driver_after,
            )
        log.info(
            "bound group %d of %s in %.3f s (%d sysfs writes)",
            unit.group,
            unit.device,
            time.monotonic() - started,
            len(report.writes),
        )

    def _unprepare(self, claim: ClaimRef, deadline: Deadline) -> tuple[PreparedUnit, ...]:
        del deadline  # restores are bounded by the core (EBUSY retried ~0.3 s, then refused)
        record = self.checkpoint.get(claim.uid)
        if record is None:
            if self.specs.remove(claim.uid):
                log.info("%s: removed a CDI spec no record covered", claim)
            log.info("%s is not prepared here: nothing to undo", claim)
            return ()
        self._release(record, "unprepare")
        return ()

    def _release(self, record: ClaimRecord, why: str) -> None:
        """Undoes a claim: restore, spec removed, record dropped; raises _ClaimFailed (the
        record is then kept, ``unpreparing``, for the next try)."""
        if record.state != "unpreparing":
            record = ClaimRecord(record.claim, "unpreparing", record.units)
            self.checkpoint.put(record)
            self._step("unpreparing-recorded")
        self._restore(record, why)
        self._step("restored")
        if self.specs.remove(record.claim.uid):
            log.info("%s: removed its CDI spec", record.claim)
        self._step("spec-removed")
        self.checkpoint.remove(record.claim.uid)
        self._step("record-removed")
        log.info("%s released (%s)", record.claim, why)

    def _rollback(self, record: ClaimRecord, error: str) -> None:
        log.warning("%s: rolling back (%s)", record.claim, error)
        try:
            self._release(record, "rollback")
        except (_ClaimFailed, KataVfioError) as exc:
            raise _ClaimFailed(
                f"{error}; the rollback failed too and is retried at the next call or start: {exc}"
            ) from None

    def _restore(self, record: ClaimRecord, why: str) -> None:
        shared = {b for r in self.checkpoint if r.claim.uid != record.claim.uid for u in r.units
                  for b in u.bdfs}  # fmt: skip
        bdfs = [b for u in record.units for b in u.bdfs if b not in shared]
        if not bdfs:
            return
        self._restore_devices(bdfs, f"{record.claim} ({why})")

    def _restore_devices(self, bdfs: Iterable[str], whose: str) -> None:
        try:
            report = binding.restore(
                list(bdfs),
                paths=self.access.paths,
                state_dir=self.journal_dir,
                sysfs_writer=self.access.sysfs_writer,
            )
        except KataVfioError as exc:
            raise _ClaimFailed(f"restoring the devices of {whose} failed: {exc}") from None
        for outcome in report.devices:
            log.info(
                "%s: %s %s (%s -> %s)",
                whose,
                outcome.bdf,
                outcome.action,
                outcome.driver_before,
                outcome.driver_after,
            )
        for problem in report.problems:
            log.warning("journal: %s", problem)

    # --- recovery -----------------------------------------------------------------------

    def _recover(self) -> None:
        dropped = self.checkpoint.load()
        if dropped is not None:
            log.warning("checkpoint dropped: %s", dropped)
        self._drop_old_journals()
        make_directories(self.journal_dir, mode=0o700)
        for path in self.specs.remove_temporaries():
            log.info("removed %s, left by an interrupted write", path)
        for record in self.checkpoint:
            try:
                if record.state == "prepared":
                    self._release_if_gone(record)
                else:
                    verb = record.state.removesuffix("ing") + "e"
                    log.warning("%s: its %s was interrupted; undoing it", record.claim, verb)
                    self._release(record, f"recovery of an interrupted {verb}")
            except _ClaimFailed as exc:
                log.error("%s: recovery failed, retried at the next start: %s", record.claim, exc)
        self._restore_orphans()
        kept = {r.claim.uid for r in self.checkpoint if r.state == "prepared"}
        for uid in self.specs.claims_on_disk():
            if uid not in kept:
                self.specs.remove(uid)
                log.info("removed the CDI spec of claim %s, which is not prepared here", uid)
        log.info("recovered: %d claim(s) prepared", len(kept))

    def _release_if_gone(self, record: ClaimRecord) -> None:
        if self._is_gone(record):
            self._release_quietly(record, "its claim no longer exists")

    def _is_gone(self, record: ClaimRecord) -> bool:
        """Whether the API server says the claim is gone (an error that is not a 404 keeps
        the claim: its pod may still run)."""
        try:
            self.claims.allocated(record.claim)
        except ClaimGoneError as exc:
            log.warning("%s: %s; unpreparing it", record.claim, exc)
            return True
        except KataVfioError as exc:
            log.warning(
                "%s: cannot tell whether it still exists (%s); keeping it", record.claim, exc
            )
        return False

    def _release_quietly(self, record: ClaimRecord, why: str) -> None:
        try:
            self._release(record, why)
        except (_ClaimFailed, KataVfioError) as exc:
            log.error("%s: releasing it failed, retried later: %s", record.claim, exc)

    def _restore_orphans(self) -> None:
        covered = {b for r in self.checkpoint for u in r.units for b in u.bdfs}
        journal = binding.read_journal(self.journal_dir)
        for problem in journal.problems:
            log.warning("journal: %s", problem)
        orphans = [str(e.bdf) for e in journal.entries if str(e.bdf) not in covered]
        if not orphans:
            return
        log.warning("restoring %s: on vfio for no claim this plugin knows", ", ".join(orphans))
        try:
            self._restore_devices(orphans, "devices of no claim")
        except _ClaimFailed as exc:
            log.error("%s", exc)

    def _drop_old_journals(self) -> None:
        """Journals of other boots describe bindings a reboot undid: removed, not replayed."""
        try:
            names = os.listdir(self.journal_root)
        except FileNotFoundError:
            return
        for name in names:
            if name != os.path.basename(self.journal_dir):
                shutil.rmtree(os.path.join(self.journal_root, name), ignore_errors=True)
                log.info("removed the binding journal of boot %s (another boot)", name)
