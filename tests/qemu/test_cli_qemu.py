"""``kata-vfio qemu run | ports | hotplug | unplug`` against the real QEMU."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sandbox_hosts import Zoo

from kata_vfio.cli import main
from kata_vfio.qemu.qmp import QmpSession

pytestmark = pytest.mark.qemu


def _setup(tmp_path: Path, qemu: str) -> tuple[Path, Path]:
    config = tmp_path / "configuration.toml"
    config.write_text(
        f'[hypervisor.qemu]\npath = "{qemu}"\nmachine_type = "q35"\ndefault_memory = 256\n'
        'cold_plug_vfio = "root-port"\npcie_root_port = 3\n'
    )
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(
        json.dumps(
            {
                "ociVersion": "1.1.0",
                "annotations": {
                    "io.kubernetes.cri.container-type": "sandbox",
                    "io.kubernetes.cri.sandbox-id": "c0ffee0123456789",
                },
            }
        )
    )
    return config, bundle


def test_dry_run_prints_the_command(
    zoo: Zoo, tmp_path: Path, qemu_binary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config, bundle = _setup(tmp_path, qemu_binary)
    server, _names = zoo
    capsys.readouterr()
    code = main(
        [
            "--sysfs-root",
            server.sysfs_root,
            "--dev-root",
            server.dev_root,
            "qemu",
            "run",
            "--bundle",
            str(bundle),
            "--config",
            str(config),
            "--accel",
            "tcg",
            "--runtime-dir",
            str(tmp_path / "run"),
            "--dry-run",
            "--json",
        ]
    )
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["qemu_argv"][0] == qemu_binary
    assert document["runtime_dir"] == str(tmp_path / "run")
    assert not (tmp_path / "run").exists()  # a dry run starts nothing


def _qemu_run(zoo: Zoo, tmp_path: Path, qemu: str) -> tuple[list[str], list[str], Path]:
    """The roots of the zoo host, ``qemu run`` of a planned sandbox with them, its runtime
    directory."""
    server, _names = zoo
    config, bundle = _setup(tmp_path, qemu)
    roots = ["--sysfs-root", server.sysfs_root, "--dev-root", server.dev_root]
    runtime = tmp_path / "run"
    run = [
        *roots, "qemu", "run", "--bundle", str(bundle), "--config", str(config),
        "--accel", "tcg", "--runtime-dir", str(runtime),
    ]  # fmt: skip
    return roots, run, runtime


def test_run_ports_hotplug_error_and_stop(
    zoo: Zoo, tmp_path: Path, qemu_binary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server, names = zoo
    roots, run, runtime = _qemu_run(zoo, tmp_path, qemu_binary)
    command = [sys.executable, "-m", "kata_vfio", *run]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("QEMU running, pid "), (
            process.stderr.read() if process.stderr else ""
        )
        socket = str(runtime / "qmp.sock")
        assert os.stat(runtime).st_mode & 0o777 == 0o700

        capsys.readouterr()
        assert main(["qemu", "ports", "--qmp", socket, "--json"]) == 0
        ports = json.loads(capsys.readouterr().out)["ports"]
        assert [p["id"] for p in ports] == ["rp0", "rp1", "rp2"]
        assert all(p["devices"] == [] for p in ports)

        # There is no real device to pass here: QEMU's own refusal comes back, no traceback.
        node = server.group_node(names["nic0"][0])
        assert main([*roots, "qemu", "hotplug", "--qmp", socket, "--device", node]) == 1
        err = capsys.readouterr().err
        assert "device_add failed" in err and "Traceback" not in err
        assert main(["qemu", "unplug", "--qmp", socket, "--id", "nothing-here"]) == 1
        assert "no device nothing-here" in capsys.readouterr().err
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert not runtime.exists()


def test_qmp_socket_that_does_not_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "none.sock"
    with socket.socket(socket.AF_UNIX) as bound:  # a socket nobody listens on any more
        bound.bind(str(path))
    start = time.monotonic()
    assert main(["qemu", "ports", "--qmp", str(path), "--qmp-timeout", "1"]) == 1
    assert "cannot connect to QMP socket" in capsys.readouterr().err
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "1e999", "9" * 5000, "x"])
@pytest.mark.parametrize(
    "argv",
    [
        ["qemu", "ports", "--qmp", "/nonexistent.sock", "--qmp-timeout"],
        ["qemu", "unplug", "--qmp", "/nonexistent.sock", "--id", "x", "--timeout"],
        ["qemu", "run", "--bundle", "/nonexistent", "--start-timeout"],
    ],
)
def test_timeouts_must_be_finite_positive_seconds(
    argv: list[str], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    *command, option = argv
    # Options are read in order: the timeout goes first, so its error is the one reported.
    assert main([*command[:2], f"{option}={value}", *command[2:]]) == 2
    err = capsys.readouterr().err
    assert "is not a number of seconds" in err and "Traceback" not in err
    assert len(err) < 400


def _qemu_status(socket_path: str) -> str:
    with QmpSession(socket_path).connect() as session:
        return str(session.execute("query-status")["status"])


def test_run_paused_then_resume(
    zoo: Zoo, tmp_path: Path, qemu_binary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _roots, run, runtime = _qemu_run(zoo, tmp_path, qemu_binary)
    run.append("--paused")
    capsys.readouterr()
    assert main([*run, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("would run") and out.rstrip().endswith(" -S")
    process = subprocess.Popen(
        [sys.executable, "-m", "kata_vfio", *run, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        started = json.loads("".join(iter(process.stdout.readline, "}\n")) + "}")
        assert started["paused"] is True
        socket_path = started["qmp"]
        assert _qemu_status(socket_path) == "prelaunch"
        assert main(["qemu", "resume", "--qmp", socket_path]) == 0
        assert capsys.readouterr().out == "resumed: the VM is running\n"
        assert _qemu_status(socket_path) == "running"
        assert main(["qemu", "resume", "--qmp", socket_path, "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == {"status": "running"}
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert not runtime.exists()
