"""The Rust scan against fake hosts built from descriptions: every field, every group rule."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import kata_vfio
from kata_vfio import Bdf, errors
from kata_vfio.host import render
from kata_vfio.testing import FakeHost, build_host

ROOT_PORT = {"id": "8086:347a", "class": "060400", "driver": "pcieport"}


def port(bdf: str, group: int, **extra: Any) -> dict[str, Any]:
    return {"bdf": bdf, **ROOT_PORT, "group": group, **extra}


def gpu_server() -> dict[str, Any]:
    """Two GPUs behind root ports, one with its audio function on a host driver, an NVSwitch,
    a NIC PF with two VFs on vfio-pci, an NVMe on nvme, and a PCIe switch."""
    return {
        "iommu": "intel",
        "numa_nodes": 2,
        "devices": [
            {"bdf": "0000:00:00.0", "id": "8086:09a2", "class": "060000", "group": 0},
            port("0000:00:01.0", 1),
            {
                "bdf": "0000:01:00.0", "id": "10de:2330", "class": "030200", "subsys": "10de:16c1",
                "rev": 0xA1, "parent": "0000:00:01.0", "driver": "vfio-pci", "group": 12,
                "numa": 1, "bars": ["16M mem64", None, "64G mem64 pref", None, "32M mem64 pref"],
                "reset": ["flr", "bus"], "link": "32.0 GT/s PCIe x16",
            },
            port("0000:00:02.0", 2),
            {
                "bdf": "0000:02:00.0", "id": "10de:26b9", "class": "030000",
                "parent": "0000:00:02.0", "driver": "vfio-pci", "group": 13,
            },
            {
                "bdf": "0000:02:00.1", "id": "10de:22ba", "class": "040300",
                "parent": "0000:00:02.0", "driver": "snd_hda_intel", "group": 13,
            },
            port("0000:00:03.0", 3),
            {
                "bdf": "0000:03:00.0", "id": "10de:22a3", "class": "068000",
                "parent": "0000:00:03.0", "driver": "vfio-pci", "group": 14,
            },
            port("0000:00:04.0", 4),
            {
                "bdf": "0000:04:00.0", "id": "15b3:1021", "class": "020000",
                "parent": "0000:00:04.0", "driver": "mlx5_core", "group": 15, "totalvfs": 8,
            },
            {
                "bdf": "0000:04:00.1", "id": "15b3:101e", "class": "020000",
                "parent": "0000:00:04.0", "physfn": "0000:04:00.0", "driver": "vfio-pci",
                "group": 16,
            },
            {
                "bdf": "0000:04:00.2", "id": "15b3:101e", "class": "020000",
                "parent": "0000:00:04.0", "physfn": "0000:04:00.0", "driver": "vfio-pci",
                "group": 17,
            },
            port("0000:00:05.0", 5),
            {
                "bdf": "0000:05:00.0", "id": "1000:c030", "class": "060400",
                "parent": "0000:00:05.0", "driver": "pcieport", "group": 18,
            },
            {
                "bdf": "0000:06:00.0", "id": "1000:c030", "class": "060400",
                "parent": "0000:05:00.0", "driver": "pcieport", "group": 19,
            },
            {
                "bdf": "0000:07:00.0", "id": "144d:a80a", "class": "010802",
                "parent": "0000:06:00.0", "driver": "nvme", "group": 19,
            },
        ],
    }  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> FakeHost:
    return build_host(tmp_path, gpu_server())


def scan(fake: FakeHost, **kwargs: Any) -> kata_vfio.Host:
    return kata_vfio.scan(fake.sysfs_root, fake.dev_root, fake.proc_root, **kwargs)


def test_device_fields(server: FakeHost) -> None:
    host = scan(server)
    gpu = host.device("0000:01:00.0")
    assert (gpu.vendor, gpu.device) == (0x10DE, 0x2330)
    assert (gpu.subsystem_vendor, gpu.subsystem_device) == (0x10DE, 0x16C1)
    assert gpu.class_code == 0x030200
    assert gpu.class_name == "3D controller"
    assert gpu.revision == 0xA1
    assert gpu.driver == "vfio-pci"
    assert gpu.driver_override is None
    assert gpu.iommu_group == 12
    assert gpu.numa_node == 1
    assert gpu.is_pcie
    assert gpu.is_endpoint and gpu.is_vfio_bound
    assert [str(b) for b in gpu.upstream] == ["0000:00:01.0"]
    assert gpu.vfio_cdev is not None and gpu.vfio_cdev.startswith("vfio")
    assert gpu.sysfs_path.startswith("devices/pci0000:00/0000:00:01.0/")
    assert gpu.bars is None  # details were not asked for
    nvme = host.device(Bdf("07:00.0"))
    assert [str(b) for b in nvme.upstream] == ["0000:00:05.0", "0000:05:00.0", "0000:06:00.0"]
    assert nvme.numa_node is None
    assert nvme.vfio_cdev is None


def test_order_is_numeric(server: FakeHost) -> None:
    host = scan(server)
    assert list(host.devices) == sorted(host.devices, key=lambda d: d.bdf)
    assert [g.id for g in host.groups] == sorted(g.id for g in host.groups)
    assert len(host) == len(gpu_server()["devices"])


def test_sriov_roles(server: FakeHost) -> None:
    host = scan(server)
    pf = host.device("0000:04:00.0")
    assert pf.sriov_totalvfs == 8
    assert pf.sriov_numvfs == 2
    assert [str(v) for v in pf.virtfns] == ["0000:04:00.1", "0000:04:00.2"]
    assert pf.physfn is None
    vf = host.device("0000:04:00.2")
    assert vf.physfn == pf.bdf
    assert vf.virtfns == ()
    assert vf.sriov_totalvfs is None


def test_details(server: FakeHost) -> None:
    host = scan(server, details=True)
    assert host.has_details
    gpu = host.device("0000:01:00.0")
    assert gpu.bars is not None
    sizes = {bar.index: bar.size for bar in gpu.bars}
    assert sizes == {0: 16 << 20, 2: 64 << 30, 4: 32 << 20}
    big = next(bar for bar in gpu.bars if bar.index == 2)
    assert big.is_64bit and big.prefetchable and not big.is_io
    assert gpu.large_bar is True
    assert gpu.reset_methods == ("flr", "bus")
    assert gpu.link is not None
    assert (gpu.link.current_speed, gpu.link.current_width) == ("32.0 GT/s PCIe", 16)
    nic = host.device("0000:04:00.1")
    assert nic.large_bar is False
    one = kata_vfio.read_details(server.sysfs_root, "01:00.0")
    assert one.bars == gpu.bars


def test_gpu_with_audio_on_host_driver(server: FakeHost) -> None:
    group = scan(server).group(13)
    assert [str(b) for b in group.devices] == ["0000:02:00.0", "0000:02:00.1"]
    assert [str(b) for b in group.endpoints] == ["0000:02:00.0", "0000:02:00.1"]
    assert not group.viable
    assert not group.assignable
    (blocker,) = group.blockers
    assert str(blocker.bdf) == "0000:02:00.1"
    assert blocker.driver == "snd_hda_intel"
    assert blocker.breaks_viability
    assert blocker.kind == "host-driver"
    assert (blocker.fix.action, blocker.fix.group, blocker.fix.bdf) == ("bind-group", 13, None)
    assert group.verdict == "not-viable"
    root = server.sysfs_root
    assert blocker.writes == (
        (f"{root}/bus/pci/devices/0000:02:00.1/driver_override", "vfio-pci"),
        (f"{root}/bus/pci/drivers/snd_hda_intel/unbind", "0000:02:00.1"),
        (f"{root}/bus/pci/drivers_probe", "0000:02:00.1"),
    )
    # The words and the command are rendered in Python, in one place.
    assert "not viable" in render.blocker_reason(blocker)
    assert render.fix_text(blocker) == "kata-vfio bind --group 13"
    assert render.manual_lines(blocker)[0] == (
        f"echo vfio-pci > {root}/bus/pci/devices/0000:02:00.1/driver_override"
    )


def test_nvswitch_is_an_endpoint_and_bridges_stay(server: FakeHost) -> None:
    host = scan(server)
    switch = host.group(14)
    assert [str(b) for b in switch.endpoints] == ["0000:03:00.0"]
    assert switch.assignable
    behind_switch = host.group(19)
    assert [str(b) for b in behind_switch.devices] == ["0000:06:00.0", "0000:07:00.0"]
    assert [str(b) for b in behind_switch.endpoints] == ["0000:07:00.0"]
    assert not behind_switch.viable  # nvme does DMA; the pcieport bridge does not block
    assert [str(b.bdf) for b in behind_switch.blockers] == ["0000:07:00.0"]
    bridges_only = host.group(1)
    assert bridges_only.endpoints == ()
    assert bridges_only.viable and not bridges_only.assignable
    host_bridge = host.group(0)
    assert host_bridge.endpoints == () and host_bridge.blockers == ()


def test_unbound_endpoint_is_viable_but_not_ready(tmp_path: Path) -> None:
    spec = gpu_server()
    for dev in spec["devices"]:
        if dev["bdf"] == "0000:02:00.1":
            dev.pop("driver")
    host = scan(build_host(tmp_path, spec))
    group = host.group(13)
    assert group.viable and not group.assignable
    (blocker,) = group.blockers
    assert not blocker.breaks_viability
    assert blocker.kind == "unbound"
    assert group.verdict == "not-ready"
    assert blocker.writes[-1][0].endswith("drivers_probe")
    assert not any("unbind" in path for path, _ in blocker.writes)


def test_group_lookups(server: FakeHost) -> None:
    host = scan(server)
    assert host.group_of("0000:02:00.1") == host.group(13)
    assert host.group_of("0000:00:00.0") == host.group(0)
    assert host.find_group(999) is None
    assert host.find_device("0000:09:00.0") is None
    with pytest.raises(errors.DeviceNotFoundError, match=r"0000:09:00\.0"):
        host.device("0000:09:00.0")
    with pytest.raises(errors.DeviceNotFoundError):
        host.group(999)
    with pytest.raises(errors.BdfError, match="zz"):
        host.device("zz")


def test_groups_from_links_when_listing_is_missing(tmp_path: Path) -> None:
    with_listing = scan(build_host(tmp_path / "a", gpu_server()))
    spec = {**gpu_server(), "groups_dir": False}
    without = scan(build_host(tmp_path / "b", spec))
    assert [g.id for g in without.groups] == [g.id for g in with_listing.groups]
    assert [g.devices for g in without.groups] == [g.devices for g in with_listing.groups]
    assert without.iommu.enabled
    assert "missing" in without.iommu.reasons[0]


def test_iommu_status_on(server: FakeHost) -> None:
    status = scan(server).iommu
    assert status.enabled
    assert status.group_count == len({d["group"] for d in gpu_server()["devices"]})
    assert status.firmware_tables == ("DMAR",)
    assert status.cpu_vendor == "intel"
    assert status.iommu_class and status.iommu_class[0].startswith("dmar")
    assert status.cmdline is not None and "intel_iommu=on" in status.cmdline
    assert status.vfio_module and status.vfio_pci_driver
    assert status.vfio_container_node
    assert not status.noiommu


@pytest.mark.parametrize(("vendor", "table"), [("amd", "IVRS"), ("arm", "IORT")])
def test_iommu_vendor_evidence(tmp_path: Path, vendor: str, table: str) -> None:
    status = scan(build_host(tmp_path, {**gpu_server(), "iommu": vendor})).iommu
    assert status.firmware_tables == (table,)
    assert status.cpu_vendor == vendor


def test_iommu_off_says_why(tmp_path: Path) -> None:
    # Without an IOMMU vfio-pci refuses to bind, so nothing is on it.
    devices = [
        {k: v for k, v in d.items() if k != "group" and v != "vfio-pci"}
        for d in gpu_server()["devices"]
    ]
    spec = {"iommu": False, "numa_nodes": 2, "firmware_table": True,
            "cmdline": "root=/dev/sda intel_iommu=off"}  # fmt: skip
    host = scan(build_host(tmp_path, {**spec, "devices": devices}))
    assert host.groups == ()
    assert all(d.iommu_group is None for d in host.devices)
    status = host.iommu
    assert not status.enabled
    text = " ".join(status.reasons)
    assert "empty" in text
    assert "intel_iommu=off" in text
    assert status.cmdline == ("intel_iommu=off",)


def test_noiommu_mode(tmp_path: Path) -> None:
    spec = {
        "iommu": False,
        "noiommu": True,
        "devices": [
            {"bdf": "0000:00:03.0", "id": "8086:10d3", "class": "020000", "driver": "vfio-pci"}
        ],
    }  # fmt: skip
    host = scan(build_host(tmp_path, spec))
    assert host.iommu.noiommu
    nodes = [n for n in host.devnodes if n.kind == "noiommu-group"]
    assert len(nodes) == 1
    assert host.group_node("0000:00:03.0") == nodes[0].path
    assert nodes[0].path.startswith("/dev/vfio/noiommu-")


def test_devnodes(server: FakeHost) -> None:
    host = scan(server)
    kinds = [n.kind for n in host.devnodes]
    assert kinds[:2] == ["container", "iommufd"]
    group_nodes = [n for n in host.devnodes if n.kind == "group"]
    assert [n.group for n in group_nodes] == sorted(n.group for n in group_nodes if n.group)
    node = host.resolve_devnode("/dev/vfio/13")
    assert node.kind == "group" and node.is_vfio_device
    assert [str(b) for b in node.bdfs] == ["0000:02:00.0", "0000:02:00.1"]
    assert host.group_node("0000:02:00.0") == "/dev/vfio/13"
    cdev = host.cdev_node("0000:01:00.0")
    assert cdev is not None
    resolved = host.resolve_devnode(cdev)
    assert resolved.kind == "cdev"
    assert [str(b) for b in resolved.bdfs] == ["0000:01:00.0"]
    assert resolved.major is not None and resolved.minor is not None
    by_number = host.devnode_by_number(resolved.major, resolved.minor)
    assert by_number == resolved
    control = host.resolve_devnode("/dev/vfio/vfio")
    assert control.is_control and control.bdfs == ()
    assert host.cdev_node("0000:07:00.0") is None  # nvme is not on vfio


def test_classify_devnode_is_exact() -> None:
    cases = {
        "/dev/vfio/16": "group",
        "/dev/vfio/devices/vfio3": "cdev",
        "/dev/vfio/vfio": "container",
        "/dev/iommu": "iommufd",
        "/dev/vfio/noiommu-2": "noiommu-group",
        "/dev/vfio/": "other",
        "/dev/vfio/vfio/12": "other",
        "/dev/vfio/012": "other",
        "/dev/vfio/../vfio/1": "other",
        "/dev/nvidia0": "other",
    }
    for path, kind in cases.items():
        assert kata_vfio.classify_devnode(path).kind == kind, path


def test_missing_and_unreadable_attributes_do_not_fail(tmp_path: Path) -> None:
    spec = gpu_server()
    for dev in spec["devices"]:
        if dev["bdf"] == "0000:01:00.0":
            dev["missing"] = ["numa_node", "revision", "driver_override"]
            dev["unreadable"] = ["subsystem_vendor", "resource"]
    fake = build_host(tmp_path, spec)
    # Without uevent the IDs come from modalias and the driver from its link.
    Path(fake.sysfs_root, "bus/pci/devices/0000:01:00.0/uevent").unlink()
    host = scan(fake, details=True)
    gpu = host.device("0000:01:00.0")
    assert gpu.numa_node is None and gpu.revision is None
    assert (gpu.vendor, gpu.device, gpu.class_code) == (0x10DE, 0x2330, 0x030200)
    assert gpu.driver == "vfio-pci"  # from the driver link when uevent is missing
    # An unreadable resource is unknown BARs (None), not "no BARs" (an empty tuple).
    assert gpu.has_details
    assert gpu.bars is None and gpu.large_bar is None
    # (subsystem_vendor is never read: modalias gives it.)
    unreadable = "not-a-regular-file" if os.geteuid() == 0 else "permission-denied"
    assert [(p.attribute, p.reason) for p in gpu.problems] == [("resource", unreadable)]


def test_device_vanished_is_skipped(server: FakeHost) -> None:
    # A dangling bus link: the device directory went away between listing and reading.
    link = Path(server.sysfs_root) / "bus/pci/devices/0000:07:00.0"
    target = Path(server.sysfs_root, "bus/pci/devices", os.readlink(link)).resolve()
    for child in sorted(target.rglob("*"), reverse=True):
        child.unlink() if child.is_symlink() or child.is_file() else child.rmdir()
    target.rmdir()
    host = scan(server)
    assert host.find_device("0000:07:00.0") is None
    assert host.find_device("0000:06:00.0") is not None


def test_large_domains(tmp_path: Path) -> None:
    spec = {
        "devices": [
            {"bdf": "10000:e1:00.0", "id": "8086:0b60", "class": "010802", "driver": "vfio-pci",
             "group": 40},
        ]
    }  # fmt: skip
    host = scan(build_host(tmp_path, spec))
    (device,) = host.devices
    assert str(device.bdf) == "10000:e1:00.0"
    assert device.bdf.domain == 0x10000
    assert host.group(40).assignable


def test_bad_roots_raise_project_errors(tmp_path: Path) -> None:
    with pytest.raises(errors.HostIOError) as info:
        kata_vfio.scan(str(tmp_path / "absent"))
    assert info.value.errno == 2
    assert info.value.path == str(tmp_path / "absent")
    assert info.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.HostIOError, match="bus/pci/devices"):
        kata_vfio.scan(str(tmp_path / "empty"))


def test_threads_do_not_change_the_result(tmp_path: Path) -> None:
    devices: list[dict[str, Any]] = []
    for bus in range(1, 150):
        devices.append(port(f"0000:00:{bus % 32:02x}.{bus // 32}", bus))
        for function in range(2):
            devices.append(
                {"bdf": f"0000:{bus:02x}:00.{function}", "id": "8086:10d3", "class": "020000",
                 "parent": devices[-1 - function]["bdf"], "driver": "vfio-pci", "group": 1000 + bus}
            )  # fmt: skip
    fake = build_host(tmp_path, {"devices": devices})
    one = scan(fake, threads=1)
    many = scan(fake, threads=4)
    assert one.devices == many.devices
    assert one.groups == many.groups


def test_cdev_resolved_through_dev_char_with_large_minor(tmp_path: Path) -> None:
    """A cdev the kernel's class listing does not name is found from the node's device
    number: stat, then the dev/char/MAJOR:MINOR link. The minor is above 255, where decoding
    with rdev >> 8 and rdev & 0xff (Kata's Go runtime) gets it wrong."""
    fake = build_host(tmp_path, gpu_server())
    major, minor = 237, 300
    node = Path(fake.dev_root, "vfio/devices/vfio300")
    try:
        os.mknod(node, 0o600 | 0o020000, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("creating a character device needs CAP_MKNOD")
    gpu_dir = os.readlink(Path(fake.sysfs_root, "bus/pci/devices/0000:01:00.0"))
    char = Path(fake.sysfs_root, "dev/char", f"{major}:{minor}")
    char.symlink_to(f"../../bus/pci/devices/{gpu_dir}/vfio-dev/vfio300")
    host = scan(fake)
    resolved = host.resolve_devnode("/dev/vfio/devices/vfio300")
    assert resolved.kind == "cdev"
    assert (resolved.major, resolved.minor) == (major, minor)
    assert [str(b) for b in resolved.bdfs] == ["0000:01:00.0"]
