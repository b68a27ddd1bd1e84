"""Start and stop a QEMU process: no shell, a private runtime directory, QMP, clean shutdown.

Usage::

    with QemuProcess(command) as vm:          # starts QEMU and waits until QMP answers
        vm.qmp.execute("query-status")        # a connected QmpSession
    # leaving the block: system_powerdown, then quit, then SIGKILL; files removed

The runtime directory (mode 0700, created fresh) holds two QMP sockets, the pid file
``qemu.pid`` and QEMU's stderr ``qemu.log``; put the VM's own sockets (console) there too
with :meth:`QemuProcess.path`. A QMP socket serves one client at a time, so the launcher keeps
``control.sock`` for itself (:attr:`QemuProcess.qmp`) and leaves ``qmp.sock``
(:attr:`QemuProcess.qmp_socket`) to other tools, such as ``kata-vfio qemu hotplug``.

Open file descriptors listed in ``pass_fds`` stay open in QEMU under the same numbers (for
``fd=`` of fd-passed VFIO devices or iommufd, or ``-add-fd``).

QEMU gets :data:`~kata_vfio.qemu.privileges.MINIMAL_ENV` (plus ``env``), never the caller's
environment. Its server sockets in the runtime directory (both QMP sockets, the console of a
planned VM) are bound here and passed as fds, so QEMU never needs to reach the directory, which
stays this process's own. With ``user``, QEMU runs as that user (see
:mod:`kata_vfio.qemu.privileges`): it drops to it itself after opening what it needs
(``-run-with user=``), or, when its ``-sandbox`` filter forbids that, is started as the user
(the pid file is then written here). ``memlock`` raises ``RLIMIT_MEMLOCK`` for QEMU to that
many bytes: an unprivileged QEMU pins guest memory for VFIO against that limit when it maps
memory for a hot-plugged device.

QEMU never outlives its launcher: it is started through a few lines of Python (the standard
library only, no shell) that set the kernel's parent-death signal (``PR_SET_PDEATHSIG``,
SIGKILL) and then exec QEMU, so even a SIGKILL of the launcher takes QEMU with it. The
kernel clears that signal when a process changes its user, so a QEMU that drops to ``user``
itself (``-run-with user=``) loses it at that point; one started as the user keeps it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType

from kata_vfio._echo import echo
from kata_vfio._trust import make_directories
from kata_vfio.errors import HostIOError, InvalidInputError, QemuError, QemuStartError, QmpError
from kata_vfio.qemu.argv import QemuCommand, QemuOpts
from kata_vfio.qemu.privileges import (
    MINIMAL_ENV,
    DropPlan,
    QemuUser,
    denies_privilege_change,
    drop_plan,
    qemu_version,
    sandbox_of,
)
from kata_vfio.qemu.qmp import QmpSession

__all__ = ["QemuProcess"]

_CONTROL_ID = "kata-vfio-control"
_QMP_ID = "kata-vfio-qmp"
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_STDERR_TAIL = 4000
# Runs in QEMU's process between the fork and QEMU's exec: PR_SET_PDEATHSIG (1) = SIGKILL,
# then a check that the launcher did not die before it took effect, then QEMU itself with
# exactly the environment given (Python may have added LC_CTYPE to its own).
# argv: launcher pid, QEMU's path, N, N environment entries, QEMU's argv.
_PARENT_DEATH = """\
import ctypes, os, signal, sys
if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0) != 0:
    sys.exit("kata-vfio: prctl(PR_SET_PDEATHSIG) failed: " + os.strerror(ctypes.get_errno()))
if os.getppid() != int(sys.argv[1]):
    sys.exit("kata-vfio: the launcher exited before QEMU started")
count = int(sys.argv[3])
env = dict(entry.split("=", 1) for entry in sys.argv[4 : 4 + count])
os.execve(sys.argv[2], sys.argv[4 + count :], env)
"""


class QemuProcess:
    """One QEMU process (see the module docstring).

    ``command`` is a :class:`QemuCommand` or an argv list (first element the binary).
    ``runtime_dir`` is created (it must not exist; it and missing parents are made 0700, and
    existing parents must not be writable by others); by default a
    fresh directory under ``runtime_parent`` (default: the system temporary directory).
    ``start_timeout`` bounds
    the wait for QMP; ``qmp_timeout`` each QMP call; ``powerdown_timeout`` how long
    :meth:`stop` gives the guest to power off before it sends ``quit``.
    """

    def __init__(
        self,
        command: QemuCommand | Sequence[str],
        *,
        runtime_dir: str | None = None,
        runtime_parent: str | None = None,
        pass_fds: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
        user: QemuUser | None = None,
        memlock: int | None = None,
        start_timeout: float = 30.0,
        qmp_timeout: float = 10.0,
        powerdown_timeout: float = 10.0,
    ) -> None:
        argv = command.argv() if isinstance(command, QemuCommand) else list(command)
        if not argv or not all(isinstance(a, str) for a in argv):
            raise QemuError("QEMU command line is empty or not a list of strings")
        self._argv = argv
        self._command = command if isinstance(command, QemuCommand) else None
        self._spawned: list[str] | None = None
        self._requested_dir = runtime_dir
        self._runtime_parent = runtime_parent
        self._pass_fds = tuple(pass_fds)
        self._env = _environment(env)
        self._user = user
        self._drop: DropPlan | None = None
        if memlock is not None and memlock < 0:
            raise InvalidInputError(f"memlock limit {memlock} is negative")
        self._memlock = memlock
        self._start_timeout = start_timeout
        self._qmp_timeout = qmp_timeout
        self._powerdown_timeout = powerdown_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._qmp: QmpSession | None = None
        self._runtime_dir: str | None = None
        self._stderr_text = ""
        self._how_stopped: str | None = None

    # -- paths -------------------------------------------------------------------------

    @property
    def runtime_dir(self) -> str:
        """The private runtime directory (exists between start and stop)."""
        if self._runtime_dir is None:
            raise QemuError("QEMU is not started: no runtime directory yet")
        return self._runtime_dir

    def path(self, name: str) -> str:
        """A file name inside the runtime directory (for sockets the VM should create)."""
        if "/" in name or name in ("", ".", ".."):
            raise QemuError(f"runtime file name {echo(name)} must be a plain name")
        return os.path.join(self.runtime_dir, name)

    @property
    def qmp_socket(self) -> str:
        """The QMP unix socket for other tools (the launcher uses its own)."""
        return self.path("qmp.sock")

    @property
    def control_socket(self) -> str:
        """The launcher's own QMP socket (behind :attr:`qmp`)."""
        return self.path("control.sock")

    @property
    def argv(self) -> list[str]:
        """The argv QEMU was (or will be) started with, including the QMP options."""
        if self._spawned is not None:
            return list(self._spawned)
        if self._runtime_dir is None:
            return list(self._argv)
        return self._full_argv()

    @property
    def pid(self) -> int | None:
        """QEMU's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status once it has exited."""
        return self._process.poll() if self._process is not None else None

    @property
    def drop(self) -> DropPlan | None:
        """How QEMU was (or will be) brought to ``user``; None without one."""
        return self._drop

    @property
    def stopped_by(self) -> str | None:
        """How :meth:`stop` ended QEMU: ``exited``, ``powerdown``, ``quit`` or ``kill``."""
        return self._how_stopped

    @property
    def qmp(self) -> QmpSession:
        """The connected QMP session."""
        if self._qmp is None:
            raise QemuError("QEMU is not running: no QMP session")
        return self._qmp

    def stderr(self) -> str:
        """What QEMU wrote to stderr so far (kept after cleanup)."""
        if self._runtime_dir is not None:
            self._stderr_text = _read_tail(os.path.join(self._runtime_dir, "qemu.log"))
        return self._stderr_text

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> QemuProcess:
        """Creates the runtime directory, starts QEMU and waits until QMP answers.

        Raises :class:`QemuError` with QEMU's exit code, argv and stderr when it exits or
        does not answer in time; nothing is left behind then.
        """
        if self._process is not None:
            raise QemuError("QEMU was already started by this object")
        self._runtime_dir = self._make_runtime_dir()
        try:
            self._drop = self._plan_drop()
            if len(self.control_socket.encode()) > _MAX_SOCKET_PATH:
                raise QemuError(
                    f"QMP socket path {self.control_socket} is longer than {_MAX_SOCKET_PATH} "
                    "bytes",
                    hint="use a shorter runtime directory",
                )
            self._spawn()
            self._qmp = self._wait_for_qmp()
        except BaseException:
            self._terminate_quietly()
            self._cleanup()
            raise
        return self

    def wait(self, timeout: float | None = None) -> int:
        """Waits for QEMU to exit; returns its exit status."""
        if self._process is None:
            raise QemuError("QEMU was never started")
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise QemuError(
                f"QEMU (pid {self._process.pid}) still runs after {timeout:g} s"
            ) from exc

    def stop(
        self, *, powerdown_timeout: float | None = None, quit_timeout: float = 5.0
    ) -> int | None:
        """Stops QEMU softly, then firmly: ``system_powerdown`` (the guest shuts down; skipped
        while the VM is paused, nothing would answer it), then ``quit``, then SIGKILL.
        Removes the runtime directory. Returns the exit status."""
        process = self._process
        if process is None:
            self._cleanup()
            return None
        if powerdown_timeout is None:
            powerdown_timeout = self._powerdown_timeout
        try:
            if process.poll() is not None:
                self._how_stopped = "exited"
            elif self._guest_running() and self._ask(
                process, "system_powerdown", powerdown_timeout
            ):
                self._how_stopped = "powerdown"
            elif self._ask(process, "quit", quit_timeout):
                self._how_stopped = "quit"
            else:
                self._how_stopped = "kill"
                process.kill()
                process.wait()
        finally:
            self._close_qmp()
            self.stderr()
            self._cleanup()
        return process.returncode

    def __enter__(self) -> QemuProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------

    def _make_runtime_dir(self) -> str:
        if self._requested_dir is None:
            return tempfile.mkdtemp(prefix="kata-vfio-qemu-", dir=self._runtime_parent)
        path = os.path.abspath(self._requested_dir)
        try:
            # The parent (/run/kata-vfio) is shared by all VMs and the bind journal: root's
            # alone, like the VM's own directory; every mode is exact whatever the umask.
            make_directories(path, mode=0o700, parents_mode=0o700, exist_ok=False)
        except HostIOError as exc:
            if exc.errno == errno.EEXIST and exc.path == path:
                raise QemuError(
                    f"runtime directory {path} already exists",
                    hint="remove it (a previous VM may still run) or choose another directory",
                ) from exc
            raise QemuError(
                f"cannot create runtime directory {path}: {exc.message}",
                hint=exc.hint or "choose a runtime directory this user may create",
            ) from exc
        return path

    def _full_argv(self, listeners: _Listeners | None = None) -> list[str]:
        """The argv to run. With ``listeners``, every server socket in the runtime directory
        (the QMP sockets, the plan's console) is bound here and passed as an fd: QEMU never
        needs to reach the runtime directory, so it stays root's even when QEMU is not."""

        def socket_at(path: str) -> tuple[str, object]:
            return ("path", path) if listeners is None else ("fd", listeners.bind(path))

        def prebound(opts: QemuOpts) -> QemuOpts:
            path = opts.get("path")
            if opts.head != "socket" or opts.get("server") != "on" or path is None:
                return opts
            if os.path.dirname(os.path.abspath(path)) != self._runtime_dir:
                return opts
            return opts.with_props(("path", None), socket_at(path))

        if self._command is not None and listeners is not None:
            argv = self._command.map_opts("-chardev", prebound).argv()
        else:
            argv = list(self._argv)
        for chardev_id, path in ((_CONTROL_ID, self.control_socket), (_QMP_ID, self.qmp_socket)):
            chardev = QemuOpts.of(
                "socket", ("id", chardev_id), socket_at(path), ("server", True), ("wait", False)
            )
            argv += ["-chardev", chardev.render(), "-mon", f"chardev={chardev_id},mode=control"]
        if self._drop is not None and self._drop.option is not None:
            argv += list(self._drop.option)
        if self._drop is not None and self._drop.mode == "exec":
            return argv  # the pid file is written here: QEMU cannot reach the directory
        return [*argv, "-pidfile", self.path("qemu.pid")]

    def _plan_drop(self) -> DropPlan | None:
        if self._user is None:
            return None
        sandbox = sandbox_of(self._argv)
        # Only a QEMU that drops by itself needs to be asked which option it knows.
        version = None if denies_privilege_change(sandbox) else qemu_version(self._argv[0])
        return drop_plan(self._user, version=version, sandbox=sandbox)

    def _spawn(self) -> None:
        listeners = _Listeners()
        try:
            argv = self._full_argv(listeners)
            self._spawned = argv
            self._popen(argv, listeners.fds)
        finally:
            listeners.close()
        if self._drop is not None and self._drop.mode == "exec" and self._process is not None:
            _write_new(self.path("qemu.pid"), f"{self._process.pid}\n".encode(), 0o644)

    def _popen(self, argv: list[str], sockets: Sequence[int]) -> None:
        log_fd = os.open(
            self.path("qemu.log"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        exec_as = self._drop.user if self._drop is not None and self._drop.mode == "exec" else None
        try:
            with _memlock_for_children(self._memlock):
                self._process = subprocess.Popen(
                    _dying_with_us(argv, self._env, as_other_user=exec_as is not None),
                    stdin=subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=log_fd,
                    pass_fds=(*self._pass_fds, *sockets),
                    close_fds=True,
                    env=self._env,
                    # Its own process group: a Ctrl-C for us is not one for QEMU.
                    start_new_session=True,
                    user=None if exec_as is None else exec_as.uid,
                    group=None if exec_as is None else exec_as.gid,
                    extra_groups=None if exec_as is None else list(exec_as.groups),
                )
        except FileNotFoundError as exc:
            raise QemuError(
                f"QEMU binary {argv[0]} not found",
                hint="install qemu-system-x86 or set the hypervisor path in the configuration",
            ) from exc
        except OSError as exc:
            raise QemuError(
                f"cannot start {argv[0]}: {exc.strerror}", hint="check the binary's permissions"
            ) from exc
        finally:
            os.close(log_fd)

    def _wait_for_qmp(self) -> QmpSession:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + self._start_timeout
        delay = 0.01
        while True:
            code = process.poll()
            if code is not None:
                raise self._failure(f"QEMU exited with status {code} before QMP answered")
            if os.path.exists(self.control_socket):
                session = QmpSession(self.control_socket, timeout=self._qmp_timeout)
                try:
                    return session.connect(timeout=max(0.1, deadline - time.monotonic()))
                except QmpError:
                    session.close()
            if time.monotonic() >= deadline:
                raise self._failure(f"QEMU did not answer on QMP within {self._start_timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _failure(self, what: str) -> QemuStartError:
        stderr = self.stderr().strip()
        process = self._process
        argv = self.argv
        exit_code = process.poll() if process is not None else None
        return QemuStartError(
            f"{what}\n  argv: {shlex.join(argv)}\n  stderr: {stderr or '(empty)'}",
            exit_code=exit_code,
            argv=argv,
            stderr=stderr,
            hint=failure_hint(stderr, exit_code),
        )

    def _ask(self, process: subprocess.Popen[bytes], command: str, timeout: float) -> bool:
        """Sends ``command`` over QMP; True when QEMU exited within ``timeout``."""
        if self._qmp is not None:
            with contextlib.suppress(QmpError):
                self._qmp.execute(command, timeout=min(timeout, self._qmp_timeout))
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _guest_running(self) -> bool:
        if self._qmp is None:
            return False
        try:
            status = self._qmp.execute("query-status")
        except QmpError:
            return False
        return isinstance(status, dict) and bool(status.get("running"))

    def _terminate_quietly(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
        self._close_qmp()
        if self._runtime_dir is not None:
            self.stderr()

    def _close_qmp(self) -> None:
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None

    def _cleanup(self) -> None:
        directory = self._runtime_dir
        if directory is None:
            return
        self._runtime_dir = None
        # The directory was created by us, fresh and private: everything in it is ours.
        shutil.rmtree(directory, ignore_errors=True)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# RLIMIT_MEMLOCK is per process: raising ours for the moment of a fork is not shared.
_RLIMIT_LOCK = threading.Lock()


def _dying_with_us(argv: list[str], env: Mapping[str, str], *, as_other_user: bool) -> list[str]:
    """``argv`` run through :data:`_PARENT_DEATH` (QEMU is killed when this process dies).
    The binary is looked up here, on QEMU's PATH, so a missing one is reported as before."""
    binary = shutil.which(argv[0], path=env.get("PATH", os.defpath))
    if binary is None:
        raise FileNotFoundError(errno.ENOENT, "not found", argv[0])
    # The interpreter itself, not a virtual environment's link to it: QEMU's user may be
    # unable to reach the environment, and only the standard library is used.
    python = os.path.realpath(sys.executable) if sys.executable else ""
    if not python or (as_other_user and not _anyone_can_run(python)):
        # Embedded, or out of the reach of QEMU's user: QEMU runs without the guard.
        return [binary, *argv[1:]]
    entries = [f"{name}={value}" for name, value in env.items()]
    # -I -S: no user site, no environment, no site-packages: only the standard library.
    return [
        python, "-I", "-S", "-c", _PARENT_DEATH,
        str(os.getpid()), binary, str(len(entries)), *entries, *argv,
    ]  # fmt: skip


def _anyone_can_run(path: str) -> bool:
    """Whether every user may run ``path``: others may execute it and search each directory
    above it (QEMU may be started as an unprivileged user)."""
    if not path.startswith("/"):
        return False
    current = path
    while True:
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def _environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(MINIMAL_ENV)
    for name, value in (extra or {}).items():
        if not _ENV_NAME.match(name) or "\0" in value:
            raise InvalidInputError(
                f"environment variable {echo(name)} for QEMU is not a plain NAME=value",
                hint="names are letters, digits and '_'; values hold no NUL",
            )
        env[name] = value
    return env


def failure_hint(stderr: str, exit_code: int | None) -> str:
    """What to do about a QEMU that failed to start or exited: QEMU's own message when it
    wrote one, else what its exit status (None: still running) says."""
    if "no option group 'sandbox'" in stderr:
        # QEMU registers -sandbox only when the kernel can install seccomp filters.
        return (
            "this kernel (or QEMU) has no seccomp filter support: use a kernel with "
            'CONFIG_SECCOMP_FILTER, or set seccompsandbox = "" in the Kata configuration'
        )
    if stderr:
        return "QEMU's own message above says what it rejected"
    if exit_code is None:
        # With VFIO devices QEMU pins all guest memory before it serves QMP.
        return (
            "QEMU is still running but has not answered on QMP: with VFIO devices it pins all "
            "guest memory first; on a slow or loaded host raise --start-timeout"
        )
    if exit_code < 0:
        return (
            f"QEMU was killed by signal {-exit_code} before it wrote anything (the OOM killer? "
            "see the kernel log with dmesg)"
        )
    return (
        f"QEMU exited with status {exit_code} without a message: run the argv above by hand "
        "to see what it does"
    )


class _Listeners:
    """Unix sockets bound and listening here, for QEMU to serve on (``-chardev ...,fd=``)."""

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []

    def bind(self, path: str) -> int:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(4)
        except OSError as exc:
            listener.close()
            raise QemuError(
                f"cannot listen on {path}: {exc.strerror}",
                hint="the runtime directory must be new and this process's own",
            ) from exc
        self._sockets.append(listener)
        return listener.fileno()

    @property
    def fds(self) -> tuple[int, ...]:
        return tuple(listener.fileno() for listener in self._sockets)

    def close(self) -> None:
        """Closes this process's copies (QEMU keeps its own)."""
        for listener in self._sockets:
            listener.close()
        self._sockets.clear()


def _write_new(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _memlock_for_children(limit: int | None) -> Iterator[None]:
    """Raises this process's RLIMIT_MEMLOCK to at least ``limit`` while a child is forked
    (it inherits the limit), then puts the old one back. Never lowers it."""
    if limit is None:
        yield
        return
    with _RLIMIT_LOCK:
        old = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        new = (_at_least(old[0], limit), _at_least(old[1], limit))
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, new)
        except (OSError, ValueError) as exc:
            raise QemuError(
                f"cannot raise RLIMIT_MEMLOCK to {limit} bytes for QEMU: {exc}",
                hint="raising the limit needs root (or CAP_SYS_RESOURCE)",
            ) from exc
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, old)


def _at_least(current: int, limit: int) -> int:
    if current == resource.RLIM_INFINITY:
        return current
    return max(current, limit)


def _read_tail(path: str) -> str:
    """The last bytes of a log, read from the end (a chatty guest can make it large)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, _STDERR_TAIL, max(0, size - _STDERR_TAIL))
    except OSError:
        return ""
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")
