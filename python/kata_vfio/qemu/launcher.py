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
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from kata_vfio.errors import QemuError, QemuStartError, QmpError
from kata_vfio.qemu.argv import QemuCommand, QemuOpts
from kata_vfio.qemu.qmp import QmpSession

__all__ = ["QemuProcess"]

_CONTROL_ID = "kata-vfio-control"
_QMP_ID = "kata-vfio-qmp"
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_STDERR_TAIL = 4000


class QemuProcess:
    """One QEMU process (see the module docstring).

    ``command`` is a :class:`QemuCommand` or an argv list (first element the binary).
    ``runtime_dir`` is created (it must not exist; missing parents are made 0755); by default a
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
        start_timeout: float = 30.0,
        qmp_timeout: float = 10.0,
        powerdown_timeout: float = 10.0,
    ) -> None:
        argv = command.argv() if isinstance(command, QemuCommand) else list(command)
        if not argv or not all(isinstance(a, str) for a in argv):
            raise QemuError("QEMU command line is empty or not a list of strings")
        self._argv = argv
        self._requested_dir = runtime_dir
        self._runtime_parent = runtime_parent
        self._pass_fds = tuple(pass_fds)
        self._env = dict(env) if env is not None else None
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
            raise QemuError(f"runtime file name {name!r} must be a plain name")
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
            # The parent (e.g. /run/kata-vfio, also the binding journal's) is root's alone.
            os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
            os.mkdir(path, 0o700)
        except FileExistsError as exc:
            raise QemuError(
                f"runtime directory {path} already exists",
                hint="remove it (a previous VM may still run) or choose another directory",
            ) from exc
        except OSError as exc:
            raise QemuError(
                f"cannot create runtime directory {path}: {exc.strerror}",
                hint="choose a runtime directory this user may create",
            ) from exc
        os.chmod(path, 0o700)  # whatever the umask said
        return path

    def _full_argv(self) -> list[str]:
        argv = list(self._argv)
        for chardev_id, path in ((_CONTROL_ID, self.control_socket), (_QMP_ID, self.qmp_socket)):
            chardev = QemuOpts.of(
                "socket", ("id", chardev_id), ("path", path), ("server", True), ("wait", False)
            )
            argv += ["-chardev", chardev.render(), "-mon", f"chardev={chardev_id},mode=control"]
        return [*argv, "-pidfile", self.path("qemu.pid")]

    def _spawn(self) -> None:
        argv = self._full_argv()
        log_fd = os.open(
            self.path("qemu.log"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        try:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                pass_fds=self._pass_fds,
                close_fds=True,
                env=self._env,
                # Its own process group: a Ctrl-C for us is not one for QEMU.
                start_new_session=True,
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
        argv = self._full_argv()
        return QemuStartError(
            f"{what}\n  argv: {shlex.join(argv)}\n  stderr: {stderr or '(empty)'}",
            exit_code=process.poll() if process is not None else None,
            argv=argv,
            stderr=stderr,
            hint="QEMU's own message above says what it rejected",
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


def _read_tail(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return ""
    return data[-_STDERR_TAIL:].decode("utf-8", "replace")
