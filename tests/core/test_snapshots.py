"""Real machines' sysfs trees (shared/data/sysfs-snapshots): the Rust scan and the reference
scanner both load every snapshot and agree field by field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kata_vfio
from oracles import refscan
from shared_paths import SHARED_DATA

SNAPSHOT_DIR = SHARED_DATA / "sysfs-snapshots"
SNAPSHOTS = (
    sorted(p.name for p in SNAPSHOT_DIR.iterdir() if (p / "sys").is_dir())
    if SNAPSHOT_DIR.is_dir()
    else []
)
pytestmark = pytest.mark.skipif(not SNAPSHOTS, reason="shared/data/sysfs-snapshots is absent")


def _scans(sys_root: Path, tmp_path: Path, details: bool = False):  # type: ignore[no-untyped-def]
    dev_root = tmp_path / "dev"
    dev_root.mkdir(exist_ok=True)
    rust = kata_vfio.scan(str(sys_root), str(dev_root), details=details)
    ref = refscan.scan(str(sys_root), str(dev_root), details=details)
    return rust, ref


def _expected_groups(sys_root: Path) -> dict[int, list[str]]:
    """Groups as the devices' own iommu_group links name them (basename of the target)."""
    groups: dict[int, list[str]] = {}
    devices = sys_root / "bus/pci/devices"
    for name in os.listdir(devices):
        link = devices / name / "iommu_group"
        if os.path.islink(link):
            groups.setdefault(int(os.path.basename(os.readlink(link))), []).append(name)
    return {g: sorted(m, key=refscan.bdf_key) for g, m in groups.items()}


@pytest.mark.parametrize("name", SNAPSHOTS)
@pytest.mark.parametrize("details", [False, True])
def test_both_scans_load_and_agree(name, details, snapshot_root, tmp_path, same_host):
    sys_root = snapshot_root(name)
    rust, ref = _scans(sys_root, tmp_path, details)
    same_host(rust, ref)


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_every_listed_device_is_scanned(name, snapshot_root, tmp_path):
    sys_root = snapshot_root(name)
    listed = sorted(os.listdir(sys_root / "bus/pci/devices"), key=refscan.bdf_key)
    rust, ref = _scans(sys_root, tmp_path)
    assert [str(d.bdf) for d in rust.devices] == listed
    assert [d.bdf for d in ref.devices] == listed
    for dev in rust.devices:
        # IDs and class agree with the single attribute files the snapshot kept.
        base = sys_root / "bus/pci/devices" / str(dev.bdf)
        assert int((base / "vendor").read_text(), 16) == dev.vendor
        assert int((base / "device").read_text(), 16) == dev.device
        assert int((base / "class").read_text(), 16) == dev.class_code


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_groups_come_from_the_device_links(name, snapshot_root, tmp_path):
    sys_root = snapshot_root(name)
    assert not (sys_root / "kernel/iommu_groups").exists()
    expected = _expected_groups(sys_root)
    rust, _ref = _scans(sys_root, tmp_path)
    assert {g.id: [str(b) for b in g.devices] for g in rust.groups} == expected
    assert rust.iommu.enabled == bool(expected)
    assert rust.iommu.group_count == len(expected)


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_drivers_and_upstream_bridges_follow_the_links(name, snapshot_root, tmp_path):
    sys_root = snapshot_root(name)
    rust, _ref = _scans(sys_root, tmp_path)
    for dev in rust.devices:
        base = sys_root / "bus/pci/devices" / str(dev.bdf)
        link = base / "driver"
        want = os.path.basename(os.readlink(link)) if os.path.islink(link) else None
        assert dev.driver == want, dev.bdf
        real = os.path.relpath(os.path.realpath(base), os.path.realpath(sys_root))
        assert dev.sysfs_path == real
        # Every upstream address is a directory on the way down, and a bridge of this host.
        for bridge in dev.upstream:
            assert f"/{bridge}/" in f"/{real}/"
            found = rust.find_device(bridge)
            assert found is None or found.is_bridge, (dev.bdf, bridge)


def test_thinkpad_multi_device_groups(snapshot_root, tmp_path):
    name = "ghw-thinkpad-x1c10-adl"
    if name not in SNAPSHOTS:
        pytest.skip(f"{name} is absent")
    rust, _ref = _scans(snapshot_root(name), tmp_path)
    sizes = {g.id: len(g.devices) for g in rust.groups}
    assert {8: 3, 11: 2, 12: 2, 13: 4}.items() <= sizes.items()
    assert len(rust.devices) == 23
    assert sum(1 for d in rust.devices if d.driver is None) == 3


def test_q35_guest_gpu_behind_root_ports(snapshot_root, tmp_path):
    name = "ghw-qemu-q35-nvidia-gpu"
    if name not in SNAPSHOTS:
        pytest.skip(f"{name} is absent")
    rust, _ref = _scans(snapshot_root(name), tmp_path)
    gpu = rust.device("0000:06:00.0")
    assert (gpu.vendor, gpu.device, gpu.driver) == (0x10DE, 0x15F8, "nvidia")
    assert gpu.upstream, "the GPU sits behind a pcie-root-port"
    assert all(rust.device(b).is_bridge for b in gpu.upstream)
    assert not rust.iommu.enabled


def test_procfs_fixture_keeps_config_sizes_and_details(snapshot_root, tmp_path):
    name = "procfs-fixtures-pci"
    if name not in SNAPSHOTS:
        pytest.skip(f"{name} is absent")
    sys_root = snapshot_root(name)
    rust, ref = _scans(sys_root, tmp_path, details=True)
    for dev in rust.devices:
        config = sys_root / "bus/pci/devices" / str(dev.bdf) / "config"
        assert dev.is_pcie == (config.exists() and config.stat().st_size > 256)
    nic = rust.device("0000:a2:00.0")
    assert nic.sriov_totalvfs == 128
    assert nic.reset_methods == ("flr", "bus")
    assert nic.link is not None
    assert nic.link.current_speed == "16.0 GT/s PCIe"
    assert ref.find_device("0000:a2:00.0") is not None
