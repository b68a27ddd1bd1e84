"""A nested QEMU, built and started by the project's own code, drives a passed-through NIC.

The NIC alone in its group (topology.NIC_SINGLE) goes to vfio-pci; the project's planner
(plan_topology, build_vm_command) makes the command line and its launcher (QemuProcess) starts
it. Facts: QEMU's own view over QMP (query-status, query-pci) and the inner guest's view from
its console (the PCI functions it sees, the driver that bound, the MAC it read through the
passed-through BARs).
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
from kata_vfio.qemu.argv import QemuCommand, QemuOpts
from kata_vfio.qemu.fds import QemuFds, open_for_qemu
from kata_vfio.qemu.launcher import QemuProcess
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
        memory_mib=128,
        vcpus=1,
        topology=planned,
        functions=(placement,),
        kernel=context["inner_kernel"],
        initrd=context["inner_initrd"],
        kernel_params="console=ttyS0 panic=-1 quiet",
    )
    settings = QemuSettings(
        binary=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64", accel="tcg"
    )
    # The inner console goes to a file the check reads (the plan offers a socket or none).
    return build_vm_command(plan, settings).without(["-serial"]).add("-serial", f"file:{console}")


def _with_passed_fds(command: QemuCommand, fds: QemuFds) -> QemuCommand:
    """The planned command, but QEMU gets /dev/iommu and the cdev as fds, not paths."""
    (passed,) = fds.devices

    def with_fd(opts: QemuOpts) -> QemuOpts:
        if opts.head == "iommufd" and opts.id == fds.object_id:
            return opts.with_props(("fd", fds.iommufd_fd))
        if opts.id == QEMU_ID:
            # With fd= QEMU must not look the device up by address (unprivileged, it cannot).
            return opts.with_props(("host", None), ("fd", passed.fd))
        return opts

    return command.map_opts("-object", with_fd).map_opts("-device", with_fd)


def _read_console(console: Path) -> list[str]:
    if not console.is_file():
        return []
    return [line.strip() for line in console.read_text(errors="replace").splitlines()]


def _run_inner(context: dict[str, Any], mode: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="kvlab-nested-"))
    console = work / "console.log"
    command = _inner_command(context, console, mode)
    fds: QemuFds | None = None
    if mode == "cdev":
        fds = open_for_qemu(NIC, object_id=IOMMUFD_ID)
        command = _with_passed_fds(command, fds)
    facts: dict[str, Any] = {"mode": mode, "argv": command.argv()}
    started = time.monotonic()
    try:
        passed = fds.pass_fds if fds is not None else ()
        with QemuProcess(
            command, runtime_parent=str(work), pass_fds=passed, start_timeout=60
        ) as vm:
            if fds is not None:
                fds.close()  # QEMU holds its own copies now
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
        if fds is not None:
            fds.close()
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
