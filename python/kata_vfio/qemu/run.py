"""A VM's life in the foreground: start QEMU, hot-plug what the plan deferred, wait until it
exits, stop it softly when interrupted. The caller wires interruption: a signal handler that
raises (as Ctrl-C raises ``KeyboardInterrupt``) ends the wait, and QEMU is stopped on the way
out (``system_powerdown``, then ``quit``, then SIGKILL; see
:class:`~kata_vfio.qemu.launcher.QemuProcess`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kata_vfio.errors import QemuError
from kata_vfio.qemu.argv import QemuCommand
from kata_vfio.qemu.hotplug import hotplug_group
from kata_vfio.qemu.launcher import QemuProcess
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


def run_vm(
    command: QemuCommand,
    *,
    runtime_dir: str,
    deferred: Sequence[HotplugGroup] = (),
    start_timeout: float = 30.0,
    pass_fds: Sequence[int] = (),
    on_started: Callable[[VmStarted], None] | None = None,
) -> VmStarted:
    """Runs the VM until QEMU exits (see the module docstring); ``on_started`` is called once
    QEMU answers on QMP and the deferred groups are plugged. Returns what was started.

    :raises kata_vfio.errors.QemuError: QEMU did not start, or exited with a non-zero status
        (the hint quotes its log).
    """
    vm = QemuProcess(
        command, runtime_dir=runtime_dir, start_timeout=start_timeout, pass_fds=pass_fds
    )
    with vm:
        plugged = tuple(PluggedGroup(g.group, hotplug_group(vm.qmp, g)) for g in deferred)
        pid = vm.pid
        assert pid is not None  # started: the with-block entered
        started = VmStarted(
            pid=pid, runtime_dir=vm.runtime_dir, qmp_socket=vm.qmp_socket, hotplugged=plugged
        )
        if on_started is not None:
            on_started(started)
        code = vm.wait()
    if code != 0:
        raise QemuError(f"QEMU exited with status {code}", hint=f"see its log: {vm.stderr()}")
    return started
