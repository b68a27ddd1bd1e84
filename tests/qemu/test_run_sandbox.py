"""``run_sandbox``: the sandbox VM's life as a library function, against the real QEMU."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest
from emulated_vm import emulated
from sandbox_hosts import Zoo, oci_spec

from kata_vfio.errors import InvalidInputError, QemuError, QmpError
from kata_vfio.kata.config import KataConfig
from kata_vfio.kata.run import run_sandbox
from kata_vfio.kata.sandbox import SandboxPlan, plan_sandbox
from kata_vfio.qemu.qmp import QmpSession
from kata_vfio.qemu.run import VmStarted

pytestmark = pytest.mark.qemu


def _runnable(
    zoo: Zoo, config: KataConfig, qemu: str, runtime: Path, nodes: list[str], **changes: object
) -> SandboxPlan:
    """A planned sandbox whose command runs here (emulated stand-ins, paused CPUs)."""
    server, _names = zoo
    config = dataclasses.replace(config, path=qemu, default_memory=256, **changes).validate()  # type: ignore[arg-type]
    plan = plan_sandbox(
        oci_spec(nodes), host=server.host, config=config, accel="tcg", runtime_dir=str(runtime)
    )
    return dataclasses.replace(plan, command=emulated(plan).add("-S"))


def test_runs_until_qemu_exits_and_cleans_up(
    zoo: Zoo, nvidia_config: KataConfig, qemu_binary: str, tmp_path: Path
) -> None:
    runtime = tmp_path / "run"
    plan = _runnable(zoo, nvidia_config, qemu_binary, runtime, [], pcie_root_port=2)
    seen: list[VmStarted] = []

    def started(vm: VmStarted) -> None:
        seen.append(vm)
        assert os.stat(vm.runtime_dir).st_mode & 0o777 == 0o700
        with QmpSession(vm.qmp_socket) as session:  # the socket left for other tools
            session.execute("quit")

    result = run_sandbox(plan, on_started=started)
    assert seen == [result] and result.hotplugged == ()
    assert result.runtime_dir == str(runtime) and not runtime.exists()


def test_deferred_devices_are_plugged_after_start(
    zoo: Zoo, nvidia_config: KataConfig, qemu_binary: str, tmp_path: Path
) -> None:
    server, names = zoo
    runtime = tmp_path / "run"
    plan = _runnable(
        zoo,
        nvidia_config,
        qemu_binary,
        runtime,
        [server.group_node(names["nic0"][0])],
        cold_plug_vfio="no-port",
        hot_plug_vfio="root-port",
        pcie_root_port=3,
    )
    assert [d.plug for d in plan.devices] == ["hot"] and len(plan.vm.deferred) == 1
    assert plan.vm.functions == ()
    # No real device to pass here: QEMU refuses the vfio-pci, and the VM is stopped again.
    with pytest.raises(QmpError, match="device_add failed"):
        run_sandbox(plan, on_started=lambda vm: pytest.fail("started despite the failure"))
    assert not runtime.exists()


def test_a_qemu_that_dies_is_reported(
    zoo: Zoo, nvidia_config: KataConfig, qemu_binary: str, tmp_path: Path
) -> None:
    plan = _runnable(zoo, nvidia_config, qemu_binary, tmp_path / "run", [], pcie_root_port=1)
    with pytest.raises(QemuError, match=f"exited with status {-signal.SIGKILL}"):
        run_sandbox(plan, on_started=lambda vm: os.kill(vm.pid, signal.SIGKILL))


def test_a_plan_without_runtime_directory_is_refused(
    zoo: Zoo, nvidia_config: KataConfig, qemu_binary: str
) -> None:
    server, _names = zoo
    config = dataclasses.replace(nvidia_config, path=qemu_binary)
    plan = plan_sandbox(oci_spec([]), host=server.host, config=config, accel="tcg")
    with pytest.raises(InvalidInputError, match="no runtime directory"):
        run_sandbox(plan)
