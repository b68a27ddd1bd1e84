"""A nested QEMU, planned and launched by the project, drives the passed-through NIC."""

from __future__ import annotations

from typing import Any

import pytest
from kvlab import topology

pytestmark = pytest.mark.lab

QEMU_ID = "hostnic"
E1000E_CLASS = "0x020000"


def _modes(lab: Any) -> list[tuple[str, dict[str, Any]]]:
    facts = lab.facts("nested")
    modes = lab.nested_modes
    missing = [m for m in modes if m not in facts]
    assert not missing, f"the nested check did not run {missing}"
    return [(mode, facts[mode]) for mode in modes]


def _inner(run: dict[str, Any], kind: str) -> list[list[str]]:
    return [line.split()[1:] for line in run["inner_console"] if line.split()[0] == kind]


def test_the_nic_is_on_vfio_pci_during_and_back_after(lab: Any) -> None:
    facts = lab.facts("nested")
    assert facts["driver_during"] == "vfio-pci"
    assert facts["driver_after"] == facts["original_driver"] == "e1000e"


def test_qemu_shows_the_passed_through_nic_over_qmp(lab: Any) -> None:
    for mode, run in _modes(lab):
        assert run["qmp_status"]["running"], mode
        assert "qmp_pci" in run, (
            f"{mode}: QEMU never listed {QEMU_ID}; stderr: {run['qemu_stderr']}"
        )
        nic = [d for d in run["qmp_pci"] if d["qdev_id"] == QEMU_ID]
        assert len(nic) == 1, f"{mode}: {run['qmp_pci']}"
        assert (nic[0]["vendor"], nic[0]["device"]) == topology.E1000E, mode
        assert nic[0]["bus"] != 0, f"{mode}: the NIC should sit behind the planned root port"


def test_the_inner_guest_sees_and_drives_the_nic(lab: Any) -> None:
    facts = lab.facts("nested")
    for mode, run in _modes(lab):
        context = f"{mode}: inner console tail:\n" + "\n".join(run["inner_console_tail"])
        seen = [p for p in _inner(run, "INNER-PCI") if p[1:3] == ["0x8086", "0x10d3"]]
        assert len(seen) == 1, context
        address = seen[0][0]
        assert seen[0][3] == E1000E_CLASS, context
        assert [address, "e1000e"] in _inner(run, "INNER-DRIVER"), context
        # The MAC comes from the NIC's registers, read through the passed-through BARs.
        macs = [p[1] for p in _inner(run, "INNER-MAC")]
        assert facts["outer_mac"] == topology.NIC_SINGLE_MAC
        assert macs == [topology.NIC_SINGLE_MAC], context


def test_fd_passed_qemu_gets_no_device_path(lab: Any) -> None:
    for mode, run in _modes(lab):
        if mode != "cdev":
            continue
        argv = run["argv"]
        devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
        objects = [argv[i + 1] for i, a in enumerate(argv) if a == "-object"]
        nic = next(d for d in devices if f"id={QEMU_ID}" in d)
        assert "host=" not in nic
        assert ",fd=" in nic
        assert "iommufd=" in nic
        assert any(o.startswith("iommufd,") and ",fd=" in o for o in objects), objects


def test_the_nested_qemu_runs_unprivileged(lab: Any) -> None:
    for mode, run in _modes(lab):
        qemu = run["qemu"]
        assert run["qemu_drop"] == "run-with", mode
        assert qemu["uid"] == ["65534"] * 4 and qemu["gid"] == ["65534"] * 4, mode
        assert qemu["groups"] == ["65534"], mode
        assert [e for e in qemu["environ"] if e] == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], mode
        if mode == "legacy":  # Debian's kernel has seccomp (the lab kernel does not)
            assert qemu["seccomp"] == "2", "seccomp filter mode"
            assert "-sandbox" in run["argv"]
