"""Ways a fake host uses its devices, laid out as the kernel lays them out: block devices
(with their ``class/block`` links and holders), mounts, swap, network interfaces, and
processes holding VFIO nodes open. Shared by the refusal tests of bind, restore and unbind."""

from __future__ import annotations

import os
from pathlib import Path

from kata_vfio.testing import FakeHost

NIC = "0000:01:00.0"


def put(path: str | Path, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_text(text)


def add_block(host: FakeHost, bdf: str, name: str, devnum: str, *, under: str = "") -> str:
    """A block device (``nvme0n1``, a partition, or ``dm-0`` when ``bdf`` is empty) with its
    ``class/block`` link, the way the block layer lays it out."""
    if bdf:
        real = os.path.join(host.device_path(bdf), "nvme/nvme0", under, name)
    else:
        real = os.path.join(host.sysfs_root, "devices/virtual/block", name)
    put(os.path.join(real, "dev"), devnum + "\n")
    link = os.path.join(host.sysfs_root, "class/block", name)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(os.path.relpath(real, os.path.dirname(link)), link)
    return real


def mount(host: FakeHost, devnum: str, point: str) -> None:
    path = os.path.join(host.proc_root, "self/mountinfo")
    old = Path(path).read_text() if os.path.exists(path) else ""
    line = f"{30 + old.count(chr(10))} 1 {devnum} / {point} rw,relatime shared:1 - ext4 x rw\n"
    put(path, old + line)


def add_netdev(host: FakeHost, name: str, *, up: bool) -> None:
    base = os.path.join(host.device_path(NIC), "net", name)
    put(os.path.join(base, "flags"), "0x1003\n" if up else "0x1002\n")
    put(os.path.join(base, "operstate"), "up\n" if up else "down\n")


def hold_open(host: FakeHost, pid: int, comm: str, node: str) -> None:
    """Process ``pid`` (``comm``) holds ``node`` open, as ``/proc/<pid>/fd/<n>`` shows it."""
    fd_dir = os.path.join(host.proc_root, str(pid), "fd")
    os.makedirs(fd_dir, exist_ok=True)
    put(os.path.join(host.proc_root, str(pid), "comm"), comm + "\n")
    os.symlink(node, os.path.join(fd_dir, str(len(os.listdir(fd_dir)) + 3)))
