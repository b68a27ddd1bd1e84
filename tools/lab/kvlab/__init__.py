"""kvlab: the kata_vfio real-kernel lab.

Fetches a Debian kernel, builds a small iommufd/cdev kernel from Debian's source package,
packs busybox initramfs images, and boots them in QEMU (TCG) with an emulated Intel IOMMU and a
fixed topology of emulated PCI devices, sharing this machine's root read-only so the guest runs
this checkout's own installed code. Standard library only: it must run before the project's
environment exists. Use it by hand through ``tools/lab/lab`` or from ``tests/lab``.
"""

from __future__ import annotations

__all__ = ["LabError", "LabUnavailableError"]

from kvlab.errors import LabError, LabUnavailableError
