"""Hostile state directories, planted journal entries and hostile trees (issue 13 items 2, 6
and 8, issue 8 items 3 and 10): each scenario the issues name, reproduced on a fake host."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from host_usage import add_block, add_netdev, hold_open, mount, put

from conftest import LAB_DEVICES, binding_options, build
from kata_vfio import binding
from kata_vfio.errors import BindError, DeviceNotFoundError
from kata_vfio.testing import FakeHost
from kata_vfio.testing.kernel_sim import KernelSim

MAGIC = "# kata-vfio binding journal v1: `kata-vfio restore` puts this device back"
NVME = "0000:00:1d.0"
NIC = {"bdf": "0000:01:00.0", "id": "8086:10d3", "class": "020000", "driver": "e1000e", "group": 9}


def plant(state: Path, bdf: str, *, driver: str, target: str, group: int, name: str = "") -> Path:
    """Writes a journal entry kata-vfio never wrote (as anyone able to write the directory
    could)."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state / (name or f"{bdf}.journal")
    path.write_text(
        f"{MAGIC}\nbdf={bdf}\ngroup={group}\ndriver={driver}\noverride=\ntarget={target}\n"
    )
    return path


@pytest.fixture
def nvme_host(scratch: Path) -> FakeHost:
    """The lab devices plus an NVMe disk (group 15) whose partition is mounted at ``/``."""
    nvme = {"bdf": NVME, "id": "144d:a808", "class": "010802", "driver": "nvme", "group": 15}
    host = build(scratch / "host", [*LAB_DEVICES, nvme])
    add_block(host, NVME, "nvme0n1", "259:0")
    add_block(host, NVME, "nvme0n1p2", "259:2", under="nvme0n1")
    mount(host, "259:2", "/")
    return host


def test_a_planted_entry_cannot_make_restore_take_the_root_disk(
    nvme_host: FakeHost, scratch: Path
) -> None:
    sim = KernelSim.for_host(nvme_host)
    opts = binding_options(nvme_host, sim, scratch / "state")
    # bind itself refuses the disk...
    with pytest.raises(BindError, match="block device nvme0n1p2 is mounted at /"):
        binding.bind(NVME, **opts)
    # ...and a journal entry claiming kata-vfio moved it to nvme from nothing does not make
    # restore unbind it.
    plant(scratch / "state", NVME, driver="", target="nvme", group=15)
    with pytest.raises(BindError) as info:
        binding.restore(**opts)
    message = str(info.value)
    assert f"{NVME}: unbinding nvme would take it from the host" in message
    assert "block device nvme0n1p2 is mounted at /" in message
    assert sim.state()[NVME] == ("nvme", None)
    assert sim.log == []
    assert [str(e.bdf) for e in binding.journal(opts["state_dir"])] == [NVME], "kept"
    # --force acts, and says what it overrode.
    forced = binding.restore(force=True, **opts)
    assert any("mounted at /" in m for m in forced.overridden), forced.overridden
    assert sim.state()[NVME] == (None, None)


def test_a_planted_entry_for_a_device_in_another_state_is_refused(
    nvme_host: FakeHost, scratch: Path
) -> None:
    sim = KernelSim.for_host(nvme_host)
    opts = binding_options(nvme_host, sim, scratch / "state")
    plant(scratch / "state", NVME, driver="e1000e", target="vfio-pci", group=15)
    with pytest.raises(BindError, match="a state no bind to vfio-pci from driver e1000e"):
        binding.restore(**opts)
    with pytest.raises(BindError, match="refusing to unbind"):
        binding.unbind(NVME, **opts)
    assert sim.log == []


@pytest.mark.parametrize("use", ["mounted", "swap", "route", "boot_vga"])
def test_restore_asks_binds_in_use_questions_before_unbinding_a_host_driver(
    lab_host: FakeHost, sim: KernelSim, opts: dict[str, Any], use: str
) -> None:
    bdf = {"mounted": "0000:04:00.0", "swap": "0000:04:00.0"}.get(use, "0000:01:00.0")
    driver = "e1000e"
    if use in ("mounted", "swap"):
        add_block(lab_host, bdf, "nvme0n1", "259:0")
        if use == "mounted":
            mount(lab_host, "259:0", "/var")
        else:
            put(os.path.join(lab_host.proc_root, "swaps"), "Filename\tType\n/dev/nvme0n1 p 1 0\n")
    elif use == "route":
        add_netdev(lab_host, "eth0", up=True)
        put(os.path.join(lab_host.proc_root, "net/route"), "Iface\tDestination\neth0\t0\n")
    else:
        bdf, driver = "0000:81:00.0", "nvidia"
        put(os.path.join(lab_host.device_path(bdf), "boot_vga"), "1\n")
    group = 41 if use == "boot_vga" else 9
    plant(Path(opts["state_dir"]), bdf, driver="", target=driver, group=group)
    with pytest.raises(BindError, match=f"unbinding {driver} would take it from the host"):
        binding.restore(**opts)
    assert sim.log == []


def test_restore_acts_from_a_state_a_bind_passes_through(
    lab_host: FakeHost, sim: KernelSim, opts: dict[str, Any]
) -> None:
    nic = "0000:01:00.0"
    before = sim.state()[nic]
    sysfs = lab_host.sysfs_root
    # Override written, then unbound: killed before the probe.
    plant(Path(opts["state_dir"]), nic, driver="e1000e", target="vfio-pci", group=9)
    sim.write(f"{sysfs}/bus/pci/devices/{nic}/driver_override", b"vfio-pci")
    sim.write(f"{sysfs}/bus/pci/drivers/e1000e/unbind", nic.encode())
    assert binding.restore(**opts).devices[0].action == "restored"
    assert sim.state()[nic] == before


def test_a_world_writable_or_foreign_state_directory_is_refused(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any], opts: dict[str, Any]
) -> None:
    state = Path(opts["state_dir"])
    state.mkdir()
    state.chmod(0o777)
    for call in (
        lambda: binding.bind("0000:01:00.0", **bind_opts),
        lambda: binding.restore(**opts),
        lambda: binding.read_journal(str(state)),
    ):
        with pytest.raises(BindError, match="mode 0777 lets others write in it") as info:
            call()
        assert info.value.hint is not None and "chmod 700" in info.value.hint
    assert sim.log == [], "refused before any write"
    state.chmod(0o755)
    os.chown(state, 65534, 65534)
    with pytest.raises(BindError, match="belongs to uid 65534, not to this user"):
        binding.bind("0000:01:00.0", **bind_opts)
    os.chown(state, os.geteuid(), os.getegid())
    binding.bind("0000:01:00.0", **bind_opts)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700, "an existing 0755 one is made 0700"


def test_a_symlinked_state_directory_or_lock_creates_nothing_elsewhere(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any], scratch: Path
) -> None:
    elsewhere = scratch / "etc"
    elsewhere.mkdir(mode=0o700)
    state = scratch / "linked-state"
    state.symlink_to(elsewhere)
    with pytest.raises(BindError, match="symlink"):
        binding.bind("0000:01:00.0", **{**bind_opts, "state_dir": str(state)})
    real = scratch / "state"
    real.mkdir(mode=0o700)
    (real / "lock").symlink_to(elsewhere / "nologin")
    with pytest.raises(BindError, match="lock file is a symlink"):
        binding.bind("0000:01:00.0", **{**bind_opts, "state_dir": str(real)})
    assert os.listdir(elsewhere) == [], "no file was created through the links"
    assert sim.log == []


def test_restore_list_never_hangs_on_a_fifo_or_reads_dev_zero(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    binding.bind("0000:05:00.0", **bind_opts)
    state = Path(bind_opts["state_dir"])
    os.mkfifo(state / "0000:01:00.0.journal")
    (state / "0000:04:00.0.journal").symlink_to("/dev/zero")
    (state / "0000:07:01.0.journal").write_text(MAGIC + "\n" + "x" * 5000)
    argv = [sys.executable, "-m", "kata_vfio", "--sysfs-root", lab_host.sysfs_root]
    done = subprocess.run(
        [*argv, "restore", "--list", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "0000:05:00.0" in done.stdout and "0000:05:00.1" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 3, done.stderr
    assert "0000:01:00.0.journal is damaged (not a regular file" in done.stderr
    assert "0000:04:00.0.journal is damaged (it is a symlink)" in done.stderr
    assert "0000:07:01.0.journal is damaged (longer than 4096 bytes" in done.stderr


def test_an_entry_under_another_name_is_reported_not_replayed(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any], opts: dict[str, Any]
) -> None:
    binding.bind("0000:01:00.0", **bind_opts)
    state = Path(opts["state_dir"])
    (state / "0000:01:00.0.journal").rename(state / "0000:04:00.0.journal")
    report = binding.restore(**opts)
    assert report.devices == ()
    (problem,) = report.problems
    assert "its bdf=0000:01:00.0 is not its file name 0000:04:00.0.journal" in problem
    assert sim.state()["0000:01:00.0"][0] == "vfio-pci", "nothing acted on it"
    assert binding.restore(**opts).problems == report.problems, "reported, not replayed"


def test_a_failed_group_bind_leaves_no_entry_for_a_device_it_never_reached(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    before = sim.state()
    sim.fail_next("drivers/e1000e/unbind", errno.EIO)  # the group's first function
    with pytest.raises(BindError, match=r"rolled back 0000:05:00\.0$"):
        binding.bind("0000:05:00.1", **bind_opts)
    assert binding.journal(bind_opts["state_dir"]) == ()
    assert os.listdir(bind_opts["state_dir"]) == ["lock"]
    assert sim.state() == before


def test_an_open_group_is_refused_by_unbind_and_restore_with_its_holder(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any], opts: dict[str, Any]
) -> None:
    binding.bind("0000:01:00.0", **bind_opts)
    bound = sim.state()
    hold_open(lab_host, 4242, "qemu-system-x86", os.path.join(lab_host.dev_root, "vfio/9"))
    options = opts
    holder = f"pid 4242 (qemu-system-x86) holds {lab_host.dev_root}/vfio/9"
    for call in (binding.restore, lambda **kw: binding.unbind("0000:01:00.0", **kw)):
        with pytest.raises(BindError, match="IOMMU group 9 is open in another process") as info:
            call(**options)
        assert holder in str(info.value)
    assert sim.state() == bound
    assert len(binding.journal(opts["state_dir"])) == 1
    forced = binding.unbind("0000:01:00.0", force=True, **options)
    assert any(holder in m for m in forced.overridden), forced.overridden
    assert forced.devices[0].action == "restored"


def test_an_open_cdev_is_refused_too(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any], opts: dict[str, Any]
) -> None:
    binding.bind("0000:01:00.0", **bind_opts)
    cdevs = os.listdir(os.path.join(lab_host.device_path("0000:01:00.0"), "vfio-dev"))
    node = os.path.join(lab_host.dev_root, "vfio/devices", cdevs[0])
    hold_open(lab_host, 77, "qemu", node)
    with pytest.raises(BindError, match=f"pid 77 \\(qemu\\) holds {node}"):
        binding.restore(**opts)


def test_no_write_leaves_the_tree_through_an_absolute_link(
    lab_host: FakeHost, scratch: Path
) -> None:
    nic = "0000:01:00.0"
    outside = scratch / "another-host" / nic
    outside.mkdir(parents=True)
    (outside / "driver_override").write_text("\n")
    (outside / "class").write_text("0x020000\n")
    link = Path(lab_host.sysfs_root) / "bus/pci/devices" / nic
    link.unlink()
    link.symlink_to(outside)  # absolute: what `cp -a` of a tree made with absolute links gives
    opts = binding_options(lab_host, KernelSim.for_host(lab_host), scratch / "state")
    del opts["sysfs_writer"]  # the real writer
    with pytest.raises(DeviceNotFoundError, match="leads outside the sysfs root"):
        binding.bind(nic, **opts)
    assert (outside / "driver_override").read_text() == "\n"


def test_a_symlinked_binding_file_is_never_written_through(
    lab_host: FakeHost, scratch: Path
) -> None:
    victim = scratch / "victim"
    victim.write_text("precious\n")
    probe = Path(lab_host.sysfs_root) / "bus/pci/drivers_probe"
    probe.unlink()
    probe.symlink_to(victim)
    opts = binding_options(lab_host, KernelSim.for_host(lab_host), scratch / "state")
    del opts["sysfs_writer"]  # the real writer, on a tree with no kernel behind it
    with pytest.raises(BindError, match="drivers_probe failed") as info:
        binding.bind("0000:01:00.0", **opts)
    assert info.value.errno == errno.ELOOP
    assert "rolled back 0000:01:00.0" in str(info.value)
    assert victim.read_text() == "precious\n"


def test_a_fake_tree_never_runs_the_real_modprobe(scratch: Path) -> None:
    host = build(scratch / "host", [NIC], vfio_loaded=False)
    sim = KernelSim.for_host(host)
    opts = binding_options(host, sim, scratch / "state")
    with pytest.raises(BindError, match=r"not loading vfio_pci: .* is not this host's /sys"):
        binding.bind("0000:01:00.0", **opts)
    assert sim.log == []


def test_modprobe_gets_path_alone(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = build(scratch / "host", [NIC], vfio_loaded=False)
    sim = KernelSim.for_host(host)
    record = scratch / "env"
    fake = scratch / "modprobe"
    fake.write_text(f"#!/bin/sh\nenv > {record}\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MODPROBE_OPTIONS", "-C /tmp/evil.conf")
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    options = binding_options(host, sim, scratch / "state")
    options["paths"] = host.paths.replace(modprobe=str(fake))
    with pytest.raises(BindError, match="loading module vfio_pci failed"):
        binding.bind("0000:01:00.0", **options)
    names = {line.split("=", 1)[0] for line in record.read_text().splitlines()}
    assert "MODPROBE_OPTIONS" not in names and "LD_PRELOAD" not in names
    assert "PATH=/usr/sbin:/usr/bin:/sbin:/bin" in record.read_text()
