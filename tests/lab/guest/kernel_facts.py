"""What the guest kernel itself says, read without the project's code (the tests' oracle).

Group membership comes from /sys/kernel/iommu_groups, drivers from the ``driver`` links, and
viability from the kernel's own VFIO_GROUP_GET_STATUS ioctl. The raw sysfs rebinding here is
test-harness setup for the scan comparison, kept independent of the binding under test.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
from pathlib import Path

SYS_PCI = Path("/sys/bus/pci")
GROUPS = Path("/sys/kernel/iommu_groups")
# From <linux/vfio.h>: _IO(VFIO_TYPE, VFIO_BASE + 3), struct vfio_group_status {argsz, flags}.
VFIO_GROUP_GET_STATUS = 0x3B67
VFIO_GROUP_FLAGS_VIABLE = 1


def kernel_groups() -> dict[int, list[str]]:
    """Group number -> member addresses, as the kernel built them."""
    return {
        int(group.name): sorted(dev.name for dev in (group / "devices").iterdir())
        for group in GROUPS.iterdir()
    }


def pci_class(bdf: str) -> int:
    """The 24-bit class code from sysfs."""
    return int((SYS_PCI / "devices" / bdf / "class").read_text(), 16)


def driver_of(bdf: str) -> str | None:
    """The bound driver's name, None when unbound."""
    link = SYS_PCI / "devices" / bdf / "driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def driver_override(bdf: str) -> str | None:
    """The device's driver_override, None when unset (sysfs shows "(null)")."""
    value = (SYS_PCI / "devices" / bdf / "driver_override").read_text().strip()
    return None if value == "(null)" else value


def has_driver(name: str) -> bool:
    """Whether a PCI driver called ``name`` is registered (built in or module loaded)."""
    return (SYS_PCI / "drivers" / name).is_dir()


def group_of(bdf: str) -> int:
    """The device's IOMMU group number."""
    return int(os.path.basename(os.readlink(SYS_PCI / "devices" / bdf / "iommu_group")))


def group_viable(group: int) -> bool | None:
    """The kernel's VIABLE flag for ``group``; None when it has no /dev/vfio node (no device
    of the group is on a VFIO driver, so the kernel has not made one)."""
    try:
        fd = os.open(f"/dev/vfio/{group}", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        buf = bytearray(struct.pack("=II", 8, 0))
        fcntl.ioctl(fd, VFIO_GROUP_GET_STATUS, buf)
        return bool(struct.unpack("=II", buf)[1] & VFIO_GROUP_FLAGS_VIABLE)
    finally:
        os.close(fd)


def mac_of(bdf: str) -> str | None:
    """The MAC address of the device's network interface, None without one."""
    nets = sorted((SYS_PCI / "devices" / bdf).glob("net/*/address"))
    return nets[0].read_text().strip() if nets else None


def vfio_cdev_of(bdf: str) -> str:
    """``vfioN``, the device's VFIO cdev name (it has one only while on vfio-pci)."""
    names = sorted(p.name for p in (SYS_PCI / "devices" / bdf / "vfio-dev").iterdir())
    if len(names) != 1:
        raise RuntimeError(f"{bdf} has {len(names)} vfio cdevs: {names}")
    return names[0]


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def ensure_vfio_pci() -> None:
    """Load vfio-pci if its driver directory is missing (Debian ships it as a module)."""
    if not has_driver("vfio-pci"):
        subprocess.run(["modprobe", "vfio-pci"], check=True)


def raw_bind(bdf: str, driver: str) -> None:
    """Move ``bdf`` to ``driver`` with driver_override, unbind, drivers_probe."""
    _reprobe(bdf, driver)


def raw_restore(bdf: str) -> None:
    """Clear driver_override and let the kernel pick the default driver again."""
    # A lone newline is how sysfs clears driver_override.
    _reprobe(bdf, "\n")


def _reprobe(bdf: str, override: str) -> None:
    device = SYS_PCI / "devices" / bdf
    _write(device / "driver_override", override)
    if driver_of(bdf) is not None:
        _write(device / "driver" / "unbind", bdf)
    try:
        _write(SYS_PCI / "drivers_probe", bdf)
    except OSError as exc:
        # drivers_probe reports a probe that found no driver; the check reads the result.
        if exc.errno not in (errno.ENODEV, errno.EINVAL):
            raise


def endpoint_states() -> dict[str, dict[str, str | None]]:
    """Driver and driver_override of every emulated NIC of the lab topology."""
    from kvlab import topology

    nics = sorted(bdf for shape in topology.EXPECTED_ENDPOINTS.values() for bdf in shape)
    return {bdf: {"driver": driver_of(bdf), "override": driver_override(bdf)} for bdf in nics}


def reset_endpoints(wanted: dict[str, dict[str, str | None]]) -> None:
    """Put NICs back to ``wanted`` (harness cleanup after a check that failed to)."""
    for bdf, state in wanted.items():
        if {"driver": driver_of(bdf), "override": driver_override(bdf)} == state:
            continue
        if state["override"] is None:
            raw_restore(bdf)
        else:
            raw_bind(bdf, state["override"])
