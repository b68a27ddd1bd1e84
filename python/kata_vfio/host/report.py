"""Plain-data views of the scan's records, for JSON output and for callers that want dicts.

IDs are lower-case hex strings without ``0x`` (``"10de"``, class ``"030200"``), addresses are
canonical BDF strings, missing values are ``None``. Key order is irrelevant (the CLI sorts).
"""

from __future__ import annotations

from typing import Any

from kata_vfio._core import (
    Bar,
    Blocker,
    Fix,
    Host,
    IommuGroup,
    IommuStatus,
    PciDevice,
    PciLink,
    ReadProblem,
)
from kata_vfio.host import render

__all__ = [
    "bar_dict",
    "blocker_dict",
    "device_dict",
    "fix_dict",
    "group_dict",
    "iommu_dict",
    "link_dict",
    "problem_dict",
]


def _hex(value: int | None, width: int) -> str | None:
    return None if value is None else f"{value:0{width}x}"


def bar_dict(bar: Bar) -> dict[str, Any]:
    """One BAR."""
    return {
        "index": bar.index,
        "start": bar.start,
        "size": bar.size,
        "is_io": bar.is_io,
        "is_64bit": bar.is_64bit,
        "prefetchable": bar.prefetchable,
    }


def link_dict(link: PciLink) -> dict[str, Any]:
    """PCIe link attributes."""
    return {
        "current_speed": link.current_speed,
        "current_width": link.current_width,
        "max_speed": link.max_speed,
        "max_width": link.max_width,
    }


def device_dict(device: PciDevice, host: Host | None = None) -> dict[str, Any]:
    """A device as plain data; with ``host``, also whether it can be passed through now."""
    out: dict[str, Any] = {
        "bdf": str(device.bdf),
        "vendor": _hex(device.vendor, 4),
        "device": _hex(device.device, 4),
        "subsystem_vendor": _hex(device.subsystem_vendor, 4),
        "subsystem_device": _hex(device.subsystem_device, 4),
        "class": _hex(device.class_code, 6),
        "class_name": device.class_name,
        "revision": _hex(device.revision, 2),
        "driver": device.driver,
        "driver_override": device.driver_override,
        "iommu_group": device.iommu_group,
        "numa_node": device.numa_node,
        "pcie": device.is_pcie,
        "vfio_cdev": device.vfio_cdev,
        "physfn": None if device.physfn is None else str(device.physfn),
        "virtfns": [str(vf) for vf in device.virtfns],
        "sriov_totalvfs": device.sriov_totalvfs,
        "sriov_numvfs": device.sriov_numvfs,
        "upstream": [str(b) for b in device.upstream],
        "role": _role(device),
        "platform_function": device.platform_function,
        "problems": [problem_dict(p) for p in device.problems],
    }
    if host is not None:
        group = host.group_of(device.bdf)
        out["assignable"] = bool(device.is_endpoint and group is not None and group.assignable)
    if device.has_details:
        # With details: BARs None means unknown (unreadable resource), not "no BARs".
        bars = device.bars
        out["bars"] = None if bars is None else [bar_dict(bar) for bar in bars]
        out["large_bar"] = device.large_bar
        out["reset_methods"] = None if device.reset_methods is None else list(device.reset_methods)
        out["link"] = None if device.link is None else link_dict(device.link)
    return out


def _role(device: PciDevice) -> str:
    if device.is_host_bridge:
        return "host-bridge"
    if device.is_bridge:
        return "bridge"
    return "endpoint"


def problem_dict(problem: ReadProblem) -> dict[str, Any]:
    """A fact that could not be read."""
    return {
        "bdf": str(problem.bdf),
        "attribute": problem.attribute,
        "reason": problem.reason,
        "errno": problem.errno,
    }


def fix_dict(fix: Fix) -> dict[str, Any]:
    """A structured fix: ``action`` and what it acts on, or why there is none."""
    return {
        "action": fix.action,
        "group": fix.group,
        "bdf": None if fix.bdf is None else str(fix.bdf),
        "because": fix.because,
        "platform_function": fix.platform_function,
    }


def blocker_dict(blocker: Blocker) -> dict[str, Any]:
    """Why one member blocks its group, and the fix: ``fix`` is the command to run (None when
    there is no safe one), ``fix_action`` the same as data, ``manual`` the sysfs writes."""
    problem = blocker.problem
    return {
        "bdf": str(blocker.bdf),
        "driver": blocker.driver,
        "kind": blocker.kind,
        "reason": render.blocker_reason(blocker),
        "problem": None if problem is None else problem_dict(problem),
        "fix": render.fix_command(blocker.fix),
        "fix_text": render.fix_text(blocker),
        "fix_action": fix_dict(blocker.fix),
        "manual": render.manual_lines(blocker),
        "breaks_viability": blocker.breaks_viability,
    }


def group_dict(group: IommuGroup) -> dict[str, Any]:
    """A group with its verdict."""
    return {
        "id": group.id,
        "devices": [str(b) for b in group.devices],
        "endpoints": [str(b) for b in group.endpoints],
        "viable": group.viable,
        "assignable": group.assignable,
        "verdict": group.verdict,
        "listing_problem": group.listing_problem,
        "unplaced": [str(b) for b in group.unplaced],
        "blockers": [blocker_dict(b) for b in group.blockers],
    }


def iommu_dict(status: IommuStatus) -> dict[str, Any]:
    """The host's IOMMU/VFIO status."""
    return {
        "enabled": status.enabled,
        "reasons": list(status.reasons),
        "group_count": status.group_count,
        "iommu_class": list(status.iommu_class),
        "firmware_tables": list(status.firmware_tables),
        "cmdline": None if status.cmdline is None else list(status.cmdline),
        "cpu_vendor": status.cpu_vendor,
        "vfio_module": status.vfio_module,
        "vfio_pci_driver": status.vfio_pci_driver,
        "iommufd_module": status.iommufd_module,
        "vfio_container_node": status.vfio_container_node,
        "iommufd_node": status.iommufd_node,
        "noiommu": status.noiommu,
        "unreadable": [{"path": path, "reason": reason} for path, reason in status.unreadable],
    }
