"""The VFIO ioctl sequences through the project's own handles, against the real kernel.

Legacy (every kernel): container, group, type1v2, device fd, info, every region and IRQ,
a config-space read, reset, DMA map/unmap of a buffer. iommufd (kernels with /dev/iommu):
IOAS, cdev bind and attach, IOVA ranges, map/unmap, device info. Then ``check --open``: a bound
device opens, a half-bound group is refused with a hint naming the blocker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kernel_facts as kf
from guestlib import bound, cli_check_open
from kvlab import topology

from kata_vfio import vfio
from kata_vfio._core import DmaBuffer, IommuFd, RegionInfo, VfioContainer, VfioDevice, VfioGroup

NIC = topology.NIC_SINGLE
DMA_SIZE = 2 << 20
DMA_IOVA = 0x100000
VFIO_TYPE1V2_IOMMU = 3
CONFIG_REGION = 7


def _region(info: RegionInfo) -> dict[str, Any]:
    return {"index": info.index, "flags": info.flags, "size": info.size, "offset": info.offset}


def _device_facts(device: VfioDevice) -> dict[str, Any]:
    info = device.info()
    regions = device.regions()
    config = next(r for r in regions if r.index == CONFIG_REGION)
    ids = device.read_region(config, 0, 4)
    facts: dict[str, Any] = {
        "fd": device.fileno(),
        "info": {"flags": info.flags, "num_regions": info.num_regions, "num_irqs": info.num_irqs},
        "regions": [_region(r) for r in regions],
        "irqs": [{"index": q.index, "count": q.count, "flags": q.flags} for q in device.irqs()],
        "config_vendor": int.from_bytes(ids[0:2], "little"),
        "config_device": int.from_bytes(ids[2:4], "little"),
    }
    if info.can_reset:
        device.reset()
        facts["reset"] = "ok"
    return facts


def _legacy() -> dict[str, Any]:
    group_id = kf.group_of(NIC)
    facts: dict[str, Any] = {"group": group_id}
    with VfioContainer.open() as container, VfioGroup.open(group_id) as group:
        facts["api_version"] = container.api_version()
        facts["extensions"] = {name: present for _, name, present in container.extensions()}
        facts["status_before"] = group.status().flags
        group.set_container(container)
        facts["status_after"] = group.status().flags
        container.set_iommu(VFIO_TYPE1V2_IOMMU)
        iommu = container.iommu_info()
        facts["iommu_info"] = {"flags": iommu.flags, "iova_pgsizes": iommu.iova_pgsizes}
        with group.get_device(NIC) as device:
            facts["device"] = _device_facts(device)
            buffer = DmaBuffer(DMA_SIZE)
            buffer.write(0, b"kata-vfio lab")
            container.map_dma(buffer, DMA_IOVA)
            facts["dma_unmapped"] = container.unmap_dma(DMA_IOVA, DMA_SIZE)
        group.unset_container()
    with vfio.open_legacy(NIC) as opened:
        facts["open_legacy_regions"] = [_region(r) for r in opened.device.regions()]
    return facts


def _iommufd() -> dict[str, Any]:
    cdev = kf.vfio_cdev_of(NIC)
    facts: dict[str, Any] = {"cdev": cdev}
    with IommuFd.open() as iommufd, VfioDevice.open_cdev(cdev) as device:
        facts["devid"] = device.bind_iommufd(iommufd)
        ioas = iommufd.ioas_alloc()
        facts["ioas"] = ioas
        facts["pt"] = device.attach_ioas(ioas)
        facts["iova_ranges"] = iommufd.iova_ranges(ioas).ranges
        buffer = DmaBuffer(DMA_SIZE)
        facts["mapped_iova"] = iommufd.map(ioas, buffer, iova=DMA_IOVA)
        facts["unmapped"] = iommufd.unmap(ioas, DMA_IOVA, DMA_SIZE)
        facts["device"] = _device_facts(device)
        device.detach_ioas()
    with vfio.open_iommufd(NIC) as opened:
        facts["open_iommufd_devid"] = opened.devid
    return facts


def _check_open(modes: list[vfio.Mode]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    with bound([NIC], group=True):
        facts["bound"] = {m: vfio.check_open(NIC, mode=m).to_dict() for m in modes}
        facts["bound_cli"] = cli_check_open(NIC)
    half = topology.NIC_MULTI
    with bound([half[0]], group=False):
        facts["half_drivers"] = {bdf: kf.driver_of(bdf) for bdf in half}
        facts["half"] = {m: vfio.check_open(half[0], mode=m).to_dict() for m in modes}
        facts["half_cli"] = cli_check_open(half[0])
    return facts


def run(context: dict[str, Any]) -> dict[str, Any]:
    """Legacy everywhere, iommufd where the kernel has it, then the open preflight."""
    del context
    has_iommufd = Path("/dev/iommu").exists()
    facts: dict[str, Any] = {"has_iommufd": has_iommufd}
    with bound([NIC], group=True):
        facts["legacy"] = _legacy()
        if has_iommufd:
            facts["iommufd"] = _iommufd()
    modes: list[vfio.Mode] = ["legacy", "iommufd"] if has_iommufd else ["legacy"]
    facts["check_open"] = _check_open(modes)
    return facts
