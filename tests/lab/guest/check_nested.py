"""A nested QEMU, built and started by the project's own code, drives a passed-through NIC.

The NIC alone in its group (topology.NIC_SINGLE) goes to vfio-pci; the project's planner
(plan_topology, build_vm_command) makes the command line and its launcher (QemuProcess) starts
it. Facts: QEMU's own view over QMP (query-status, query-pci) and the inner guest's view from
its console (the PCI functions it sees, the driver that bound, the MAC it read through the
passed-through BARs).

QEMU runs as an unprivileged user (65534): it opens what it needs as root and drops
(``-run-with user=``). In ``cdev`` mode ``pass_cdevs`` opens ``/dev/iommu`` and the NIC's cdev
and hands them over as fds (the lab kernel has no seccomp); in ``legacy`` mode QEMU opens the
group itself before dropping, under a seccomp filter (Debian's kernel has seccomp; the filter
allows the drop, as Kata's recommended one would not). Facts: QEMU's user, groups, seccomp
mode and environment as the kernel reports them.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import kernel_facts as kf
from guestlib import bound
from kvlab import topology

from kata_vfio.errors import QmpError
from kata_vfio.host.memlock import required_memlock
from kata_vfio.qemu.argv import QemuCommand
from kata_vfio.qemu.fds import pass_cdevs
from kata_vfio.qemu.launcher import QemuProcess
from kata_vfio.qemu.privileges import QemuUser
from kata_vfio.qemu.qmp import query_pci
from kata_vfio.qemu.vm import QemuSettings, build_vm_command
from kata_vfio.vm.plan import PassedFunction, VmPlan
from kata_vfio.vm.topology import PortRequest, plan_topology

NIC = topology.NIC_SINGLE
QEMU_ID = "hostnic"
IOMMUFD_ID = "iommufd0"
# TCG inside TCG: the small lab kernel needs about 3 minutes to userspace on a 2-core host
# that is busy with other work (Debian's several times longer).
INNER_TIMEOUT_S = 900.0
INNER_MEMORY_MIB = 128
# The unprivileged QEMU, and the seccomp filter of the legacy mode (Kata's recommended one
# but for elevateprivileges, which QEMU needs to drop to the user itself).
NOBODY = QemuUser(uid=65534, gid=65534, groups=(65534,))
LEGACY_SANDBOX = "on,obsolete=deny,spawn=deny,resourcecontrol=deny"


def _flatten(buses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(devices: list[dict[str, Any]]) -> None:
        for device in devices:
            found.append(
                {
                    "bus": device["bus"],
                    "slot": device["slot"],
                    "function": device["function"],
                    "vendor": device["id"]["vendor"],
                    "device": device["id"]["device"],
                    "qdev_id": device.get("qdev_id", ""),
                }
            )
            walk(device.get("pci_bridge", {}).get("devices", []))

    for bus in buses:
        walk(bus["devices"])
    return found


def _inner_command(context: dict[str, Any], console: Path, mode: str) -> QemuCommand:
    planned = plan_topology([PortRequest()], kind="root-port")
    placement = PassedFunction(
        host=NIC,
        device_id=QEMU_ID,
        port=planned.assignments[0],
        guest_function=0,
        multifunction=False,
        iommufd=IOMMUFD_ID if mode == "cdev" else None,
    )
    plan = VmPlan(
        name="inner",
        memory_mib=INNER_MEMORY_MIB,
        vcpus=1,
        topology=planned,
        functions=(placement,),
        kernel=context["inner_kernel"],
        initrd=context["inner_initrd"],
        kernel_params="console=ttyS0 panic=-1 quiet",
    )
    settings = QemuSettings(
        binary=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
        accel="tcg",
        seccomp_sandbox=LEGACY_SANDBOX if mode == "legacy" else "",
    )
    # The inner console goes to a file the check reads (the plan offers a socket or none).
    return build_vm_command(plan, settings).without(["-serial"]).add("-serial", f"file:{console}")


def _read_console(console: Path) -> list[str]:
    if not console.is_file():
        return []
    return [line.strip() for line in console.read_text(errors="replace").splitlines()]


def _qemu_identity(pid: int) -> dict[str, Any]:
    status = dict(
        line.split(":\t", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":\t" in line
    )
    return {
        "uid": status["Uid"].split(),
        "gid": status["Gid"].split(),
        "groups": status["Groups"].split(),
        "seccomp": status.get("Seccomp", "").strip() or None,  # no seccomp in the kernel
        "environ": Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0"),
    }


def _run_inner(context: dict[str, Any], mode: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="kvlab-nested-"))
    console = work / "console.log"
    command = _inner_command(context, console, mode)
    passed = pass_cdevs(command)  # the cdev and /dev/iommu as fds; a group is QEMU's
    facts: dict[str, Any] = {"mode": mode, "argv": passed.command.argv()}
    started = time.monotonic()
    try:
        with QemuProcess(
            passed.command,
            runtime_parent=str(work),
            pass_fds=passed.pass_fds,
            start_timeout=60,
            user=NOBODY,
            memlock=required_memlock(INNER_MEMORY_MIB << 20, iommufd=mode == "cdev"),
        ) as vm:
            passed.close()  # QEMU holds its own copies now
            facts["qemu"] = _qemu_identity(vm.pid or 0)
            facts["qemu_drop"] = vm.drop.mode if vm.drop is not None else None
            facts["qmp_status"] = vm.qmp.execute("query-status")
            deadline = time.monotonic() + INNER_TIMEOUT_S
            while vm.returncode is None and time.monotonic() < deadline:
                if "qmp_pci" not in facts:
                    # Bus numbers exist once firmware has run: wait until the NIC shows.
                    with contextlib.suppress(QmpError):
                        pci = _flatten(query_pci(vm.qmp))
                        if any(d["qdev_id"] == QEMU_ID for d in pci):
                            facts["qmp_pci"] = pci
                if any(line.startswith("INNER-DONE") for line in _read_console(console)):
                    break
                time.sleep(1)
            facts["inner_finished_s"] = round(time.monotonic() - started, 1)
        facts["qemu_stopped_by"] = vm.stopped_by
        facts["qemu_stderr"] = vm.stderr()[-2000:]
    finally:
        passed.close()
    lines = _read_console(console)
    facts["inner_console"] = [line for line in lines if line.startswith("INNER")]
    facts["inner_console_tail"] = lines[-30:]
    shutil.rmtree(work, ignore_errors=True)
    return facts


def nested(context: dict[str, Any], modes: tuple[str, ...]) -> dict[str, Any]:
    """Run the nested VM once per mode with NIC bound by the project; restore it afterwards."""
    results: dict[str, Any] = {
        "nic": NIC,
        "original_driver": kf.driver_of(NIC),
        "outer_mac": kf.mac_of(NIC),  # read by e1000e here, before the NIC leaves it
    }
    with bound([NIC]):
        results["driver_during"] = kf.driver_of(NIC)
        for mode in modes:
            results[mode] = _run_inner(context, mode)
    results["driver_after"] = kf.driver_of(NIC)
    return results


def run(context: dict[str, Any]) -> dict[str, Any]:
    """The pass-through modes the host asked for: ``legacy`` (host=) and/or ``cdev``
    (fd-passed cdev + iommufd)."""
    return nested(context, tuple(context["nested_modes"]))
