"""A DMA mapping cannot outlive its buffer, against the real kernel.

The kernel's container (legacy) or iommufd context outlives the handle's fd while a group is
attached to it (or a cdev bound to it), and keeps whatever is mapped pinned and mapped for
the device. So the check maps a buffer through the project's handle, closes the handle,
drops the buffer, and then looks at the kernel object through a second fd kept on it (as
QEMU or another tool would hold one): the group still sits in the container, the pinned
pages are no longer counted in ``VmLck`` (type1 accounts them there), and the same IOVA can
be mapped again (the kernel answers ``EEXIST`` while a mapping is there).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import kernel_facts as kf
from guestlib import bound
from kvlab import topology

from kata_vfio._core import DmaBuffer, IommuFd, VfioContainer, VfioDevice, VfioGroup
from kata_vfio.errors import VfioError

NIC = topology.NIC_SINGLE
SIZE = 4 << 20
IOVA = 0x200000
TYPE1V2 = 3
CONTAINER_SET = 0x2


def _vm_kb(field: str) -> int:
    """A ``/proc/self/status`` figure in kB (``VmLck``, ``VmPin``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _map_again(map_it: Any) -> dict[str, Any]:
    """Maps a fresh buffer at the IOVA through the kept fd: ok, or the kernel's errno."""
    buffer = DmaBuffer(SIZE)
    try:
        map_it(buffer)
    except VfioError as exc:
        return {"ok": False, "errno": exc.errno}
    return {"ok": True}


def _legacy() -> dict[str, Any]:
    group_id = kf.group_of(NIC)
    facts: dict[str, Any] = {}
    with VfioGroup.open(group_id) as group:
        container = VfioContainer.open()
        group.set_container(container)
        container.set_iommu(TYPE1V2)
        kept = VfioContainer.from_fd(container.fileno())  # a second fd on the same container
        facts["vmlck_kb_before"] = _vm_kb("VmLck")
        buffer = DmaBuffer(SIZE)
        buffer.write(0, b"kata-vfio")
        container.map_dma(buffer, IOVA)
        facts["vmlck_kb_mapped"] = _vm_kb("VmLck")
        facts["busy_while_mapped"] = _map_again(lambda b: kept.map_dma(b, IOVA))
        container.close()
        del buffer
        gc.collect()
        facts["group_flags_after_close"] = group.status().flags
        facts["vmlck_kb_after_close"] = _vm_kb("VmLck")
        facts["remap_after_close"] = _map_again(lambda b: kept.map_dma(b, IOVA))
        kept.close()  # unmaps what it mapped itself
        facts["vmlck_kb_end"] = _vm_kb("VmLck")
        group.unset_container()
    return facts


def _iommufd() -> dict[str, Any]:
    facts: dict[str, Any] = {}
    with VfioDevice.open_cdev(kf.vfio_cdev_of(NIC)) as device:
        iommufd = IommuFd.open()
        device.bind_iommufd(iommufd)
        ioas = iommufd.ioas_alloc()
        device.attach_ioas(ioas)
        kept = IommuFd.from_fd(iommufd.fileno())
        buffer = DmaBuffer(SIZE)
        facts["mapped_iova"] = iommufd.map(ioas, buffer, iova=IOVA)
        facts["busy_while_mapped"] = _map_again(lambda b: kept.map(ioas, b, iova=IOVA))
        iommufd.close()
        del buffer
        gc.collect()
        facts["ioas_alive_after_close"] = bool(kept.iova_ranges(ioas).ranges)
        facts["remap_after_close"] = _map_again(lambda b: kept.map(ioas, b, iova=IOVA))
        device.detach_ioas()
        kept.close()
    return facts


def run(context: dict[str, Any]) -> dict[str, Any]:
    """Legacy on every kernel, iommufd where the kernel has it."""
    del context
    has_iommufd = Path("/dev/iommu").exists()
    facts: dict[str, Any] = {"has_iommufd": has_iommufd, "pid": os.getpid()}
    with bound([NIC], group=True):
        facts["legacy"] = _legacy()
        if has_iommufd:
            facts["iommufd"] = _iommufd()
    return facts
