"""The lab's cache directory: where kernels and images live between runs.

Everything is keyed by content (package version, config hash, input hash), so a changed input
makes a new entry instead of reusing a stale one, and reruns are fast. Entries are published
atomically (built in a temporary sibling, then renamed), and builds take a file lock so two
sessions never build the same entry at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from kvlab.errors import LabError

ENV_VAR = "KATA_VFIO_LAB_CACHE"
# /var/tmp survives reboots (a kernel build is worth keeping); cache_root() checks ownership.
DEFAULT_ROOT = Path("/var/tmp/kata-vfio-lab")  # noqa: S108


def cache_root() -> Path:
    """The cache directory (``$KATA_VFIO_LAB_CACHE`` or /var/tmp/kata-vfio-lab), created 0700.

    It holds kernels the lab boots as root, so one that another user owns or may write to
    is refused rather than trusted.
    """
    root = Path(os.environ.get(ENV_VAR) or DEFAULT_ROOT).absolute()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise LabError(
            f"lab cache {root} is not a directory of this user that only it can write",
            hint=f"remove it, or set {ENV_VAR} to a private directory",
        )
    return root


def digest(parts: Iterable[bytes | str]) -> str:
    """A short, stable content key over ``parts`` (12 hex digits of SHA-256)."""
    hasher = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        # Length-prefix each part so ("ab", "c") and ("a", "bc") differ.
        hasher.update(len(data).to_bytes(8, "little"))
        hasher.update(data)
    return hasher.hexdigest()[:12]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the ``with`` body."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def publish_dir(staging: Path, final: Path) -> None:
    """Move a fully built ``staging`` directory to ``final`` in one rename."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


def staging_dir(final: Path) -> Path:
    """A fresh empty directory beside ``final`` to build it in."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
