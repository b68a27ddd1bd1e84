"""A gRPC server on a unix socket, as the kubelet's plugin APIs want them: a stale socket a
killed process left is replaced, the new one is mode 0600, and the server can tell whether its
socket file is still its own (the kubelet removes plugin sockets when it restarts)."""

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
        if len(path.encode()) > SUN_PATH_MAX:
            raise KubernetesError(
                f"the socket path {path} is longer than a unix socket allows "
                f"({SUN_PATH_MAX} bytes)",
                hint="use a shorter directory or name",
            )
        self.path = path
        self.name = name
        self.hint = hint
        self.workers = workers
        self._add_services = add_services
        self._server: grpc.Server | None = None
        self._identity: tuple[int, int] | None = None

    def start(self) -> None:
        """Serves on a fresh socket (a stale one is replaced)."""
        self._remove_stale()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers))
        self._add_services(server)
        try:
            port = server.add_insecure_port(f"unix:{self.path}")
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
        os.chmod(self.path, 0o600)
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        self._server = server
        log.info("%s: serving on %s", self.name, self.path)

    def stop(self, grace: float = 1.0) -> None:
        """Stops serving and removes the socket if it is still this server's."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait()
        if self.socket_present():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._identity = None

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

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise KubernetesError(
                f"{self.path} exists and is not a socket",
                hint="remove it; this directory holds only the kubelet's sockets",
            )
        os.unlink(self.path)
        log.info("%s: removed the stale socket %s", self.name, self.path)


def rpc_error(exc: grpc.RpcError) -> str:
    """A failed call's status and details, in one line."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else None
    name = code.name if code is not None else "error"
    return f"{name}: {details}" if details else name
