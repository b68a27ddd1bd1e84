"""The QEMU launcher: private runtime directory, QMP readiness, errors, shutdown, fds."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kata_vfio.errors import QemuError, QemuStartError
from kata_vfio.qemu.argv import QemuCommand, QemuOpts
from kata_vfio.qemu.launcher import QemuProcess
from kata_vfio.qemu.qmp import QmpSession

pytestmark = pytest.mark.qemu


def _bare(qemu: str, *extra: tuple[str, str | QemuOpts | None]) -> QemuCommand:
    return QemuCommand(qemu).extend(
        [
            ("-machine", "q35"),
            ("-accel", "tcg"),
            ("-nodefaults", None),
            ("-display", "none"),
            *extra,
        ]
    )


def test_start_answers_qmp_in_a_private_directory_and_stop_cleans_up(qemu_binary: str) -> None:
    with QemuProcess(_bare(qemu_binary, ("-S", None))) as vm:
        directory = vm.runtime_dir
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert stat.S_ISSOCK(os.stat(vm.qmp_socket).st_mode)
        # the public socket serves another client while the launcher holds its own
        with QmpSession(vm.qmp_socket).connect() as other:
            assert other.execute("query-status")["status"] == "prelaunch"
        assert Path(vm.path("qemu.pid")).read_text().strip() == str(vm.pid)
        assert vm.qmp.execute("query-status")["status"] == "prelaunch"
        assert "-mon" in vm.argv and vm.argv[0] == qemu_binary
    assert not os.path.exists(directory)
    assert vm.stopped_by == "quit"  # a paused VM cannot power down: straight to quit
    assert vm.returncode == 0


def test_running_vm_without_a_guest_gets_powerdown_then_quit(qemu_binary: str) -> None:
    vm = QemuProcess(_bare(qemu_binary), powerdown_timeout=0.5).start()
    assert vm.qmp.execute("query-status")["running"] is True
    assert vm.stop() == 0
    assert vm.stopped_by == "quit"


def test_vm_that_exits_on_its_own_is_noticed(qemu_binary: str) -> None:
    vm = QemuProcess(_bare(qemu_binary)).start()
    vm.qmp.execute("quit")
    assert vm.wait(30) == 0
    vm.stop()
    assert vm.stopped_by == "exited"


def test_qemu_error_carries_exit_code_argv_and_message(qemu_binary: str, tmp_path: Path) -> None:
    runtime = tmp_path / "vm"
    with pytest.raises(QemuStartError) as info:
        QemuProcess(
            _bare(qemu_binary, ("-device", "no-such-device,id=x")), runtime_dir=str(runtime)
        ).start()
    error = info.value
    assert error.exit_code == 1
    assert "no-such-device,id=x" in error.argv
    assert "'no-such-device' is not a valid device model name" in error.stderr
    assert "no-such-device" in str(error) and error.hint
    assert not runtime.exists()  # nothing left behind


def test_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(QemuError, match="not found") as info:
        QemuProcess([str(tmp_path / "qemu-none")]).start()
    assert "qemu-system-x86" in (info.value.hint or "")


def test_a_process_that_never_answers_qmp_times_out_and_is_killed(tmp_path: Path) -> None:
    vm = QemuProcess(
        ["/bin/sh", "-c", "exec sleep 60"], start_timeout=0.5, runtime_parent=str(tmp_path)
    )
    with pytest.raises(QemuStartError, match=r"did not answer on QMP within 0\.5 s"):
        vm.start()
    assert vm.returncode is not None  # killed, not left running
    assert list(tmp_path.iterdir()) == []


def test_runtime_dir_must_be_new_and_short(qemu_binary: str, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(QemuError, match="already exists"):
        QemuProcess(_bare(qemu_binary), runtime_dir=str(taken)).start()
    nested = tmp_path / "run" / "kata-vfio" / "vm"
    with QemuProcess(_bare(qemu_binary, ("-S", None)), runtime_dir=str(nested)) as vm:
        assert vm.runtime_dir == str(nested)
    assert not nested.exists() and nested.parent.is_dir()  # only the VM's own directory goes
    # The shared parent (/run/kata-vfio, the binding journal's too) is root's alone.
    assert stat.S_IMODE(nested.parent.stat().st_mode) == 0o700
    deep = tmp_path / ("d" * 120)
    with pytest.raises(QemuError, match="longer than 107 bytes"):
        QemuProcess(_bare(qemu_binary), runtime_dir=str(deep)).start()
    assert not deep.exists()


def test_open_fds_are_handed_to_qemu(qemu_binary: str) -> None:
    read_end, write_end = os.pipe()
    try:
        command = _bare(qemu_binary, ("-S", None), ("-add-fd", f"fd={write_end},set=3"))
        with QemuProcess(command, pass_fds=[write_end]) as vm:
            # QEMU took the inherited descriptor into fd set 3 (it keeps its own dup of it)
            fdsets = vm.qmp.execute("query-fdsets")
            assert [(s["fdset-id"], len(s["fds"])) for s in fdsets] == [(3, 1)]
    finally:
        os.close(read_end)
        os.close(write_end)


def test_files_for_the_vm_live_in_the_runtime_dir(qemu_binary: str) -> None:
    vm = QemuProcess(_bare(qemu_binary, ("-S", None)))
    with pytest.raises(QemuError, match="not started"):
        _ = vm.runtime_dir
    with vm:
        assert vm.path("console.sock") == os.path.join(vm.runtime_dir, "console.sock")
        with pytest.raises(QemuError, match="plain name"):
            vm.path("../escape")
    with pytest.raises(QemuError, match="not running"):
        _ = vm.qmp


def test_runtime_dirs_get_exact_modes_whatever_the_umask(qemu_binary: str, tmp_path: Path) -> None:
    nested = tmp_path / "run" / "kata-vfio" / "vm"
    old = os.umask(0)
    try:
        with QemuProcess(_bare(qemu_binary, ("-S", None)), runtime_dir=str(nested)) as vm:
            modes = [stat.S_IMODE(os.stat(p).st_mode) for p in (nested.parent.parent, nested)]
            assert modes == [0o700, 0o700]
            assert stat.S_IMODE(os.stat(vm.path("qemu.log")).st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_runtime_parent_others_can_write_is_refused(qemu_binary: str, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could swap the VM's directory for their own
    with pytest.raises(QemuError, match=rf"refusing to use directory {shared}: .*writable"):
        QemuProcess(_bare(qemu_binary), runtime_dir=str(shared / "vm")).start()
    assert list(shared.iterdir()) == []


def test_the_log_tail_is_read_from_the_end(tmp_path: Path) -> None:
    from kata_vfio.qemu import launcher

    log = tmp_path / "qemu.log"
    with open(log, "wb") as handle:
        handle.truncate(64 << 30)  # sparse: reading it whole would need 64 GiB
        handle.seek(0, os.SEEK_END)
        handle.write(b"\nqemu-system-x86_64: the last words")
    tail = launcher._read_tail(str(log))
    assert tail.endswith("qemu-system-x86_64: the last words")
    assert len(tail) == 4000
    assert launcher._read_tail(str(tmp_path / "missing")) == ""
    (tmp_path / "link").symlink_to(log)
    assert launcher._read_tail(str(tmp_path / "link")) == ""


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (no init in a container may reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


LAUNCHER = """
import sys
from kata_vfio.qemu.argv import QemuCommand
from kata_vfio.qemu.launcher import QemuProcess
command = QemuCommand(sys.argv[1]).extend(
    [("-machine", "q35"), ("-accel", "tcg"), ("-nodefaults", None), ("-display", "none"),
     ("-S", None)]
)
vm = QemuProcess(command, runtime_parent=sys.argv[2]).start()
print(vm.pid, flush=True)
sys.stdin.read()  # until killed
"""


def test_qemu_dies_with_a_launcher_killed_by_sigkill(qemu_binary: str, tmp_path: Path) -> None:
    """No handler runs on SIGKILL: only the kernel's parent-death signal can take QEMU."""
    with subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, qemu_binary, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as launcher:
        assert launcher.stdout is not None
        pid = int(launcher.stdout.readline())
        assert not _gone(pid)
        assert Path(f"/proc/{pid}/exe").resolve() == Path(qemu_binary).resolve()
        launcher.kill()
        launcher.wait(30)
        deadline = time.monotonic() + 30
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(pid), f"QEMU {pid} outlived its launcher"
