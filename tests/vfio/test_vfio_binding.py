"""Binding whole groups to vfio-pci and back, on fake hosts driven by the kernel simulator."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from conftest import GPU_DEVICES, binding_options, build
from kata_vfio import binding
from kata_vfio._core import scan
from kata_vfio.errors import BdfError, BindError, DeviceNotFoundError, InvalidInputError
from kata_vfio.testing import FakeHost
from kata_vfio.testing.kernel_sim import KernelSim


def one_nic(scratch: Path, **host: Any) -> FakeHost:
    """A host with one e1000e in group 9 (plus ``host`` settings)."""
    nic = {"bdf": "0000:01:00.0", "id": "8086:10d3", "class": "020000", "driver": "e1000e"}
    if host.get("iommu", True):
        nic["group"] = 9
    return build(scratch / "host", [nic], **host)


def viable(host: FakeHost, group: int) -> bool:
    return scan(host.sysfs_root, host.dev_root, host.proc_root).group(group).viable


def assignable(host: FakeHost, group: int) -> bool:
    return scan(host.sysfs_root, host.dev_root, host.proc_root).group(group).assignable


def test_binds_a_single_device_group_with_the_exact_writes(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    report = binding.bind("0000:01:00.0", **bind_opts)
    devices = os.path.join(lab_host.sysfs_root, "bus/pci")
    assert [(w.path, w.value) for w in report.writes] == [
        (f"{devices}/devices/0000:01:00.0/driver_override", "vfio-pci"),
        (f"{devices}/drivers/e1000e/unbind", "0000:01:00.0"),
        (f"{devices}/drivers_probe", "0000:01:00.0"),
    ]
    (outcome,) = report.devices
    assert (outcome.action, outcome.driver_before, outcome.driver_after) == (
        "bound",
        "e1000e",
        "vfio-pci",
    )
    assert outcome.group == 9
    assert assignable(lab_host, 9)
    (entry,) = binding.journal(bind_opts["state_dir"])
    assert (str(entry.bdf), entry.driver, entry.driver_override, entry.target) == (
        "0000:01:00.0",
        "e1000e",
        None,
        "vfio-pci",
    )


def test_a_shared_group_is_bound_whole_and_says_so(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    report = binding.bind("0000:05:00.1", **bind_opts)
    assert [str(d.bdf) for d in report.devices] == ["0000:05:00.0", "0000:05:00.1"]
    assert any("group 12 has 2 endpoints" in m for m in report.messages), report.messages
    assert assignable(lab_host, 12)


def test_bridges_in_the_group_are_left_alone(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    report = binding.bind(["0000:07:01.0"], **bind_opts)
    assert [str(d.bdf) for d in report.devices] == ["0000:07:01.0", "0000:07:02.0"]
    assert all("06:00.0" not in w.path and w.value != "0000:06:00.0" for w in report.writes)
    assert sim.state()["0000:06:00.0"] == (None, None)
    assert any("leaving bridge/port 0000:06:00.0" in m for m in report.messages)
    assert assignable(lab_host, 13)
    # A switch port in the group stays on pcieport as well.
    binding.bind("0000:04:00.0", **bind_opts)
    assert sim.state()["0000:03:00.0"] == ("pcieport", None)
    assert assignable(lab_host, 11)


def test_only_leaves_the_group_not_viable_with_a_warning(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    report = binding.bind("0000:05:00.0", group=False, **bind_opts)
    assert [str(d.bdf) for d in report.devices] == ["0000:05:00.0"]
    assert any("not viable until 0000:05:00.1" in m for m in report.messages)
    assert not viable(lab_host, 12)
    binding.bind("0000:05:00.1", group=False, **bind_opts)
    assert viable(lab_host, 12)


def test_binding_twice_writes_nothing_and_keeps_the_original(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    binding.bind("0000:81:00.0", **bind_opts)
    journal = binding.journal(bind_opts["state_dir"])
    again = binding.bind("0000:81:00.1", **bind_opts)
    assert again.writes == ()
    assert {d.action for d in again.devices} == {"already-bound"}
    assert binding.journal(bind_opts["state_dir"]) == journal
    assert {e.driver for e in journal} == {"nvidia", "snd_hda_intel"}


def test_restore_puts_every_device_back_and_clears_the_override(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any], opts: dict[str, Any]
) -> None:
    before = sim.state()
    binding.bind(["0000:05:00.0", "0000:81:00.0", "0000:07:02.0"], **bind_opts)
    assert sim.state() != before
    report = binding.restore(**opts)
    assert {d.action for d in report.devices} == {"restored"}
    assert sim.state() == before
    assert binding.journal(opts["state_dir"]) == ()
    assert sorted(os.listdir(os.path.join(lab_host.dev_root, "vfio"))) == ["devices", "vfio"]
    assert binding.restore(**opts).devices == (), "a second restore has nothing to do"


def test_restore_of_one_group_leaves_the_others(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any], opts: dict[str, Any]
) -> None:
    binding.bind(["0000:05:00.0", "0000:01:00.0"], **bind_opts)
    report = binding.restore(["0000:05:00.1"], **opts)
    assert [str(d.bdf) for d in report.devices] == ["0000:05:00.0", "0000:05:00.1"]
    assert [str(e.bdf) for e in binding.journal(opts["state_dir"])] == ["0000:01:00.0"]
    assert sim.state()["0000:01:00.0"][0] == "vfio-pci"


def test_an_unbound_device_is_restored_unbound(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any], opts: dict[str, Any]
) -> None:
    sim.write(os.path.join(lab_host.sysfs_root, "bus/pci/drivers/e1000e/unbind"), b"0000:01:00.0")
    binding.bind("0000:01:00.0", **bind_opts)
    assert binding.journal(opts["state_dir"])[0].driver is None
    binding.restore(**opts)
    assert sim.state()["0000:01:00.0"] == (None, None)


def test_an_original_override_is_restored(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any], opts: dict[str, Any]
) -> None:
    path = os.path.join(lab_host.sysfs_root, "bus/pci/devices/0000:01:00.0/driver_override")
    sim.write(path, b"e1000e")
    binding.bind("0000:01:00.0", **bind_opts)
    binding.restore(**opts)
    assert sim.state()["0000:01:00.0"] == ("e1000e", "e1000e")


def test_dry_run_changes_nothing_and_lists_the_real_writes(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    before = sim.state()
    planned = binding.bind("0000:81:00.0", dry_run=True, **bind_opts)
    assert planned.dry_run
    assert sim.state() == before
    assert sim.log == []
    assert binding.journal(bind_opts["state_dir"]) == ()
    assert [d.driver_after for d in planned.devices] == ["vfio-pci", "vfio-pci"]
    done = binding.bind("0000:81:00.0", **bind_opts)
    assert planned.writes == done.writes
    assert [binding.describe_write(w) for w in planned.writes][:2] == [
        f"echo -n vfio-pci > {lab_host.sysfs_root}/bus/pci/devices/0000:81:00.0/driver_override",
        f"echo -n 0000:81:00.0 > {lab_host.sysfs_root}/bus/pci/drivers/nvidia/unbind",
    ]
    undo = binding.restore(
        dry_run=True, **binding_options(lab_host, sim, Path(bind_opts["state_dir"]))
    )
    assert binding.describe_write(undo.writes[0]) == (
        f"echo > {lab_host.sysfs_root}/bus/pci/devices/0000:81:00.0/driver_override"
    )
    assert sim.state()["0000:81:00.0"][0] == "vfio-pci", "a dry-run restore changes nothing"


def test_ebusy_is_retried(lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]) -> None:
    sim.fail_next("drivers/e1000e/unbind", errno.EBUSY, times=3)
    report = binding.bind("0000:01:00.0", **bind_opts)
    assert report.devices[0].driver_after == "vfio-pci"
    assert sum(path.endswith("e1000e/unbind") for path, _ in sim.log) == 4


def test_persistent_ebusy_is_reported_and_rolled_back(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    before = sim.state()
    sim.fail_next("drivers/e1000e/unbind", errno.EBUSY, times=100)
    with pytest.raises(BindError, match=r"rolled back 0000:01:00\.0") as info:
        binding.bind("0000:01:00.0", **bind_opts)
    assert "Device or resource busy" in str(info.value)
    assert info.value.hint is not None and "EBUSY" in info.value.hint
    assert sim.state() == before
    assert binding.journal(bind_opts["state_dir"]) == ()


def test_a_failure_midway_through_a_group_rolls_back_all_of_it(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    before = sim.state()
    # The second function's unbind fails after the first function is already on vfio-pci.
    sim.fail_next("drivers/snd_hda_intel/unbind", errno.EIO)
    with pytest.raises(BindError) as info:
        binding.bind("0000:81:00.0", **bind_opts)
    assert "rolled back 0000:81:00.0, 0000:81:00.1" in str(info.value)
    assert sim.state() == before
    assert binding.journal(bind_opts["state_dir"]) == ()


def test_a_probe_that_binds_nothing_fails_cleanly(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    before = sim.state()
    sim.fail_probe("vfio-pci", "0000:05:00.1", errno.EINVAL)
    with pytest.raises(BindError, match=r"0000:05:00\.1 did not bind to vfio-pci") as info:
        binding.bind("0000:05:00.0", **bind_opts)
    assert "its driver is none after drivers_probe" in str(info.value)
    assert "rolled back 0000:05:00.0, 0000:05:00.1" in str(info.value)
    assert sim.state() == before


def test_bridges_cannot_be_named(lab_host: FakeHost, bind_opts: dict[str, Any]) -> None:
    for bridge in ("0000:00:10.0", "0000:06:00.0", "0000:00:00.0"):
        with pytest.raises(BindError, match="bridges are never bound"):
            binding.bind(bridge, **bind_opts)


def test_bad_input_is_refused_before_anything_is_written(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    with pytest.raises(BdfError):
        binding.bind("0000:01:00.0/../..", **bind_opts)
    with pytest.raises(DeviceNotFoundError):
        binding.bind("0000:09:00.0", **bind_opts)
    for driver in ("../vfio-pci", "vfio pci", "", "a/b"):
        with pytest.raises(InvalidInputError):
            binding.bind("0000:01:00.0", driver=driver, **bind_opts)
    assert sim.log == []


def test_a_missing_driver_is_loaded_first(scratch: Path) -> None:
    host = one_nic(scratch, vfio_loaded=False)
    sim = KernelSim.for_host(host)
    opts = binding_options(host, sim, scratch / "state")
    report = binding.bind("0000:01:00.0", module_loader=sim.load_module, **opts)
    assert sim.loaded == ["vfio_pci"]
    assert report.modules == ("vfio_pci",)
    assert report.devices[0].driver_after == "vfio-pci"


def test_a_module_that_cannot_load_changes_nothing(scratch: Path) -> None:
    host = one_nic(scratch, vfio_loaded=False)
    sim = KernelSim.for_host(host, modules={})
    opts = binding_options(host, sim, scratch / "state")
    with pytest.raises(
        BindError,
        match="loading module vfio_pci failed: modprobe: FATAL: Module vfio_pci not found",
    ):
        binding.bind("0000:01:00.0", module_loader=sim.load_module, **opts)
    assert sim.log == []
    assert binding.journal(opts["state_dir"]) == ()


def test_the_default_loader_runs_modprobe_without_a_shell(scratch: Path) -> None:
    host = one_nic(scratch, vfio_loaded=False)
    sim = KernelSim.for_host(host)
    fake = scratch / "modprobe"
    record = scratch / "argv"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\necho "no module $1" >&2\nexit 1\n')
    fake.chmod(0o755)
    opts = binding_options(host, sim, scratch / "state")
    opts["paths"] = host.paths.replace(modprobe=str(fake))
    with pytest.raises(BindError, match="no module vfio_pci"):
        binding.bind("0000:01:00.0", **opts)
    assert record.read_text() == "vfio_pci\n"


def test_variant_driver_from_modules_alias(scratch: Path) -> None:
    host = build(scratch / "host", GPU_DEVICES)
    sim = KernelSim.for_host(host, modules={"nvgrace_gpu_vfio_pci": "nvgrace_gpu_vfio_pci"})
    alias_dir = scratch / "modules/lib/modules/6.12.0-test"
    alias_dir.mkdir(parents=True)
    (alias_dir / "modules.alias").write_text(
        "alias pci:v000010DEd*sv*sd*bc03sc*i* nouveau\n"
        "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n"
        "alias vfio_pci:v000010DEd000026B9sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci\n"
    )
    report = binding.bind(
        "0000:81:00.0",
        module_loader=sim.load_module,
        modules_root=str(scratch / "modules"),
        kernel_release="6.12.0-test",
        **binding_options(host, sim, scratch / "state"),
    )
    drivers = {str(d.bdf): d.driver_after for d in report.devices}
    assert drivers == {"0000:81:00.0": "nvgrace_gpu_vfio_pci", "0000:81:00.1": "vfio-pci"}
    assert report.modules == ("nvgrace_gpu_vfio_pci",)
    assert any("modules.alias names the vfio variant driver" in m for m in report.messages)


def test_unbind_without_a_journal_reprobes_the_host_driver(scratch: Path) -> None:
    host = build(scratch / "bound", [{"bdf": "0000:01:00.0", "id": "8086:10d3",
                 "class": "020000", "driver": "vfio-pci", "override": "vfio-pci",
                 "group": 9}])  # fmt: skip
    sim = KernelSim.for_host(host, id_tables={"e1000e": [(0x8086, 0x10D3)]})
    sim.kernel.ensure_driver("e1000e")
    report = binding.unbind("0000:01:00.0", **binding_options(host, sim, scratch / "state"))
    assert report.devices[0].action == "unbound"
    assert sim.state()["0000:01:00.0"] == ("e1000e", None)


def test_unbind_uses_the_journal_when_there_is_one(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any], opts: dict[str, Any]
) -> None:
    before = sim.state()
    binding.bind("0000:05:00.0", **bind_opts)
    report = binding.unbind("0000:05:00.0", **opts)
    assert [d.action for d in report.devices] == ["restored", "restored"]
    assert sim.state() == before
    untouched = binding.unbind("0000:01:00.0", **opts)
    assert [d.action for d in untouched.devices] == ["unchanged"]


def test_no_iommu_group_is_refused_with_the_boot_argument(scratch: Path) -> None:
    host = one_nic(scratch, iommu=False)
    sim = KernelSim.for_host(host)
    with pytest.raises(BindError, match="no IOMMU group") as info:
        binding.bind("0000:01:00.0", **binding_options(host, sim, scratch / "state"))
    assert info.value.hint is not None and "intel_iommu=on" in info.value.hint
    assert sim.log == []


def test_journal_files_are_private(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    state = Path(bind_opts["state_dir"]) / "deeper"
    binding.bind("0000:01:00.0", **{**bind_opts, "state_dir": str(state)})
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    entry = state / "0000:01:00.0.journal"
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert "driver=e1000e" in entry.read_text()
    assert not [p for p in os.listdir(state) if p.endswith(".tmp")]


def test_a_damaged_journal_is_named(
    lab_host: FakeHost, sim: KernelSim, opts: dict[str, Any]
) -> None:
    state = Path(opts["state_dir"])
    state.mkdir()
    (state / "0000:01:00.0.journal").write_text("garbage\n")
    with pytest.raises(BindError, match=r"0000:01:00\.0\.journal is damaged") as info:
        binding.restore(**opts)
    assert info.value.hint is not None


def test_a_vanished_device_drops_its_entry(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any], opts: dict[str, Any]
) -> None:
    binding.bind("0000:01:00.0", **bind_opts)
    lab_host.remove_device("0000:01:00.0")
    report = binding.restore(**opts)
    assert any("the device is gone" in m for m in report.messages)
    assert binding.journal(opts["state_dir"]) == ()


def test_report_dict_is_plain_data(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    data = binding.report_dict(binding.bind("0000:01:00.0", **bind_opts))
    assert data["devices"][0] == {
        "bdf": "0000:01:00.0",
        "group": 9,
        "action": "bound",
        "driver_before": "e1000e",
        "override_before": None,
        "driver_after": "vfio-pci",
        "override_after": "vfio-pci",
        "target": "vfio-pci",
    }
    assert data["dry_run"] is False
    assert len(data["writes"]) == 3
