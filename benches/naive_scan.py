"""A PCI scan written the way most tools write it: absolute paths through
``/sys/bus/pci/devices/<bdf>/...``, one ``open()`` per attribute, ``os.path.realpath`` for the
``driver`` and ``iommu_group`` links, ``os.path.exists`` before each optional read. It is the
baseline the Rust core must beat by 10x; it is not used by the package."""

from __future__ import annotations

import os
from typing import Any

ATTRIBUTES = (
    "vendor",
    "device",
    "subsystem_vendor",
    "subsystem_device",
    "class",
    "revision",
    "numa_node",
    "driver_override",
)


def _attr(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _link_name(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    return os.path.basename(os.path.realpath(path))


def naive_scan(sysfs_root: str) -> dict[str, Any]:
    """Devices (as dicts of text) and groups (id -> addresses)."""
    base = os.path.join(sysfs_root, "bus", "pci", "devices")
    devices = []
    for name in sorted(os.listdir(base)):
        dev = os.path.join(base, name)
        info: dict[str, Any] = {"bdf": name, "path": os.path.realpath(dev)}
        for attr in ATTRIBUTES:
            info[attr] = _attr(os.path.join(dev, attr))
        info["driver"] = _link_name(os.path.join(dev, "driver"))
        group = _link_name(os.path.join(dev, "iommu_group"))
        info["iommu_group"] = int(group) if group is not None else None
        config = os.path.join(dev, "config")
        info["pcie"] = os.path.exists(config) and os.path.getsize(config) > 256
        devices.append(info)
    groups: dict[int, list[str]] = {}
    for info in devices:
        if info["iommu_group"] is not None:
            groups.setdefault(info["iommu_group"], []).append(info["bdf"])
    return {"devices": devices, "groups": groups}
