"""The one atomic file writer (readers see the old file or the new one, never a mix), and the
bounded reader for files that this code parses.

The data goes to a temporary file in the target's own directory (so the final rename cannot
cross a filesystem), which gets its mode with fchmod, is fsynced, then renamed over the target
with os.replace; the directory is fsynced last so the rename itself survives a crash. On any
failure the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import os
import stat
import tempfile

from kata_vfio._echo import echo
from kata_vfio._trust import make_directories
from kata_vfio.errors import HostIOError, InvalidInputError

__all__ = ["atomic_write", "read_regular_fd", "read_regular_file", "remove_file"]

# Temporary names end in ".tmp" so that directory scanners that only read ".json"/".yaml"
# (the CDI registry, for one) never pick up a half-written file.
_TMP_SUFFIX = ".tmp"


def atomic_write(
    path: str,
    data: bytes,
    *,
    mode: int = 0o644,
    overwrite: bool = True,
    allow_symlink: bool = False,
    create_parents: bool = False,
    owner: tuple[int, int] | None = None,
) -> None:
    """Writes ``data`` to ``path`` atomically with permission bits ``mode``.

    ``overwrite=False`` refuses an existing target (the check and the link are one step).
    A target that is a symlink is refused unless ``allow_symlink``: replacing it would silently
    cut the link that someone else manages. ``create_parents`` makes missing parent directories
    with mode 0755. ``owner`` (uid, gid) is given to the new file before it is published.
    Raises :class:`HostIOError` naming the path and the failing step.
    """
    if "\0" in path or not path:
        raise HostIOError(
            f"invalid file path {echo(path)}", path=path, hint="give a plain file path"
        )
    if mode & ~0o7777:
        raise InvalidInputError(f"file mode {mode:#o} has bits beyond the permission bits")
    directory = os.path.dirname(os.path.abspath(path))
    if create_parents:
        make_directories(directory, mode=0o755)
    _check_target(path, allow_symlink=allow_symlink)
    fd, tmp_path = _create_temp(directory, os.path.basename(path))
    try:
        try:
            _write_all(fd, data)
            if owner is not None:
                os.fchown(fd, *owner)  # before fchmod: a chown clears set-id bits
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        _publish(tmp_path, path, overwrite=overwrite)
    except OSError as exc:
        _discard(tmp_path)
        raise _io_error(exc, path, "write") from exc
    except BaseException:
        _discard(tmp_path)
        raise
    _fsync_directory(directory)


def remove_file(path: str, *, missing_ok: bool = True) -> bool:
    """Removes ``path`` and fsyncs its directory; returns False when it did not exist."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        if missing_ok:
            return False
        raise HostIOError(
            f"cannot remove {path}: no such file", errno=errno_codes.ENOENT, path=path
        ) from None
    except OSError as exc:
        raise _io_error(exc, path, "remove") from exc
    _fsync_directory(os.path.dirname(os.path.abspath(path)))
    return True


def read_regular_file(path: str, *, limit: int, what: str) -> bytes:
    """The content of the regular file ``path`` (``what`` names it in errors: "CDI spec").

    Refuses FIFOs, devices and directories (reading them could block or never end) and files
    larger than ``limit`` bytes. Raises :class:`HostIOError`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise _io_error(exc, path, f"read {what}") from exc
    try:
        return read_regular_fd(fd, path, limit=limit, what=what)
    finally:
        os.close(fd)


def read_regular_fd(fd: int, path: str, *, limit: int, what: str) -> bytes:
    """Like :func:`read_regular_file` for an open file descriptor (not closed here)."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HostIOError(
                f"cannot read {what} {path}: not a regular file",
                path=path,
                hint=f"a {what} must be a plain file",
            )
        chunks = []
        total = 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > limit:
                raise HostIOError(
                    f"cannot read {what} {path}: larger than the {limit} bytes allowed",
                    errno=errno_codes.EFBIG,
                    path=path,
                    hint=f"a file this large is not a {what}",
                )
            chunks.append(chunk)
    except HostIOError:
        raise
    except OSError as exc:
        raise _io_error(exc, path, f"read {what}") from exc
    return b"".join(chunks)


def _check_target(path: str, *, allow_symlink: bool) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _io_error(exc, path, "inspect") from exc
    if stat.S_ISLNK(st.st_mode) and not allow_symlink:
        raise HostIOError(
            f"refusing to replace {path}: it is a symbolic link",
            errno=errno_codes.ELOOP,
            path=path,
            hint="write to the file the link points to, or remove the link first",
        )
    if stat.S_ISDIR(st.st_mode):
        raise HostIOError(
            f"cannot write {path}: it is a directory",
            errno=errno_codes.EISDIR,
            path=path,
            hint="give a file path, not a directory",
        )


def _create_temp(directory: str, base: str) -> tuple[int, str]:
    try:
        # mkstemp creates the file with mode 0600 and O_EXCL; nobody else can open it.
        return tempfile.mkstemp(prefix=f".{base}.", suffix=_TMP_SUFFIX, dir=directory)
    except OSError as exc:
        raise _io_error(exc, directory, "create a temporary file in") from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _publish(tmp_path: str, path: str, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp_path, path)
        return
    # link() fails with EEXIST instead of replacing: an atomic "create if absent".
    os.link(tmp_path, path)
    os.unlink(tmp_path)


def _discard(tmp_path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp_path)


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _io_error(exc, directory, "open directory") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems cannot fsync a directory; the rename has happened either way.
        if exc.errno not in (errno_codes.EINVAL, errno_codes.ENOTSUP):
            raise _io_error(exc, directory, "sync directory") from exc
    finally:
        os.close(fd)


def _io_error(exc: OSError, path: str, step: str) -> HostIOError:
    reason = exc.strerror or str(exc)
    hint = None
    if exc.errno in (errno_codes.EACCES, errno_codes.EPERM, errno_codes.EROFS):
        hint = "run as a user that may write there (root for /etc/cdi and /var/run/cdi)"
    elif exc.errno == errno_codes.EEXIST:
        hint = "the file already exists; remove it or allow overwriting"
    elif exc.errno == errno_codes.ENOSPC:
        hint = "free some space on that filesystem"
    elif exc.errno == errno_codes.ENOENT:
        hint = "check the path"
    return HostIOError(f"cannot {step} {path}: {reason}", errno=exc.errno, path=path, hint=hint)
