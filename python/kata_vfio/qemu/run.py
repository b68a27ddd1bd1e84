"""A VM's life in the foreground: start QEMU, hot-plug what the plan deferred, wait until it
exits, stop it softly when interrupted. The caller wires interruption: a signal handler that
raises (as Ctrl-C raises ``KeyboardInterrupt``) ends the wait, and QEMU is stopped on the way
out (``system_powerdown``, then ``quit``, then SIGKILL; see
:class:`~kata_vfio.qemu.launcher.QemuProcess`).

QEMU never opens a VFIO cdev or ``/dev/iommu`` itself: they are opened here and passed as fds
(on the command line for the devices at start, over QMP for the deferred ones), so it can run
as an unprivileged ``user`` (:mod:`kata_vfio.qemu.privileges`). Legacy groups
(``/dev/vfio/<group>``) cannot be passed: QEMU opens them while it is still root, so with a
``user`` they can only be cold-plugged, and only when QEMU drops its privileges itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kata_vfio._core import HostPaths
from kata_vfio.errors import PlanError, QemuError
from kata_vfio.qemu.argv import QemuCommand
from kata_vfio.qemu.fds import pass_cdevs
from kata_vfio.qemu.hotplug import plug_group
from kata_vfio.qemu.launcher import QemuProcess, failure_hint
from kata_vfio.qemu.privileges import QemuUser, denies_privilege_change, sandbox_of
from kata_vfio.qemu.qmp import HotplugResult
from kata_vfio.vm.hotplug import HotplugGroup

__all__ = ["PluggedGroup", "VmStarted", "run_vm"]


@dataclass(frozen=True)
class PluggedGroup:
    """A deferred group and where it was plugged."""

    group: int
    result: HotplugResult


@dataclass(frozen=True)
class VmStarted:
    """A running VM: QEMU's pid, its runtime directory, the QMP socket left for other tools,
    and the groups hot-plugged after start."""

    pid: int
    runtime_dir: str
    qmp_socket: str
    hotplugged: tuple[PluggedGroup, ...]
    paused: bool = False
    """The guest's CPUs wait for QMP ``cont`` (QEMU's ``-S``), as asked by ``paused``."""


def run_vm(
    command: QemuCommand,
    *,
    runtime_dir: str,
    deferred: Sequence[HotplugGroup] = (),
    start_timeout: float = 30.0,
    pass_fds: Sequence[int] = (),
    on_started: Callable[[VmStarted], None] | None = None,
    user: QemuUser | None = None,
    memlock: int | None = None,
    paths: HostPaths | None = None,
    paused: bool = False,
) -> VmStarted:
    """Runs the VM until QEMU exits (see the module docstring); ``on_started`` is called once
    QEMU answers on QMP and the deferred groups are plugged. Returns what was started.
    ``paused`` starts it with the guest's CPUs stopped (``-S``) until a QMP ``cont``
    (:func:`kata_vfio.qemu.qmp.resume`, ``kata-vfio qemu resume``).

    ``user`` and ``memlock`` go to :class:`~kata_vfio.qemu.launcher.QemuProcess`; ``paths``
    is the host whose VFIO devices are opened (default: this machine).

    :raises kata_vfio.errors.PlanError: a legacy group that an unprivileged QEMU could not
        open (before anything starts).
    :raises kata_vfio.errors.QemuError: QEMU did not start, or exited with a non-zero status
        (the hint quotes its log).
    """
    if user is not None:
        _refuse_unreachable_groups(command, deferred, user)
    if paused:
        command = command.add("-S")
    with pass_cdevs(command, paths=paths) as passed:
        vm = QemuProcess(
            passed.command,
            runtime_dir=runtime_dir,
            start_timeout=start_timeout,
            pass_fds=(*pass_fds, *passed.pass_fds),
            user=user,
            memlock=memlock,
        )
        with vm:
            passed.close()  # QEMU holds its own copies now
            plugged = tuple(
                PluggedGroup(g.group, plug_group(vm.qmp, g, paths=paths)) for g in deferred
            )
            pid = vm.pid
            assert pid is not None  # started: the with-block entered
            started = VmStarted(
                pid=pid,
                runtime_dir=vm.runtime_dir,
                qmp_socket=vm.qmp_socket,
                hotplugged=plugged,
                paused=paused,
            )
            if on_started is not None:
                on_started(started)
            code = vm.wait()
    if code != 0:
        log = vm.stderr().strip()
        raise QemuError(
            f"QEMU exited with status {code}" + (f": {log}" if log else ""),
            hint=failure_hint(log, code),
        )
    return started


def _refuse_unreachable_groups(
    command: QemuCommand, deferred: Sequence[HotplugGroup], user: QemuUser
) -> None:
    """Legacy groups QEMU would have to open as ``user`` (it takes no fd for a group): a
    deferred one always (it is plugged after the drop), a cold one when QEMU starts as the
    user (its filter forbids dropping later)."""
    late = [g.group for g in deferred if g.iommufd is None]
    cold = [
        opts.get("host") or ""
        for opts in command.opts("-device")
        if opts.head == "vfio-pci" and opts.get("iommufd") is None
    ]
    if cold and denies_privilege_change(sandbox_of(command.argv())):
        what = f"legacy VFIO device(s) {', '.join(cold)}"
        why = "QEMU starts as that user (its -sandbox forbids dropping privileges later)"
    elif late:
        what = f"legacy VFIO group(s) {', '.join(map(str, late))} to hot-plug"
        why = "they would be opened after QEMU dropped its privileges"
    else:
        return
    raise PlanError(
        f"QEMU running as {user.qemu_value} cannot open the {what}: {why}",
        hint="pass the devices as vfio cdevs (/dev/vfio/devices/vfioN, e.g. a spec from "
        "`kata-vfio cdi generate --cdev`), which kata-vfio opens and hands to QEMU, or run "
        "QEMU without --user",
    )
