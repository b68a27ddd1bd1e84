"""VFIO spec generation from real scans of fake hosts (the bundled sample and built ones)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from cdi_support import oci_spec

import kata_vfio
from kata_vfio._core import Host
from kata_vfio.cdi import (
    DevfsLookup,
    Registry,
    generate_vfio_spec,
    generate_vfio_specs,
    is_qualified_name,
    load_spec,
    minimum_version,
    validate_spec,
    write_vfio_spec,
)
from kata_vfio.cdi.generate import parse_pci_id
from kata_vfio.cdi.hostdev import NotADeviceNodeError
from kata_vfio.errors import CdiError, InvalidInputError
from kata_vfio.samples import sample_host
from kata_vfio.testing import FakeHost, build_host


@pytest.fixture(scope="module")
def sample() -> tuple[FakeHost, Host]:
    fake = sample_host()
    return fake, kata_vfio.scan(fake.sysfs_root, fake.dev_root, fake.proc_root)


def nvidia_gpus(host: Host) -> list[Any]:
    """Assignable NVIDIA display functions, from the scan itself (the expected answer)."""
    found = []
    for group in host.groups:
        if not group.assignable:
            continue
        for bdf in group.endpoints:
            device = host.device(bdf)
            if device.vendor == 0x10DE and device.class_code >> 16 == 0x03:
                found.append(device)
    return sorted(found, key=lambda d: d.bdf)


def test_sample_host_gets_one_spec_per_known_kind(sample: tuple[FakeHost, Host]) -> None:
    _, host = sample
    specs = generate_vfio_specs(host)
    assert [s.kind for s in specs] == ["nvidia.com/nvswitch", "nvidia.com/pgpu"]
    pgpu = specs[1]
    gpus = nvidia_gpus(host)
    assert gpus, "the sample host has assignable GPUs"
    assert [d.name for d in pgpu.devices] == [str(g.iommu_group) for g in gpus] + ["all"]
    for device, gpu in zip(pgpu.devices, gpus, strict=False):
        assert device.container_edits.device_nodes[0].path == f"/dev/vfio/{gpu.iommu_group}"
    every = pgpu.device("all")
    assert every is not None
    assert len(every.container_edits.device_nodes) == len(gpus)
    assert pgpu.container_edits.device_nodes[0].path == "/dev/vfio/vfio"
    assert pgpu.version == minimum_version(pgpu) == "0.5.0"
    validate_spec(pgpu)


@pytest.mark.parametrize("naming", ["group", "index", "bdf", "cdev"])
def test_namings_are_valid_unique_and_in_pci_order(
    sample: tuple[FakeHost, Host], naming: str
) -> None:
    _, host = sample
    spec = generate_vfio_spec(host, kind="nvidia.com/pgpu", naming=naming)  # type: ignore[arg-type]
    gpus = nvidia_gpus(host)
    names = [d.name for d in spec.devices[:-1]]
    expected = {
        "group": [str(g.iommu_group) for g in gpus],
        "index": [str(i) for i in range(len(gpus))],
        "bdf": [str(g.bdf) for g in gpus],
        "cdev": [g.vfio_cdev for g in gpus],
    }[naming]
    assert names == expected
    assert all(is_qualified_name(f"nvidia.com/pgpu={n}") for n in names)


def test_cdev_mode_uses_cdev_nodes_and_iommufd(sample: tuple[FakeHost, Host]) -> None:
    _, host = sample
    spec = generate_vfio_spec(
        host, kind="nvidia.com/pgpu", cdev=True, naming="cdev", include_all=False
    )
    gpus = nvidia_gpus(host)
    assert [d.name for d in spec.devices] == [g.vfio_cdev for g in gpus]
    assert [d.container_edits.device_nodes[0].path for d in spec.devices] == [
        f"/dev/vfio/devices/{g.vfio_cdev}" for g in gpus
    ]
    assert spec.container_edits.device_nodes[0].path == "/dev/iommu"


def test_without_a_kind_the_host_must_have_one(sample: tuple[FakeHost, Host]) -> None:
    _, host = sample
    with pytest.raises(CdiError, match=r"nvidia\.com/nvswitch, nvidia\.com/pgpu") as info:
        generate_vfio_spec(host)
    assert info.value.hint
    gpu = generate_vfio_spec(host, pci_ids=["10de"], devices=[str(nvidia_gpus(host)[0].bdf)])
    assert [d.name for d in gpu.devices] == [str(nvidia_gpus(host)[0].iommu_group), "all"]


def test_a_custom_kind_takes_the_chosen_devices(sample: tuple[FakeHost, Host]) -> None:
    _, host = sample
    spec = generate_vfio_spec(host, kind="mellanox.com/vf", pci_ids=["15b3"], naming="index")
    assert spec.kind == "mellanox.com/vf"
    bdfs = []
    for group in host.groups:
        for bdf in group.endpoints:
            if group.assignable and host.device(bdf).vendor == 0x15B3:
                bdfs.append(bdf)
    assert len(spec.devices) == len(bdfs) + 1
    with pytest.raises(InvalidInputError, match="invalid CDI kind"):
        generate_vfio_spec(host, kind="no-slash")
    with pytest.raises(InvalidInputError, match="invalid device naming"):
        generate_vfio_spec(host, kind="a.com/b", naming="uuid")  # type: ignore[arg-type]
    with pytest.raises(CdiError, match="no assignable VFIO devices"):
        generate_vfio_spec(host, kind="a.com/b", pci_ids=["ffff"])


def test_pci_id_parsing() -> None:
    assert parse_pci_id("10de") == (0x10DE, None)
    assert parse_pci_id("10DE:2330") == (0x10DE, 0x2330)
    for bad in ("", "10de:", "xyz", "10de:12345", "1:2:3"):
        with pytest.raises(InvalidInputError):
            parse_pci_id(bad)


def gpu_server(tmp_path: Path, *, cdev: bool = True, bound: bool = True) -> Host:
    """Two L40S GPUs, each with its HD-audio function in the same group, and an NVMe drive."""
    driver = "vfio-pci" if bound else "nvidia"
    devices: list[dict[str, Any]] = []
    for slot, (group, bus) in enumerate([(30, 0x41), (12, 0x81)], start=1):
        port = f"0000:00:0{slot}.0"
        devices.append(
            {
                "bdf": port,
                "id": "8086:347a",
                "class": "060400",
                "driver": "pcieport",
                "group": 100 + slot,
            }
        )
        devices.append(
            {
                "bdf": f"0000:{bus:02x}:00.0",
                "id": "10de:26b9",
                "class": "030200",
                "parent": port,
                "driver": driver,
                "group": group,
            }
        )
        devices.append(
            {
                "bdf": f"0000:{bus:02x}:00.1",
                "id": "10de:22ba",
                "class": "040300",
                "parent": port,
                "driver": "vfio-pci" if bound else "snd_hda_intel",
                "group": group,
            }
        )
    devices.append(
        {"bdf": "0000:00:03.0", "id": "144d:a80a", "class": "010802", "driver": "nvme", "group": 5}
    )
    fake = build_host(tmp_path / "host", {"iommu": "intel", "cdev": cdev, "devices": devices})
    return kata_vfio.scan(fake.sysfs_root, fake.dev_root, fake.proc_root)


def test_gpu_and_audio_share_one_device_named_after_the_gpu(tmp_path: Path) -> None:
    host = gpu_server(tmp_path)
    spec = generate_vfio_spec(host, naming="bdf")
    assert spec.kind == "nvidia.com/pgpu"
    # Numeric PCI order (0000:41 before 0000:81), not group order (12 before 30).
    assert [d.name for d in spec.devices] == ["0000:41:00.0", "0000:81:00.0", "all"]
    assert [d.container_edits.device_nodes[0].path for d in spec.devices[:2]] == [
        "/dev/vfio/30",
        "/dev/vfio/12",
    ]
    by_group = generate_vfio_spec(host)
    assert [d.name for d in by_group.devices] == ["30", "12", "all"]
    cdevs = generate_vfio_spec(host, cdev=True, naming="bdf", include_all=False)
    assert [d.name for d in cdevs.devices] == ["0000:41:00.0", "0000:81:00.0"]


def test_groups_not_bound_to_vfio_are_left_out(tmp_path: Path) -> None:
    host = gpu_server(tmp_path, bound=False)
    with pytest.raises(CdiError, match="no assignable VFIO devices of a known kind"):
        generate_vfio_spec(host)
    assert generate_vfio_specs(host) == ()


def test_cdev_naming_needs_cdevs(tmp_path: Path) -> None:
    host = gpu_server(tmp_path, cdev=False)
    assert [d.name for d in generate_vfio_spec(host, naming="index").devices] == ["0", "1", "all"]
    with pytest.raises(CdiError, match="no VFIO cdev") as info:
        generate_vfio_spec(host, naming="cdev")
    assert info.value.hint
    with pytest.raises(CdiError, match="no assignable VFIO cdev devices of a known kind"):
        generate_vfio_spec(host, cdev=True)


def test_written_spec_loads_and_injects_with_the_hosts_numbers(
    sample: tuple[FakeHost, Host], tmp_path: Path
) -> None:
    fake, host = sample
    out = tmp_path / "run-cdi"
    path = write_vfio_spec(generate_vfio_spec(host, kind="nvidia.com/pgpu"), str(out))
    assert path == str(out / "nvidia.com-pgpu.yaml")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert load_spec(path).kind == "nvidia.com/pgpu"
    registry = Registry([out], device_lookup=DevfsLookup(fake.dev_root, fake.sysfs_root))
    gpu = nvidia_gpus(host)[0]
    result = registry.inject(oci_spec(), [f"nvidia.com/pgpu={gpu.iommu_group}"])
    devices = result.spec["linux"]["devices"]
    assert [d["path"] for d in devices] == ["/dev/vfio/vfio", f"/dev/vfio/{gpu.iommu_group}"]
    node = host.resolve_devnode(f"/dev/vfio/{gpu.iommu_group}")
    assert gpu.bdf in node.bdfs
    uevent = Path(fake.sysfs_root, "class", "vfio", str(gpu.iommu_group), "uevent").read_text()
    fields = dict(line.split("=", 1) for line in uevent.split())
    assert (devices[1]["major"], devices[1]["minor"]) == (
        int(fields["MAJOR"]),
        int(fields["MINOR"]),
    )
    assert (devices[0]["major"], devices[0]["minor"]) == (10, 196)


def test_output_directories_get_exact_modes_whatever_the_umask(
    sample: tuple[FakeHost, Host], tmp_path: Path
) -> None:
    _, host = sample
    out = tmp_path / "var" / "run" / "cdi"
    old = os.umask(0)
    try:
        path = write_vfio_spec(generate_vfio_spec(host, kind="nvidia.com/pgpu"), str(out))
    finally:
        os.umask(old)
    modes = [stat.S_IMODE(os.stat(p).st_mode) for p in (out.parent.parent, out.parent, out, path)]
    assert modes == [0o755, 0o755, 0o755, 0o644]
    assert Registry([out]).errors == {}, "what it writes, the registry trusts"


def test_group_naming_of_cdevs_sharing_a_group_is_refused_clearly(tmp_path: Path) -> None:
    # GPU and audio function are two cdev devices of one group: "30" cannot name both.
    host = gpu_server(tmp_path)
    with pytest.raises(CdiError, match="several devices the name '30'") as info:
        generate_vfio_spec(host, kind="example.com/dev", cdev=True, naming="group")
    assert "cdev, bdf or index" in (info.value.hint or "")
    spec = generate_vfio_spec(host, kind="example.com/dev", cdev=True, naming="bdf")
    assert len(spec.devices) == 5  # four functions and "all"


def test_devfs_lookup_reads_copied_uevents_as_outside_input(
    sample: tuple[FakeHost, Host], tmp_path: Path
) -> None:
    shared, host = sample
    group = nvidia_gpus(host)[0].iommu_group
    shutil.copytree(shared.root, tmp_path / "copy", symlinks=True)
    fake = FakeHost.at(str(tmp_path / "copy"))
    lookup = DevfsLookup(fake.dev_root, fake.sysfs_root)
    found = lookup(f"/dev/vfio/{group}")
    uevent = next(
        p
        for p in Path(fake.sysfs_root, "dev", "char").glob("*/uevent")
        if f"DEVNAME=vfio/{group}\n" in p.read_text()
    )
    text = uevent.read_text()
    for broken in (
        text.replace(f"MAJOR={found.major}", "MAJOR=" + "9" * 5000),  # int() would refuse
        text.replace(f"MINOR={found.minor}", "MINOR=-1"),
        text + "X" * 5000,  # larger than a uevent can be
    ):
        uevent.write_text(broken)
        with pytest.raises(NotADeviceNodeError):
            DevfsLookup(fake.dev_root, fake.sysfs_root)(f"/dev/vfio/{group}")
    uevent.unlink()
    os.mkfifo(uevent)  # must not block
    with pytest.raises(NotADeviceNodeError):
        DevfsLookup(fake.dev_root, fake.sysfs_root)(f"/dev/vfio/{group}")
