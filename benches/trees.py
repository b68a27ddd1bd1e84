"""Generated benchmark hosts, built once per machine into a tmpfs cache (``/dev/shm`` when it
is writable) so that every contender reads the same tree from memory, as sysfs is."""

from __future__ import annotations

import hashlib
import os
import tempfile

from kata_vfio import __version__
from kata_vfio.testing import FakeHost, build_host
from kata_vfio.testing._fs import read, remove_tree, write
from kata_vfio.testing.generate import generate_spec

SEED = 2024
_MARKER = ".kata-vfio-bench"


def cache_dir() -> str:
    """tmpfs when there is one (sysfs lives in memory too), else the temp dir."""
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
    return os.path.join(base, f"kata-vfio-bench-{os.getuid()}")


def bench_host(count: int) -> FakeHost:
    """The generated host with ``count`` functions (seed fixed), built on first use."""
    spec = generate_spec(count, seed=SEED)
    key = hashlib.sha256(f"{__version__}{spec!r}".encode()).hexdigest()[:16]
    root = os.path.join(cache_dir(), f"n{count}-{key}")
    if read(os.path.join(root, _MARKER)).strip() == key:
        return FakeHost.at(root)
    if os.path.exists(root):
        remove_tree(root)
    os.makedirs(cache_dir(), mode=0o700, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".building-", dir=cache_dir())
    try:
        build_host(os.path.join(staging, "host"), spec)
        write(os.path.join(staging, "host", _MARKER), key + "\n")
        os.rename(os.path.join(staging, "host"), root)
    finally:
        remove_tree(staging)
    return FakeHost.at(root)
