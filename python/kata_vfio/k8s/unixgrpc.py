"""A gRPC server on a unix socket, as the kubelet's plugin APIs want them: a stale socket a
killed process left is replaced, the new one is mode 0600, and the server can tell whether its
socket file is still its own (the kubelet removes plugin sockets when it restarts).

The socket appears at its path only once it accepts connections: gRPC binds the file a moment
before it listens, and a kubelet that dials in that moment (its plugin watcher reacts to the
file's creation) is refused. So the server binds a hidden name beside it (the kubelet's plugin
watcher skips dot files), starts, and renames it into place; on stop the path goes first, so
nobody dials a socket that no longer answers."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable
from concurrent import futures

import grpc

from kata_vfio.errors import KubernetesError

__all__ = ["SUN_PATH_MAX", "UnixGrpcServer", "rpc_error"]

SUN_PATH_MAX = 107
"""The kernel's limit for a unix socket path (sun_path, without the NUL)."""

log = logging.getLogger(__name__)


class UnixGrpcServer:
    """Serves what ``add_services(server)`` adds on the unix socket ``path``; ``name`` says
    whose it is in logs, ``hint`` what to check when the socket cannot be made."""

    def __init__(
        self,
        path: str,
        add_services: Callable[[grpc.Server], None],
        *,
        name: str,
        hint: str,
        workers: int = 8,
    ) -> None:
        directory, name = os.path.split(path)
        binding = os.path.join(directory, f".{name}.new")
        if len(binding.encode()) > SUN_PATH_MAX:
            raise KubernetesError(
                f"the socket path {path} is too long for a unix socket (at most "
                f"{SUN_PATH_MAX - len(binding) + len(path)} bytes here)",
                hint="use a shorter directory or name",
            )
        self.path = path
        self._binding = binding
        self.name = name
        self.hint = hint
        self.workers = workers
        self._add_services = add_services
        self._server: grpc.Server | None = None
        self._identity: tuple[int, int] | None = None

    def start(self) -> None:
        """Serves on a fresh socket (a stale one is replaced), which appears at :attr:`path`
        listening."""
        self._remove_stale(self.path)
        self._remove_stale(self._binding)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers))
        self._add_services(server)
        try:
            port = server.add_insecure_port(f"unix:{self._binding}")
        except RuntimeError as exc:
            port = 0
            detail = str(exc)
        else:
            detail = ""
        if port == 0:
            raise KubernetesError(
                f"cannot listen on {self.path}{': ' + detail if detail else ''}",
                hint=self.hint,
            )
        server.start()
        try:
            os.chmod(self._binding, 0o600)
            st = os.stat(self._binding)
            os.rename(self._binding, self.path)
        except OSError as exc:
            server.stop(0)
            raise KubernetesError(
                f"cannot put the socket in place at {self.path}: {exc.strerror}", hint=self.hint
            ) from None
        self._identity = (st.st_dev, st.st_ino)
        self._server = server
        log.info("%s: serving on %s", self.name, self.path)

    def stop(self, grace: float = 1.0) -> None:
        """Removes the socket if it is still this server's, then stops serving."""
        if self.socket_present():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._identity = None
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait()

    def restart(self) -> None:
        """A new server on a new socket (after the kubelet removed ours)."""
        self.stop(grace=0)
        self.start()

    def socket_present(self) -> bool:
        """Our socket file is still there."""
        if self._identity is None:
            return False
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def _remove_stale(self, path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise KubernetesError(
                f"{path} exists and is not a socket",
                hint="remove it; this directory holds only the kubelet's sockets",
            )
        os.unlink(path)
        log.info("%s: removed the stale socket %s", self.name, path)


def rpc_error(exc: grpc.RpcError) -> str:
    """A failed call's status and details, in one line."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else None
    name = code.name if code is not None else "error"
    return f"{name}: {details}" if details else name
