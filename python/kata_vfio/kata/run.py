"""Run a planned sandbox VM in the foreground: launch it with the backend of the plan's
hypervisor, hot-plug the devices the plan deferred, wait, shut it down (see
:func:`kata_vfio.qemu.run.run_vm` for how it is interrupted and stopped)."""

from __future__ import annotations

from collections.abc import Callable

from kata_vfio._core import HostPaths
from kata_vfio.errors import InvalidInputError
from kata_vfio.kata.sandbox import SandboxPlan
from kata_vfio.qemu.privileges import QemuUser
from kata_vfio.qemu.run import VmStarted, run_vm

__all__ = ["run_sandbox"]


def run_sandbox(
    plan: SandboxPlan,
    *,
    start_timeout: float = 30.0,
    on_started: Callable[[VmStarted], None] | None = None,
    user: QemuUser | None = None,
    paths: HostPaths | None = None,
    paused: bool = False,
) -> VmStarted:
    """Runs the sandbox VM of ``plan`` until it exits; ``on_started`` is called once it runs
    with its deferred devices plugged. The plan needs a runtime directory (QMP and the console
    live there).

    The VFIO cdevs of the host at ``paths`` (default: this machine) are opened here and
    passed to QEMU as fds. With ``user``, QEMU runs as that user, with ``RLIMIT_MEMLOCK``
    raised to what the plan's devices pin (:attr:`SandboxPlan.memlock`); see
    :func:`kata_vfio.qemu.run.run_vm`. ``paused`` starts the guest's CPUs stopped until
    they are resumed over QMP."""
    if plan.runtime_dir is None:
        raise InvalidInputError(
            "the sandbox plan has no runtime directory",
            hint="plan the sandbox with a runtime directory (runtime_dir)",
        )
    return run_vm(
        plan.command,
        runtime_dir=plan.runtime_dir,
        deferred=plan.vm.deferred,
        start_timeout=start_timeout,
        on_started=on_started,
        user=user,
        memlock=plan.memlock if user is not None and plan.memlock else None,
        paths=paths,
        paused=paused,
    )
