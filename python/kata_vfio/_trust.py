"""Which files and directories a root tool may trust, and directories made with exact modes.

A file is trusted when only root or the caller could have written it: it is owned by one of
them and neither its group nor others may write it. The same holds for the directory it is in
and for every directory above (whoever can write a directory can replace what is in it), except
that a directory with the sticky bit (``/tmp``) may be writable by all: nobody can rename or
remove an entry there that they do not own.

Directories are made one component at a time (``mkdir`` with mode 0700, then ``fchmod`` to the
wanted mode on an ``O_NOFOLLOW`` descriptor of the new directory), so no umask can make them
wider and no symlink planted in between can redirect the ``chmod``; the components that already
exist are checked as above.
"""

from __future__ import annotations

import errno as errno_codes
import os
import stat

from kata_vfio.errors import HostIOError

__all__ = ["make_directories", "untrusted_path", "untrusted_reason"]

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def untrusted_reason(st: os.stat_result, *, sticky_ok: bool = False) -> str | None:
    """Why a file or directory with status ``st`` could have been written by someone other
    than root or the caller (None when it could not). ``sticky_ok`` accepts a sticky directory
    writable by all (for directories above the one that matters)."""
    caller = os.geteuid()
    if st.st_uid not in (0, caller):
        owners = "root" if caller == 0 else f"root or uid {caller}"
        return f"it is owned by uid {st.st_uid}, not {owners}"
    if st.st_mode & _WRITABLE_BY_OTHERS:
        if sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
            return None
        who = {
            stat.S_IWGRP: "its group",
            stat.S_IWOTH: "others",
            _WRITABLE_BY_OTHERS: "its group and others",
        }[st.st_mode & _WRITABLE_BY_OTHERS]
        return f"it is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def untrusted_path(path: str) -> tuple[str, str] | None:
    """``(directory, reason)`` for the first directory above ``path`` (itself excluded) that
    is not trusted, following its real path and the path as written; None when all are."""
    absolute = os.path.abspath(path)
    seen: set[str] = set()
    for start in (absolute, os.path.realpath(absolute)):
        parent = os.path.dirname(start)
        chain = []
        while True:
            chain.append(parent)
            if parent == "/":
                break
            parent = os.path.dirname(parent)
        for directory in reversed(chain):
            if directory in seen:
                continue
            seen.add(directory)
            try:
                st = os.stat(directory)
            except OSError as exc:
                return directory, f"it cannot be inspected: {exc.strerror or exc}"
            reason = untrusted_reason(st, sticky_ok=True)
            if reason is not None:
                return directory, reason
    return None


def make_directories(
    path: str, *, mode: int, parents_mode: int = 0o755, exist_ok: bool = True
) -> None:
    """Makes directory ``path`` with ``mode`` and its missing parents with ``parents_mode``.

    Existing directories on the way must be trusted (see the module docstring); a final
    directory that already exists keeps its mode, or is refused (errno ``EEXIST``) without
    ``exist_ok``. Raises :class:`HostIOError` naming the directory that could not be made or
    is not trusted.
    """
    absolute = os.path.abspath(path)
    names = [name for name in absolute.split("/") if name]
    fd = _open_dir("/", None, created=False)
    current = "/"
    try:
        for index, name in enumerate(names):
            current = os.path.join(current, name)
            last = index == len(names) - 1
            child = _make_one(
                fd, name, current, mode if last else parents_mode, exist_ok=exist_ok or not last
            )
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def _make_one(parent_fd: int, name: str, path: str, mode: int, *, exist_ok: bool) -> int:
    try:
        # 0700 until fchmod sets the real mode: nobody else can use it in between.
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        created = True
    except FileExistsError as exc:
        if not exist_ok:
            raise _error(exc, path, "create directory") from exc
        created = False
    except OSError as exc:
        raise _error(exc, path, "create directory") from exc
    fd = _open_dir(name, parent_fd, created=created, path=path)
    try:
        _settle(fd, path, mode, created=created)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _settle(fd: int, path: str, mode: int, *, created: bool) -> None:
    """Gives a directory this call made its mode; checks one that was there."""
    try:
        st = os.fstat(fd)
        if created and st.st_uid == os.geteuid():
            os.fchmod(fd, mode)
            return
    except OSError as exc:
        raise _error(exc, path, "set the mode of") from exc
    reason = untrusted_reason(st, sticky_ok=True)
    if reason is not None:
        raise HostIOError(
            f"refusing to use directory {path}: {reason}",
            errno=errno_codes.EPERM,
            path=path,
            hint=f"make it owned by root and not writable by others "
            f"(chown root {path}; chmod go-w {path}), or choose another location",
        )


def _open_dir(name: str, parent_fd: int | None, *, created: bool, path: str = "/") -> int:
    # What this call made is opened without following links (it must be the new directory);
    # an existing component may be a link (/var/run), and is checked after it is opened.
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (os.O_NOFOLLOW if created else 0)
    try:
        return os.open(name, flags, dir_fd=parent_fd)
    except OSError as exc:
        raise _error(exc, path, "open directory") from exc


def _error(exc: OSError, path: str, step: str) -> HostIOError:
    hint = None
    if exc.errno in (errno_codes.EACCES, errno_codes.EPERM, errno_codes.EROFS):
        hint = "run as a user that may create it, or choose another location"
    elif exc.errno == errno_codes.EEXIST:
        hint = "it already exists; remove it or choose another location"
    elif exc.errno in (errno_codes.ENOTDIR, errno_codes.ELOOP):
        hint = "a file or link is in the way; remove it or choose another location"
    return HostIOError(
        f"cannot {step} {path}: {exc.strerror or exc}", errno=exc.errno, path=path, hint=hint
    )
