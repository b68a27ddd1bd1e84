"""The project's scan against the kernel: groups, endpoints and viability verdicts.

Facts only: the host-side tests decide what must be equal.
"""

from __future__ import annotations

from typing import Any

import kernel_facts as kf
from kvlab import topology

from kata_vfio._core import scan


def _scan_group(group: int) -> dict[str, Any]:
    found = scan().find_group(group)
    if found is None:
        return {"present": False}
    return {
        "present": True,
        "devices": [str(b) for b in found.devices],
        "endpoints": [str(b) for b in found.endpoints],
        "viable": found.viable,
        "assignable": found.assignable,
        "blockers": [str(b.bdf) for b in found.blockers],
    }


def _observe(label: str, group: int, members: list[str]) -> dict[str, Any]:
    return {
        "label": label,
        "drivers": {bdf: kf.driver_of(bdf) for bdf in members},
        "kernel_viable": kf.group_viable(group),
        "scan": _scan_group(group),
    }


def _viability_walk(shape: str) -> dict[str, Any]:
    """Bind a group's endpoints to vfio-pci one by one, observing both sides at each step."""
    endpoints = topology.EXPECTED_ENDPOINTS[shape]
    group = kf.group_of(endpoints[0])
    members = kf.kernel_groups()[group]
    steps = [_observe("none bound", group, members)]
    try:
        for count, bdf in enumerate(endpoints, start=1):
            kf.raw_bind(bdf, "vfio-pci")
            steps.append(_observe(f"{count} of {len(endpoints)} bound", group, members))
    finally:
        for bdf in endpoints:
            kf.raw_restore(bdf)
    steps.append(_observe("restored", group, members))
    return {"group": group, "endpoints": list(endpoints), "steps": steps}


def run(context: dict[str, Any]) -> dict[str, Any]:
    """Collect every group from both sides, then walk viability for each group shape."""
    host = scan()
    kernel = kf.kernel_groups()
    classes = {bdf: kf.pci_class(bdf) for members in kernel.values() for bdf in members}
    facts: dict[str, Any] = {
        "kernel_groups": {str(g): members for g, members in sorted(kernel.items())},
        "kernel_classes": classes,
        "scan_groups": {
            str(g.id): {
                "devices": [str(b) for b in g.devices],
                "endpoints": [str(b) for b in g.endpoints],
                "viable": g.viable,
            }
            for g in host.groups
        },
        "scan_device_groups": {str(d.bdf): d.iommu_group for d in host.devices},
        "iommu_enabled": host.iommu.enabled,
        "iommu_reasons": list(host.iommu.reasons),
    }
    kf.ensure_vfio_pci()
    facts["viability"] = {
        shape: _viability_walk(shape) for shape in ("multifunction", "bridge", "switch", "single")
    }
    return facts
