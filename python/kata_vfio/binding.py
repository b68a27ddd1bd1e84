"""Bind devices to vfio-pci (or their vfio variant driver) safely, and put them back.

The work is done by the Rust core with the kernel's ``driver_override`` protocol: write the
driver to ``<dev>/driver_override``, write the address to the current driver's ``unbind``,
write it to ``/sys/bus/pci/drivers_probe``, then read ``<dev>/driver`` back to verify.

Rules, in short:

- **Whole groups.** When the device's IOMMU group has several endpoints, all of them are
  bound (``group=None``, the default, says so in ``report.messages``); ``group=True`` always
  takes the whole group, ``group=False`` only the named devices (the group then stays not
  viable). Bridges and ports are never touched.
- **Journal.** Before a device's first write, its original driver and override are
  recorded in ``state_dir`` (default :func:`default_state_dir`: ``/run/kata-vfio`` for this
  machine, ``run/kata-vfio`` beside a copied or fake tree), atomically and fsynced.
  :func:`restore` replays it, also after the binding process was killed at any point. The
  directory must belong to the caller with no group/other write (it is made 0700); its
  files are opened without following symlinks, must be regular files of at most 4 KiB, and
  an entry's ``bdf=`` must be its file name. A damaged file is reported (``problems``) and
  skipped; the other entries still count.
- **All or nothing.** A failure part-way through a group rolls back every device touched
  in that call; the :class:`~kata_vfio.errors.BindError` says what was rolled back, and a
  device the call never reached has no journal entry.
- **Idempotent.** Binding a bound device writes nothing and keeps the first journal entry.
- **Refusals.** A device backing a mounted filesystem or swap, with a network interface that
  is up with an address or route, or the boot VGA/console device, and a platform function
  (host/ISA/LPC bridge, SMBus, the IOMMU...) are refused unless ``force=True`` (the report's
  ``overridden`` then says what was). A refusal's hint names the steps that help, in words
  for the CLI and the API alike (``--force (force=True) acts anyway``). :func:`restore` and
  :func:`unbind` act on a journal entry only when the device's driver and override are ones
  a bind passes through (the target, none, or the recorded original), ask the same in-use
  questions before unbinding anything but a vfio driver, and refuse a device whose IOMMU
  group or cdev is open (a running VM) instead of blocking in the kernel.
- **The tree given is the tree touched.** Every sysfs read and write resolves beneath
  ``sysfs_root`` (an absolute symlink or ``..`` out of it is refused); writes never create,
  truncate or follow a symlink; on the real ``/sys`` they must land on sysfs.
- **Variant drivers** come from ``<modules_root>/lib/modules/<release>/modules.alias``
  (``vfio_pci:`` aliases); a missing driver's module is loaded by the injected
  ``module_loader``, else by ``paths.modprobe`` for this machine's ``/sys`` (for any other
  sysfs tree nothing is loaded unless ``paths`` names a modprobe other than the default),
  run as an argument list with an environment of ``PATH`` alone.
- **Dry run.** ``dry_run=True`` returns the exact writes (:func:`describe_write` renders
  them) and changes nothing.
- **Paths.** ``paths`` (a :class:`~kata_vfio.HostPaths`, default this machine's) says where
  sysfs and procfs are and which modprobe to run.

Calling it (as root; the lab does exactly this)::

    from kata_vfio import binding

    report = binding.bind(["0000:05:00.0"])           # the whole group 12 goes to vfio-pci
    for outcome in report.devices:
        print(outcome.bdf, outcome.action, outcome.driver_before, "->", outcome.driver_after)
    binding.restore()                                 # every journaled device goes back

Tests inject a :class:`~kata_vfio.testing.kernel_sim.KernelSim` through ``sysfs_writer`` and
``module_loader`` so a fake tree reacts as a kernel would.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kata_vfio import _core
from kata_vfio._core import Bdf, BindOutcome, BindReport, HostPaths, JournalEntry, SysfsWrite
from kata_vfio.errors import KataVfioError
from kata_vfio.host import render

__all__ = [
    "DEFAULT_STATE_DIR",
    "BindOutcome",
    "BindReport",
    "Journal",
    "JournalEntry",
    "ModuleLoader",
    "SysfsWrite",
    "SysfsWriter",
    "bind",
    "default_state_dir",
    "describe_write",
    "journal",
    "read_journal",
    "report_dict",
    "restore",
    "unbind",
]

DEFAULT_STATE_DIR = "/run/kata-vfio"
"""Where the binding journal lives (tmpfs: a reboot forgets it, as it forgets bindings)."""

SysfsWriter = Callable[[str, bytes], object]
"""``writer(path, data)``: one sysfs write; raise ``OSError`` with the kernel's errno."""

ModuleLoader = Callable[[str], object]
"""``loader(module)``: load a kernel module; raise to report why not."""

Devices = Iterable["Bdf | str"] | Bdf | str


def default_state_dir(paths: HostPaths | None = None) -> str:
    """The journal directory for a host: :data:`DEFAULT_STATE_DIR` for this machine,
    ``run/kata-vfio`` beside a copied or fake sysfs tree (so it never touches ours)."""
    if paths is None or paths.is_live:
        return DEFAULT_STATE_DIR
    return os.path.join(os.path.dirname(os.path.abspath(paths.sysfs)), "run", "kata-vfio")


def _as_list(devices: Devices) -> list[Bdf | str]:
    if isinstance(devices, (str, Bdf)):
        return [devices]
    return list(devices)


@contextlib.contextmanager
def _remedies_worded() -> Iterator[None]:
    """The core names the steps that help as data (``force``, ``restore``...): an error
    raised inside gets them in words in its hint (:func:`kata_vfio.host.render.with_remedies`)."""
    try:
        yield
    except KataVfioError as exc:
        if exc.remedies:
            exc.hint = render.with_remedies(exc.hint, exc.remedies)
        raise


def _modprobe(paths: HostPaths) -> str | None:
    """The modprobe a bind may run: ``paths.modprobe`` on this machine's ``/sys``; on a copied
    or fake tree only one named on purpose (never the real ``/sbin/modprobe``)."""
    if paths.is_live or paths.modprobe != HostPaths().modprobe:
        return paths.modprobe
    return None


def bind(
    devices: Devices,
    *,
    group: bool | None = None,
    driver: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    paths: HostPaths | None = None,
    state_dir: str = DEFAULT_STATE_DIR,
    modules_root: str = "/",
    kernel_release: str | None = None,
    module_loader: ModuleLoader | None = None,
    sysfs_writer: SysfsWriter | None = None,
) -> BindReport:
    """Binds ``devices`` (and by default the rest of their IOMMU groups) to vfio.

    ``driver`` forces a driver instead of vfio-pci or the ``modules.alias`` variant.
    ``kernel_release`` defaults to ``<paths.procfs>/sys/kernel/osrelease``.

    :raises kata_vfio.errors.BdfError: a malformed address.
    :raises kata_vfio.errors.DeviceNotFoundError: an address that is not on the host.
    :raises kata_vfio.errors.InvalidInputError: a malformed driver name.
    :raises kata_vfio.errors.BindError: refused (device in use, bridge, no IOMMU group), or
        a write failed (everything touched was rolled back).
    """
    paths = paths or HostPaths()
    with _remedies_worded():
        return _core.bind_devices(
            _as_list(devices),
            sysfs_root=paths.sysfs,
            dev_root=paths.devfs,
            proc_root=paths.procfs,
            state_dir=state_dir,
            group=group,
            driver=driver,
            force=force,
            dry_run=dry_run,
            modules_root=modules_root,
            kernel_release=kernel_release,
            modprobe=_modprobe(paths),
            module_loader=module_loader,
            sysfs_writer=sysfs_writer,
        )


def unbind(
    devices: Devices,
    *,
    group: bool | None = None,
    force: bool = False,
    dry_run: bool = False,
    paths: HostPaths | None = None,
    state_dir: str = DEFAULT_STATE_DIR,
    sysfs_writer: SysfsWriter | None = None,
) -> BindReport:
    """Takes ``devices`` (and their groups, as for :func:`bind`) off vfio: a journaled device
    goes back to its recorded driver and override; any other device on a vfio driver has its
    vfio override cleared and is re-probed, so the kernel picks its host driver. Devices not
    on vfio are left alone (action ``unchanged``).

    Every device is checked before the first write (the journal checks of :func:`restore`,
    and that no process holds its group or cdev open); ``force=True`` acts anyway and says
    what it overrode in the report's ``overridden``.

    :raises kata_vfio.errors.BindError: refused (nothing was written), or a write failed.
    """
    paths = paths or HostPaths()
    with _remedies_worded():
        return _core.unbind_devices(
            _as_list(devices),
            sysfs_root=paths.sysfs,
            dev_root=paths.devfs,
            proc_root=paths.procfs,
            state_dir=state_dir,
            group=group,
            force=force,
            dry_run=dry_run,
            sysfs_writer=sysfs_writer,
        )


def restore(
    devices: Devices | None = None,
    *,
    force: bool = False,
    dry_run: bool = False,
    paths: HostPaths | None = None,
    state_dir: str = DEFAULT_STATE_DIR,
    sysfs_writer: SysfsWriter | None = None,
) -> BindReport:
    """Puts journaled devices back to their original driver and ``driver_override`` (cleared
    when there was none): all of them, or those in the IOMMU groups of ``devices``. Each
    entry is removed once its device is verified back; safe to run again at any time.

    An entry is acted on only when the device's driver and override are each the target,
    none, or the recorded original; anything but a vfio driver is unbound only when the host
    does not use the device (as :func:`bind` asks), and a vfio driver only when no process
    holds the group or cdev open. ``force=True`` acts anyway and says what it overrode.
    Damaged journal files are skipped and listed in ``report.problems``.

    :raises kata_vfio.errors.BindError: some devices were refused or could not be restored
        (their entries are kept for the next try; the others were restored).
    """
    paths = paths or HostPaths()
    with _remedies_worded():
        return _core.restore_devices(
            None if devices is None else _as_list(devices),
            sysfs_root=paths.sysfs,
            dev_root=paths.devfs,
            proc_root=paths.procfs,
            state_dir=state_dir,
            force=force,
            dry_run=dry_run,
            sysfs_writer=sysfs_writer,
        )


@dataclass(frozen=True)
class Journal:
    """What the journal holds: usable entries in numeric PCI order, and one message per
    damaged file (skipped by :func:`restore`, to be checked and deleted by hand)."""

    entries: tuple[JournalEntry, ...]
    problems: tuple[str, ...]


def read_journal(state_dir: str = DEFAULT_STATE_DIR) -> Journal:
    """The journal in ``state_dir``, read without the lock and without changing anything (a
    missing directory is an empty journal; an unsafe one raises
    :class:`~kata_vfio.errors.BindError`)."""
    with _remedies_worded():
        entries, problems = _core.binding_journal(state_dir)
    return Journal(entries, problems)


def journal(state_dir: str = DEFAULT_STATE_DIR) -> tuple[JournalEntry, ...]:
    """The devices kata-vfio has bound and not yet restored, in numeric PCI order (damaged
    journal files are left out: :func:`read_journal` lists them)."""
    return read_journal(state_dir).entries


def describe_write(write: SysfsWrite) -> str:
    """A write as the shell command that performs exactly it (``echo -n VALUE > PATH``; a
    lone newline, which clears ``driver_override``, is ``echo > PATH``)."""
    if write.value == "\n":
        return f"echo > {shlex.quote(write.path)}"
    return f"echo -n {shlex.quote(write.value)} > {shlex.quote(write.path)}"


def report_dict(report: BindReport) -> dict[str, Any]:
    """A report as plain JSON-ready data (stable key names)."""
    return {
        "dry_run": report.dry_run,
        "devices": [
            {
                "bdf": str(d.bdf),
                "group": d.group,
                "action": d.action,
                "driver_before": d.driver_before,
                "override_before": d.override_before,
                "driver_after": d.driver_after,
                "override_after": d.override_after,
                "target": d.target,
            }
            for d in report.devices
        ],
        "writes": [{"path": w.path, "value": w.value} for w in report.writes],
        "modules": list(report.modules),
        "messages": list(report.messages),
        "overridden": list(report.overridden),
        "problems": list(report.problems),
    }
