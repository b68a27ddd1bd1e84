"""QEMU, a VMM backend of the hypervisor-neutral :mod:`kata_vfio.vm` plan (it knows no Kata):
command lines as data (:mod:`~kata_vfio.qemu.argv`), a :class:`~kata_vfio.vm.plan.VmPlan`'s
command line (:mod:`~kata_vfio.qemu.vm`), the process launcher
(:mod:`~kata_vfio.qemu.launcher`), QMP operations with the QEMU project's ``qemu.qmp``
(:mod:`~kata_vfio.qemu.qmp`), hot-plug of neutral groups (:mod:`~kata_vfio.qemu.hotplug`), a
VM's life (:mod:`~kata_vfio.qemu.run`) and fd passing for an unprivileged QEMU
(:mod:`~kata_vfio.qemu.fds`)."""

from __future__ import annotations

from kata_vfio.qemu.argv import QemuCommand, QemuOpts
from kata_vfio.qemu.launcher import QemuProcess
from kata_vfio.qemu.qmp import QmpSession

__all__ = ["QemuCommand", "QemuOpts", "QemuProcess", "QmpSession"]
