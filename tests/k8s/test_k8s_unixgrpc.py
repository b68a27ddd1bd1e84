"""UnixGrpcServer: its socket appears only once it listens and goes before it stops answering
(a kubelet dialing at any moment is never refused), a stale socket is replaced, and a file that
is not a socket is refused."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from kata_vfio.errors import KubernetesError
from kata_vfio.k8s.unixgrpc import UnixGrpcServer


class Dialer:
    """Dials ``path`` in a loop whenever it exists, as a kubelet's plugin watcher would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.accepted = 0
        self.refused = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            if not self.path.exists():
                continue
            with socket.socket(socket.AF_UNIX) as client:
                try:
                    client.connect(str(self.path))
                except ConnectionRefusedError:
                    self.refused += 1
                except FileNotFoundError:
                    pass  # removed between the check and the dial: not there, not refused
                else:
                    self.accepted += 1

    def wait_accepted(self, timeout: float = 30.0) -> None:
        """Until one more dial than now is accepted (however loaded the machine)."""
        before = self.accepted
        deadline = time.monotonic() + timeout
        while self.accepted == before:
            assert time.monotonic() < deadline, "the dialer never got through"
            time.sleep(0.001)

    def __enter__(self) -> Dialer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)


def server(path: Path) -> UnixGrpcServer:
    return UnixGrpcServer(str(path), lambda _: None, name="test", hint="none", workers=1)


def test_a_dialer_is_never_refused_while_the_server_starts_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "plugin.sock"
    served = server(path)
    with Dialer(path) as dialer:
        for _ in range(100):
            served.start()
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            dialer.wait_accepted()  # it dials this socket at least once before the stop
            served.stop(grace=0)
    assert dialer.refused == 0
    assert os.listdir(tmp_path) == []  # nor is the hidden name it was bound under left


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "plugin.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # what a killed process leaves: a socket file nobody listens on
    served = server(path)
    served.start()
    try:
        assert served.socket_present()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
    finally:
        served.stop(grace=0)
    assert not path.exists()


def test_a_file_that_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plugin.sock"
    path.write_text("mine\n")
    with pytest.raises(KubernetesError, match="exists and is not a socket"):
        server(path).start()
    assert path.read_text() == "mine\n"
