"""Host readiness for VFIO passthrough: one pass/warn/fail line per check, each with a hint.

The checks read the scan's facts (IOMMU status, groups, nodes) plus the running process's
own limits and permissions, which is what QEMU will inherit when this process starts it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kata_vfio._core import Host
from kata_vfio.host import memlock, render

__all__ = ["Check", "Status", "diagnose"]

Status = Literal["pass", "warn", "fail"]

# Boot arguments that turn the IOMMU on, per platform.
_ENABLE_HINTS = {
    "intel": "enable VT-d in the firmware setup and add intel_iommu=on iommu=pt to the kernel "
    "command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and reboot)",
    "amd": "enable AMD-Vi/IOMMU (often 'SVM' plus 'IOMMU') in the firmware setup; the kernel "
    "turns it on by itself, so remove any amd_iommu=off or iommu=off, then reboot",
    "arm": "enable the SMMU in the firmware and boot with ACPI IORT or a device tree that "
    "describes it; remove iommu.passthrough=1 only if you need DMA translation on the host",
}
_GENERIC_HINT = (
    "enable the IOMMU in the firmware setup (VT-d, AMD-Vi or SMMU); on Intel also add "
    "intel_iommu=on iommu=pt to the kernel command line; then reboot"
)
_SAMPLE_HINT = "to see kata-vfio on a host that has one: kata-vfio --sample groups"
# Kata's default_memory (MiB) when no VM size is given.
DEFAULT_VM_MEMORY = 2048 << 20


@dataclass(frozen=True)
class Check:
    """One readiness check."""

    name: str
    status: Status
    detail: str
    hint: str | None = None


def diagnose(host: Host, *, vm_memory: int | None = None) -> tuple[Check, ...]:
    """Every check, in a fixed order. ``vm_memory`` (bytes) makes the memlock check judge a
    VM of that size (a shortfall fails); by default it judges Kata's default 2 GiB VM and a
    shortfall is only a warning."""
    checks: list[Callable[[Host], Check]] = [
        _iommu_enabled,
        _kernel_arguments,
        _noiommu,
        _vfio_modules,
        _container_node,
        _iommufd,
        _node_permissions,
        _assignable_groups,
    ]
    return (*(check(host) for check in checks), _memlock(vm_memory))


def _iommu_enabled(host: Host) -> Check:
    status = host.iommu
    detail = "; ".join(status.reasons)
    if status.enabled:
        return Check("iommu", "pass", detail)
    hint = _ENABLE_HINTS.get(status.cpu_vendor or "", _GENERIC_HINT)
    return Check("iommu", "fail", detail, f"{hint}. {_SAMPLE_HINT}")


def _kernel_arguments(host: Host) -> Check:
    args = host.iommu.cmdline
    if args is None:
        return Check(
            "kernel-arguments",
            "warn",
            "the kernel command line is unknown (no proc root)",
            "pass --proc-root to read /proc/cmdline",
        )
    shown = " ".join(args) or "(none)"
    off = [a for a in args if a in ("intel_iommu=off", "amd_iommu=off", "iommu=off")]
    if off:
        return Check(
            "kernel-arguments",
            "fail",
            f"IOMMU arguments: {shown}",
            f"remove {' '.join(off)} from the kernel command line and reboot",
        )
    if any(a.startswith("pcie_acs_override") for a in args):
        return Check(
            "kernel-arguments",
            "warn",
            f"IOMMU arguments: {shown}",
            "pcie_acs_override makes the kernel pretend devices are isolated when they are "
            "not: a guest may reach other devices' memory; prefer a slot with real ACS",
        )
    if host.iommu.enabled and host.iommu.cpu_vendor == "intel" and "iommu=pt" not in args:
        return Check(
            "kernel-arguments",
            "warn",
            f"IOMMU arguments: {shown}",
            "add iommu=pt so host devices that are not passed through skip translation "
            "(faster host I/O; VFIO devices are isolated either way)",
        )
    return Check("kernel-arguments", "pass", f"IOMMU arguments: {shown}")


def _noiommu(host: Host) -> Check:
    if host.iommu.noiommu:
        return Check(
            "noiommu",
            "warn",
            "vfio's unsafe no-IOMMU mode is on: devices get no DMA isolation and the kernel "
            "is tainted when they are used",
            "turn it off (vfio.enable_unsafe_noiommu_mode=0) unless this is a test machine",
        )
    return Check("noiommu", "pass", "vfio's unsafe no-IOMMU mode is off")


def _vfio_modules(host: Host) -> Check:
    status = host.iommu
    if status.vfio_pci_driver:
        return Check("vfio-modules", "pass", "vfio and the vfio-pci driver are loaded")
    if status.vfio_module:
        return Check(
            "vfio-modules",
            "warn",
            "vfio is loaded but the vfio-pci driver is not",
            "modprobe vfio-pci (kata-vfio bind loads it when needed)",
        )
    return Check(
        "vfio-modules",
        "warn",
        "the vfio modules are not loaded",
        "modprobe vfio-pci (and add it to /etc/modules-load.d/ to load it at boot)",
    )


def _unreadable_node(host: Host, name: str, rel: str) -> Check | None:
    """A node the scan could not look at (permission denied, a link out of the dev root):
    say so, never "missing"."""
    reason = dict(host.iommu.unreadable).get(f"dev/{rel}")
    if reason is None:
        return None
    return Check(
        name,
        "warn",
        f"{Path(host.dev_root) / rel} cannot be checked: {render.status_reason(reason)}",
        "run kata-vfio doctor as root",
    )


def _container_node(host: Host) -> Check:
    path = Path(host.dev_root) / "vfio" / "vfio"
    if host.iommu.vfio_container_node:
        return Check("vfio-container-node", "pass", f"{path} exists")
    unreadable = _unreadable_node(host, "vfio-container-node", "vfio/vfio")
    if unreadable is not None:
        return unreadable
    if host.iommu.iommufd_node:
        return _iommufd_only(host, path)
    status: Status = "fail" if host.iommu.vfio_module else "warn"
    return Check(
        "vfio-container-node",
        status,
        f"{path} is missing",
        "modprobe vfio (it creates /dev/vfio/vfio); without it QEMU cannot use legacy groups",
    )


def _iommufd_only(host: Host, container: Path) -> Check:
    """A kernel without the legacy container (CONFIG_VFIO_CONTAINER=n) is fine when its VFIO
    devices come with cdevs: QEMU and Kata use them through /dev/iommu."""
    cdevs = [n.path for n in host.devnodes if n.kind == "cdev"]
    bound = [d for d in host.devices if d.driver == "vfio-pci"]
    if cdevs:
        return Check(
            "vfio-container-node",
            "pass",
            f"{container} is missing, but devices are used through iommufd and their cdevs "
            f"({len(cdevs)} under /dev/vfio/devices): this kernel has no legacy container",
        )
    if not bound:
        return Check(
            "vfio-container-node",
            "pass",
            f"{container} is missing and /dev/iommu exists: devices will be used through "
            "iommufd; none is bound to vfio-pci yet, so their cdevs cannot be checked",
        )
    return Check(
        "vfio-container-node",
        "fail",
        f"{container} is missing and the {len(bound)} device(s) bound to vfio-pci have no cdev "
        "under /dev/vfio/devices: neither the legacy container nor the cdev path is usable",
        "use a kernel with CONFIG_VFIO_DEVICE_CDEV (Linux 6.6+) or CONFIG_VFIO_CONTAINER",
    )


def _iommufd(host: Host) -> Check:
    path = Path(host.dev_root) / "iommu"
    if host.iommu.iommufd_node:
        return Check("iommufd", "pass", f"{path} exists: the cdev/iommufd path is available")
    unreadable = _unreadable_node(host, "iommufd", "iommu")
    if unreadable is not None:
        return unreadable
    return Check(
        "iommufd",
        "warn",
        f"{path} is missing: only legacy VFIO groups can be used",
        "for the vfio cdev path (required for confidential guests) use Linux 6.6+ with "
        "CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV, then modprobe iommufd",
    )


def _node_permissions(host: Host) -> Check:
    unusable: list[str] = []
    for node in host.devnodes:
        if not node.is_vfio_device:
            continue
        local = Path(host.dev_root) / node.path.removeprefix("/dev/")
        try:
            present = local.exists()
        except OSError:  # the directory itself is closed to this user
            present = False
            unusable.append(node.path)
        if present and not os.access(local, os.R_OK | os.W_OK):
            unusable.append(node.path)
    if not unusable:
        return Check("node-permissions", "pass", "this user can open every VFIO node present")
    return Check(
        "node-permissions",
        "warn",
        f"this user cannot open {', '.join(unusable)}",
        "run QEMU as root, or give its user the nodes (udev rule with OWNER/GROUP on "
        'SUBSYSTEM=="vfio"), or let a privileged process pass it the open fds',
    )


def _assignable_groups(host: Host) -> Check:
    groups = [g for g in host.groups if g.endpoints]
    ready = [g for g in groups if g.assignable]
    if not groups:
        return Check("assignable-groups", "warn", "no IOMMU group with an endpoint on this host")
    detail = f"{len(ready)} of {len(groups)} groups with endpoints are ready for passthrough"
    if ready:
        return Check("assignable-groups", "pass", detail)
    return Check(
        "assignable-groups",
        "warn",
        detail,
        "kata-vfio groups shows why each group is not ready and what to run",
    )


def _memlock(vm_memory: int | None) -> Check:
    # Without a size, judge a VM of Kata's default 2 GiB and only warn.
    result = memlock.diagnose(vm_memory if vm_memory is not None else DEFAULT_VM_MEMORY)
    if result.ok:
        return Check("memlock", "pass", result.detail)
    status: Status = "fail" if vm_memory is not None else "warn"
    return Check("memlock", status, result.detail, result.hint)
