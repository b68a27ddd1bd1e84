"""The busybox initramfs images: the lab guest's, the nested guest's and the seed end-to-end
guest's (an init that plays the Kata agent's part).

Both are rebuilt only when an input changes (init script, busybox, module set); the cache key
is a hash of those inputs.
"""

from __future__ import annotations

import struct
from pathlib import Path

from kvlab import cache, cpio, proc
from kvlab.errors import LabError
from kvlab.kernels import Kernel
from kvlab.modules import ModuleIndex

GUEST_DIR = Path(__file__).resolve().parent.parent / "guest"
# What the guest needs before it can reach the root: the 9p transport and the overlay.
ROOT_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay"]


def is_dynamic_elf(data: bytes) -> bool:
    """Whether an ELF64 little-endian executable asks for a program interpreter (PT_INTERP),
    i.e. needs the host's libc, which the initramfs does not have."""
    if data[:6] != b"\x7fELF\x02\x01":
        raise LabError("not a 64-bit little-endian ELF file")
    pt_interp = 3
    try:
        (phoff,) = struct.unpack_from("<Q", data, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
        return any(
            struct.unpack_from("<I", data, phoff + i * phentsize)[0] == pt_interp
            for i in range(phnum)
        )
    except struct.error:
        raise LabError("truncated ELF file: its program headers are missing") from None


def _busybox() -> bytes:
    path = Path(proc.require_tool("busybox"))
    data = path.read_bytes()
    if is_dynamic_elf(data):
        raise LabError(f"{path} is dynamically linked", hint="install busybox-static")
    return data


def _base(init: Path) -> list[cpio.Entry]:
    return [
        cpio.directory("bin"),
        cpio.file("bin/busybox", _busybox(), 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.directory("dev"),
        cpio.char_device("dev/console", 5, 1),
        cpio.directory("proc"),
        cpio.directory("sys"),
        cpio.directory("tmp", 0o1777),
        cpio.file("init", init.read_bytes(), 0o755),
    ]


def _modules(kernel: Kernel, wanted: list[str]) -> list[cpio.Entry]:
    """``modules/<name>.ko`` for ``wanted`` and their dependencies, plus ``modules/order``."""
    order: list[str] = []
    entries = [cpio.directory("modules")]
    if kernel.module_dir is not None:
        index = ModuleIndex.load(kernel.module_dir)
        order = index.load_order(wanted)
        entries += [cpio.file(f"modules/{name}.ko", index.read(name)) for name in order]
    entries.append(cpio.file("modules/order", "".join(f"{name}\n" for name in order).encode()))
    return entries


def _store(name: str, entries: list[cpio.Entry]) -> Path:
    image = cpio.gzipped(entries)
    path = cache.cache_root() / "images" / f"{name}-{cache.digest([image])}.cpio.gz"
    if not path.is_file():
        cache.write_atomic(path, image)
    return path


def guest_image(kernel: Kernel) -> Path:
    """The lab guest's initramfs for ``kernel``: busybox, guest/init, the root modules."""
    entries = [*_base(GUEST_DIR / "init"), *_modules(kernel, ROOT_MODULES)]
    return _store(f"guest-{kernel.release}", entries)


def inner_image(kernel: Kernel) -> Path:
    """The nested guest's initramfs: busybox, guest/inner-init and, if modular, e1000e."""
    entries = [*_base(GUEST_DIR / "inner-init"), *_modules(kernel, ["e1000e"])]
    return _store(f"inner-{kernel.release}", entries)


# The seed guest's drivers when its kernel is modular: the NICs standing in for GPUs, and
# vfio-pci for the agent's vfio mode.
SEED_MODULES = ["e1000e", "e1000", "vfio_pci"]


def seed_image(kernel: Kernel) -> Path:
    """The seed end-to-end guest's initramfs: busybox, guest/seed-init and, if modular, the
    NIC drivers and vfio-pci."""
    entries = [*_base(GUEST_DIR / "seed-init"), *_modules(kernel, SEED_MODULES)]
    return _store(f"seed-{kernel.release}", entries)
