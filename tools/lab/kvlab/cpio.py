"""A writer for the "newc" cpio format the kernel unpacks an initramfs from.

Written here rather than driving cpio(1) so images are reproducible byte for byte (sorted
entries, zero mtimes, sequential inode numbers) and need no root for device nodes.
"""

from __future__ import annotations

import dataclasses
import gzip
import stat

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One archive member. ``data`` is the file content or, for a symlink, its target."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        parts = self.path.split("/")
        if not self.path or self.path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"cpio path {self.path!r} must be relative and normalised")


def directory(path: str, perm: int = 0o755) -> Entry:
    """A directory entry."""
    return Entry(path, stat.S_IFDIR | perm)


def file(path: str, data: bytes, perm: int = 0o644) -> Entry:
    """A regular file entry."""
    return Entry(path, stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> Entry:
    """A symbolic link entry."""
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    """A character device node (e.g. dev/console 5:1)."""
    return Entry(path, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(ino: int, entry: Entry, name_size: int) -> bytes:
    fields = (
        ino,
        entry.mode,
        0,  # uid: root
        0,  # gid: root
        2 if stat.S_ISDIR(entry.mode) else 1,
        0,  # mtime: fixed, for reproducible images
        len(entry.data),
        0,
        0,
        entry.rdev[0],
        entry.rdev[1],
        name_size,
        0,  # checksum: unused by "newc"
    )
    return _MAGIC + b"".join(b"%08X" % value for value in fields)


def archive(entries: list[Entry]) -> bytes:
    """The uncompressed archive, members sorted by path (parents before children)."""
    seen: set[str] = set()
    out = bytearray()
    for ino, entry in enumerate(sorted(entries, key=lambda e: e.path.split("/")), start=1):
        if entry.path in seen:
            raise ValueError(f"cpio path {entry.path!r} given twice")
        seen.add(entry.path)
        name = entry.path.encode() + b"\0"
        head = _header(ino, entry, len(name))
        out += head + name + _pad(len(head) + len(name))
        out += entry.data + _pad(len(entry.data))
    name = _TRAILER.encode() + b"\0"
    head = _header(0, Entry(_TRAILER, 0), len(name))
    out += head + name + _pad(len(head) + len(name))
    return bytes(out)


def gzipped(entries: list[Entry]) -> bytes:
    """The archive, gzip-compressed with a zero timestamp (the kernel's RD_GZIP)."""
    return gzip.compress(archive(entries), compresslevel=6, mtime=0)
