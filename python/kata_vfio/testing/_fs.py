"""Small file helpers for writing fake trees: files with modes, relative links, atomic moves."""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import uuid

# Attribute files that the kernel makes write-only (bind, unbind, remove, reset, ...).
WRITE_ONLY = 0o200
READ_ONLY = 0o444
READ_WRITE = 0o644


def write(path: str, content: str | bytes, mode: int = READ_ONLY) -> None:
    """Creates or replaces ``path`` with ``content`` and sets ``mode``."""
    data = content.encode() if isinstance(content, str) else content
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def rewrite(path: str, content: str | bytes) -> None:
    """Replaces a file's content atomically, keeping its mode, so a concurrent reader sees
    either the old or the new text (as with a sysfs attribute), never a torn one."""
    mode = os.stat(path).st_mode & 0o7777
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    write(tmp, content, mode)
    os.replace(tmp, path)


def read(path: str) -> str:
    """A text file's content ('' when missing)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def link(sysfs: str, link_rel: str, target_rel: str) -> None:
    """Creates the symlink ``link_rel`` pointing at ``target_rel`` (both relative to the sysfs
    root) with a relative target, as sysfs does: ``../../../bus/pci/drivers/x``."""
    target = relative_target(link_rel, target_rel)
    path = f"{sysfs}/{link_rel}"
    try:
        os.symlink(target, path)
    except FileExistsError:
        os.unlink(path)
        os.symlink(target, path)


def relative_target(link_rel: str, target_rel: str) -> str:
    """The relative text of a link at ``link_rel`` to ``target_rel`` (both normalised paths
    relative to the same root): ``../`` up to the common ancestor, then down."""
    here = link_rel.split("/")[:-1]
    there = target_rel.split("/")
    common = 0
    for a, b in zip(here, there, strict=False):
        if a != b:
            break
        common += 1
    return "/".join([".."] * (len(here) - common) + there[common:]) or "."


def unlink(path: str) -> None:
    """Removes a file or link; a missing one is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def resolve_link(sysfs: str, link_rel: str) -> str | None:
    """The target of a link relative to the sysfs root, without touching anything else
    (None when it is not a link)."""
    try:
        target = os.readlink(posixpath.join(sysfs, link_rel))
    except OSError:
        return None
    return posixpath.normpath(posixpath.join(posixpath.dirname(link_rel), target))


def makedirs(path: str, mode: int = 0o755) -> None:
    """``mkdir -p``."""
    os.makedirs(path, mode=mode, exist_ok=True)


def remove_tree_atomically(path: str, trash_dir: str) -> None:
    """Moves a directory out of the tree in one rename (a reader sees all of it or nothing,
    as with kernfs), then deletes it."""
    os.makedirs(trash_dir, exist_ok=True)
    away = os.path.join(trash_dir, uuid.uuid4().hex)
    os.rename(path, away)
    remove_tree(away)


def remove_tree(path: str) -> None:
    """``rm -rf`` that also copes with the mode-000 directories of unreadable attributes."""
    for top, dirs, _files in os.walk(path):
        for name in dirs:
            sub = os.path.join(top, name)
            if not os.path.islink(sub):
                os.chmod(sub, 0o700)
    shutil.rmtree(path)
