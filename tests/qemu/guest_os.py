"""A minimal Linux guest for the one test that needs a guest OS: PCIe hot-unplug completes
only when the guest's pciehp driver powers the slot off.

The kernel is the lab's cached Debian kernel (``tools/lab``, prepared by ``.ci/run``; or
``$KATA_VFIO_GUEST_KERNEL``), which has pciehp built in. The initramfs is busybox-static and
an /init that says it is ready on the serial console and then idles.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import time
from pathlib import Path

LAB_TOOLS = Path(__file__).resolve().parents[2] / "tools" / "lab"
READY = "KATA-VFIO-GUEST-READY"
INIT = f"""#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo {READY} > /dev/console
exec /bin/busybox sleep 100000
"""


def find_guest_kernel() -> Path | None:
    """A bootable x86-64 kernel with pciehp, or None."""
    explicit = os.environ.get("KATA_VFIO_GUEST_KERNEL")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    root = Path(os.environ.get("KATA_VFIO_LAB_CACHE") or "/var/tmp/kata-vfio-lab")
    for image in sorted(glob.glob(str(root / "kernels" / "debian-*" / "boot" / "vmlinuz-*"))):
        if (Path(image).parents[1] / "ready").is_file():
            return Path(image)
    return None


def build_initramfs(target: Path) -> Path | None:
    """Writes the initramfs to ``target``; None when busybox-static or the lab's cpio
    writer is missing."""
    busybox = shutil.which("busybox")
    if busybox is None or not LAB_TOOLS.is_dir():
        return None
    sys.path.insert(0, str(LAB_TOOLS))
    try:
        from kvlab import cpio
    except ImportError:
        return None
    data = Path(busybox).read_bytes()
    if b"ld-linux" in data[:65536]:
        return None  # a dynamic busybox would need libc in the image
    entries = [
        cpio.directory("bin"),
        cpio.file("bin/busybox", data, 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.directory("dev"),
        cpio.char_device("dev/console", 5, 1),
        cpio.directory("proc"),
        cpio.directory("sys"),
        cpio.file("init", INIT.encode(), 0o755),
    ]
    target.write_bytes(cpio.gzipped(entries))
    return target


def wait_for_console(log: Path, marker: str, timeout: float) -> None:
    """Waits until ``marker`` appears in the serial console log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and marker in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-2000:] if log.is_file() else "(no console output)"
    raise AssertionError(f"guest did not print {marker} within {timeout:g} s:\n{tail}")
