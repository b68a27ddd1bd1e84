"""The node inventory: units are whole IOMMU groups, Unhealthy ones are listed with reasons."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from k8s_hosts import HostBuilder, private_sample, scan

from kata_vfio import Bdf
from kata_vfio.cdi.names import device_name_problem
from kata_vfio.errors import InvalidInputError
from kata_vfio.k8s.inventory import build_inventory, list_devfs_nodes, resolve_iommu_mode
from kata_vfio.k8s.resources import default_resources, parse_resources

HEALTHY_GPUS = [
    "0000:18:00.0", "0000:1b:00.0", "0000:2d:00.0", "0000:30:00.0", "0000:83:00.0",
    "0000:86:00.0",
]  # fmt: skip


def test_sample_host_units_and_reasons(sample_scan) -> None:  # type: ignore[no-untyped-def]
    inventory = build_inventory(sample_scan, default_resources(), "legacy")
    (gpus,) = inventory.resources
    assert [u.id for u in gpus.healthy] == HEALTHY_GPUS
    assert [u.id for u in gpus.units] == [
        *HEALTHY_GPUS,
        "0000:9a:00.0",
        "0000:9d:00.0",
        "0000:a9:00.0",
    ]
    on_nvidia, unbound, audio_blocks = gpus.units[-3:]
    assert any("bound to host driver nvidia" in r for r in on_nvidia.reasons)
    assert any("unbound, not on a vfio driver" in r for r in unbound.reasons)
    assert any("/dev/vfio/79 does not exist (the kernel has not" in r for r in unbound.reasons)
    # The RTX's group is refused because of its audio function, which comes with the unit.
    assert audio_blocks.bdfs == (audio_blocks.functions[0].bdf, audio_blocks.functions[1].bdf)
    assert [f.selected for f in audio_blocks.functions] == [True, False]
    assert any(
        r.startswith("0000:a9:00.1: ") and "snd_hda_intel" in r for r in audio_blocks.reasons
    )
    first = gpus.units[0]
    assert first.group == 14
    assert first.nodes == ("/dev/vfio/14",)
    assert first.cdi_name == "nvidia.com/pgpu=0000:18:00.0"
    assert first.largest_bar == 128 << 30
    assert (first.locality.numa_node, first.locality.root_complex) == (0, "pci0000:15")
    assert str(first.locality.root_port) == "0000:15:01.0"
    assert str(first.locality.switch) == "0000:16:00.0"
    assert gpus.units[-1].locality.switch is None  # straight behind its root port
    assert inventory.host_problems == ()


def test_iommufd_mode_names_every_cdev(sample_scan) -> None:  # type: ignore[no-untyped-def]
    inventory = build_inventory(sample_scan, default_resources(), "iommufd")
    gpus = inventory.resource("nvidia.com/pgpu")
    assert gpus.units[0].nodes == ("/dev/vfio/devices/vfio0",)
    # The unbound GPU has no cdev: no nodes to name, and Unhealthy for its driver.
    assert gpus.unit("0000:9d:00.0").nodes == ()
    assert [u.id for u in gpus.healthy] == HEALTHY_GPUS


def test_ids_are_cdi_device_names_and_stable(sample_scan) -> None:  # type: ignore[no-untyped-def]
    resources = parse_resources(["nvidia.com/gpu=10de:*", "mellanox.com/vf=15b3:101e"])
    one = build_inventory(sample_scan, resources, "legacy")
    assert one == build_inventory(sample_scan, resources, "legacy")
    for unit in one.units:
        assert device_name_problem(unit.id) is None
        assert len(unit.id) <= 63
    assert len({u.id for u in one.resource("mellanox.com/vf").units}) == 4


def test_a_group_with_two_resources_goes_to_the_first(sample_scan) -> None:  # type: ignore[no-untyped-def]
    resources = parse_resources(["nvidia.com/gpu=10de:*", "nvidia.com/nvswitch=10de:22a3"])
    inventory = build_inventory(sample_scan, resources, "legacy")
    assert inventory.resource("nvidia.com/gpu").unit("0000:40:00.0").healthy
    switch = inventory.resource("nvidia.com/nvswitch").unit("0000:40:00.0")
    assert not switch.healthy and switch.nodes == ()
    assert "also holds functions of nvidia.com/gpu" in switch.reasons[-1]


def test_companions_variant_drivers_and_bridge_groups(tmp_path: Path) -> None:
    b = HostBuilder()
    gpu = b.add(1)
    b.add(1, "10de:22ba", "040300", function=1, group=12, bars=["16K mem32"])  # GPU's audio
    grace = b.add(2, driver="nvgrace_gpu_vfio_pci")
    b.add(3, driver="nvidia")
    host = scan(b.build(tmp_path))
    resources = parse_resources(["nvidia.com/gpu=10de:2330", "intel.com/port=8086:347a"])
    inventory = build_inventory(host, resources, "legacy")
    gpus = inventory.resource("nvidia.com/gpu")
    first = gpus.unit(gpu)
    assert first.healthy
    assert [str(b) for b in first.bdfs] == ["0000:01:00.0", "0000:01:00.1"]
    assert [f.selected for f in first.functions] == [True, False]
    assert gpus.unit(grace).healthy, "a variant vfio driver counts as vfio"
    ports = inventory.resource("intel.com/port")
    assert len(ports.units) == 3
    assert all("holds only bridges" in u.reasons[0] for u in ports.units)
    assert all(u.functions == () and u.nodes == () for u in ports.units)


def test_a_missing_group_node_is_unhealthy(tmp_path: Path) -> None:
    b = HostBuilder()
    gpu = b.add(1)
    fake = b.build(tmp_path)
    group = fake.kernel.group_of(gpu)
    os.remove(os.path.join(fake.dev_root, "vfio", str(group)))
    host = scan(fake)
    (unit,) = build_inventory(host, default_resources(), "legacy").units
    assert unit.healthy, "the kernel registered it; without a devfs listing that is enough"
    devfs = list_devfs_nodes(host)
    assert "/dev/vfio/vfio" in devfs
    (unit,) = build_inventory(host, default_resources(), "legacy", devfs_nodes=devfs).units
    assert unit.reasons == (
        f"/dev/vfio/{group} is registered by the kernel but missing from {fake.dev_root}",
    )


def test_host_problems_make_every_unit_unhealthy(tmp_path: Path) -> None:
    b = HostBuilder(iommu=False, cdev=False)
    b.devices = [{"bdf": "0000:01:00.0", "id": "10de:2330", "class": "030200", "driver": "nvidia"}]
    host = scan(b.build(tmp_path))
    inventory = build_inventory(host, default_resources(), "iommufd")
    assert any("no working IOMMU" in p for p in inventory.host_problems)
    assert any("/dev/iommu is missing" in p for p in inventory.host_problems)
    # Without an IOMMU there is no group, so there is no unit either: nothing to advertise.
    assert inventory.units == ()


def test_no_numa_information_gives_no_node(tmp_path: Path) -> None:
    b = HostBuilder()
    b.add(1, numa=None)
    (unit,) = build_inventory(scan(b.build(tmp_path)), default_resources(), "legacy").units
    assert unit.locality.numa_node is None


def test_iommufd_unit_with_two_functions(tmp_path: Path) -> None:
    b = HostBuilder()
    b.add(1)
    b.add(1, "10de:22ba", "040300", function=1, group=12, bars=["16K mem32"])
    (unit,) = build_inventory(scan(b.build(tmp_path)), default_resources(), "iommufd").units
    assert unit.healthy
    assert len(unit.nodes) == 2
    assert all(n.startswith("/dev/vfio/devices/vfio") for n in unit.nodes)


def test_resolve_iommu_mode(sample_scan, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert resolve_iommu_mode(sample_scan, "auto") == "iommufd"
    assert resolve_iommu_mode(sample_scan, "legacy") == "legacy"
    b = HostBuilder(cdev=False)
    b.add(1)
    assert resolve_iommu_mode(scan(b.build(tmp_path)), "auto") == "legacy"
    with pytest.raises(InvalidInputError, match="invalid IOMMU mode 'fast'"):
        resolve_iommu_mode(sample_scan, "fast")


def test_a_group_the_scan_cannot_fully_read_is_unhealthy_with_the_reason(tmp_path: Path) -> None:
    """Never more optimistic than the kernel: a member listed in kernel/iommu_groups whose
    device directory is gone (or a member list that cannot be read) makes the group's verdict
    "unknown", and its unit Unhealthy, naming why; the inventory itself does not fail."""
    host = private_sample(tmp_path)
    gpu, audio = "0000:a9:00.0", "0000:a9:00.1"
    # Read whole, the group is not viable: its audio function is on snd_hda_intel.
    group = scan(host).group_of(gpu)
    assert group is not None and group.verdict == "not-viable"
    Path(host.sysfs_root, "bus/pci/devices", audio).unlink()
    unread = scan(host)
    group = unread.group_of(gpu)
    assert group is not None and group.verdict == "unknown"
    unit = build_inventory(unread, default_resources(), "legacy").resource("nvidia.com/pgpu")
    rtx = unit.unit(gpu)
    assert rtx is not None and not rtx.healthy
    assert rtx.bdfs == (Bdf(gpu),)  # the unread member is not offered as a function
    (reason,) = [r for r in rtx.reasons if audio in r]
    assert reason.startswith(f"IOMMU group {group.id} is unknown: {audio}: ")
    assert "device directory is missing" in reason
    # The other units are as healthy as before.
    assert [u.id for u in unit.healthy] == HEALTHY_GPUS

    # A member list that leads out of the tree: every group is unknown, every unit Unhealthy.
    listing = Path(host.sysfs_root, "kernel/iommu_groups")
    listing.rename(tmp_path / "elsewhere")
    listing.symlink_to(tmp_path / "elsewhere")
    escaped = build_inventory(scan(host), default_resources(), "legacy")
    assert escaped.units and not any(u.healthy for u in escaped.units)
    for u in escaped.units:
        assert any(
            r.startswith(f"IOMMU group {u.group} is unknown: kernel/iommu_groups/{u.group}/devices")
            and "leaves the sysfs root" in r
            for r in u.reasons
        ), u.reasons
