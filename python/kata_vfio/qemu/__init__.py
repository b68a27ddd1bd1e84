"""QEMU: command lines as data (:mod:`~kata_vfio.qemu.argv`), the sandbox VM's command line
(:mod:`~kata_vfio.qemu.vm`), the process launcher (:mod:`~kata_vfio.qemu.launcher`) and QMP
operations with the QEMU project's ``qemu.qmp`` (:mod:`~kata_vfio.qemu.qmp`)."""

from __future__ import annotations

from kata_vfio.qemu.argv import QemuCommand, QemuOpts
from kata_vfio.qemu.launcher import QemuProcess
from kata_vfio.qemu.qmp import QmpSession

__all__ = ["QemuCommand", "QemuOpts", "QemuProcess", "QmpSession"]
