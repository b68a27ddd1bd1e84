"""kata_vfio.testing builds what the kernel would show: layout, links, attribute formats."""

from __future__ import annotations

import os
import posixpath
import struct

import pytest

from kata_vfio.errors import InvalidInputError
from kata_vfio.samples import sample_spec
from kata_vfio.testing import (
    BarSpec,
    DeviceSpec,
    HostSpec,
    build_host,
    host_from_dict,
)

GPU = {"id": "10de:2330", "class": "030200", "subsys": "10de:16c1", "rev": 0xA1}
PORT = {"id": "8086:347a", "class": "060400", "driver": "pcieport"}


def small_host() -> dict[str, object]:
    return {
        "iommu": "intel",
        "devices": [
            {"bdf": "0000:00:01.0", **PORT, "group": 1},
            {"bdf": "0000:01:00.0", **PORT, "parent": "0000:00:01.0", "group": 2},
            {"bdf": "0000:02:00.0", **PORT, "parent": "0000:01:00.0", "group": 3},
            {
                "bdf": "0000:03:00.0",
                **GPU,
                "parent": "0000:02:00.0",
                "driver": "vfio-pci",
                "group": 12,
                "numa": 0,
                "bars": ["16M mem64", None, "128G mem64 pref", None, "32M mem64 pref"],
                "reset": ["flr", "bus"],
                "link": "32.0 GT/s PCIe x16",
            },
            {"bdf": "0000:00:1f.0", "id": "8086:a1c1", "class": "060100", "group": 4,
             "pcie": False},
            {"bdf": "0000:00:1f.4", "id": "8086:a1a3", "class": "0c0500", "group": 4,
             "driver": "i801_smbus", "pcie": False},
        ],
    }  # fmt: skip


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_device_directories_nest_under_their_bridges(tmp_path):
    host = build_host(tmp_path / "h", small_host())
    link = os.readlink(os.path.join(host.sysfs_root, "bus/pci/devices/0000:03:00.0"))
    assert link == (
        "../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:00.0/0000:03:00.0"
    )
    assert os.path.isdir(os.path.join(host.sysfs_root, "bus/pci/devices/0000:03:00.0"))
    # Functions on the root bus sit directly in the root bus directory.
    assert os.readlink(os.path.join(host.sysfs_root, "bus/pci/devices/0000:00:1f.4")) == (
        "../../../devices/pci0000:00/0000:00:1f.4"
    )


def test_every_link_is_relative_and_resolves_inside_the_tree(tmp_path):
    host = build_host(tmp_path / "h", small_host())
    root = os.path.realpath(host.root)
    links = 0
    for top, dirs, files in os.walk(host.root):
        for name in dirs + files:
            path = os.path.join(top, name)
            if not os.path.islink(path):
                continue
            links += 1
            target = os.readlink(path)
            assert not target.startswith("/"), path
            resolved = os.path.realpath(path)
            assert resolved.startswith(root + os.sep), (path, target)
            assert os.path.exists(resolved), (path, target)
    assert links > 20


def test_links_have_the_kernel_depth(tmp_path):
    host = build_host(tmp_path / "h", small_host())
    dev = host.device_path("0000:03:00.0")
    # Six components below sys: devices, pci0000:00, three ports, the device.
    assert os.readlink(os.path.join(dev, "driver")) == "../../../../../../bus/pci/drivers/vfio-pci"
    assert os.readlink(os.path.join(dev, "iommu_group")) == (
        "../../../../../../kernel/iommu_groups/12"
    )
    assert os.readlink(os.path.join(dev, "subsystem")) == "../../../../../../bus/pci"
    member = os.path.join(host.sysfs_root, "kernel/iommu_groups/12/devices/0000:03:00.0")
    assert os.path.samefile(member, dev)
    bound = os.path.join(host.sysfs_root, "bus/pci/drivers/vfio-pci/0000:03:00.0")
    assert os.path.samefile(bound, dev)


def test_attribute_formats_match_the_kernel(tmp_path):
    host = build_host(tmp_path / "h", small_host())
    dev = host.device_path("0000:03:00.0")
    assert read(f"{dev}/vendor") == "0x10de\n"
    assert read(f"{dev}/device") == "0x2330\n"
    assert read(f"{dev}/subsystem_device") == "0x16c1\n"
    assert read(f"{dev}/class") == "0x030200\n"
    assert read(f"{dev}/revision") == "0xa1\n"
    assert read(f"{dev}/numa_node") == "0\n"
    assert read(f"{dev}/driver_override") == "(null)\n"
    assert read(f"{dev}/modalias") == "pci:v000010DEd00002330sv000010DEsd000016C1bc03sc02i00\n"
    assert read(f"{dev}/uevent") == (
        "DRIVER=vfio-pci\nPCI_CLASS=30200\nPCI_ID=10DE:2330\nPCI_SUBSYS_ID=10DE:16C1\n"
        "PCI_SLOT_NAME=0000:03:00.0\n"
        "MODALIAS=pci:v000010DEd00002330sv000010DEsd000016C1bc03sc02i00\n"
    )
    assert read(f"{dev}/reset_method") == "flr bus\n"
    assert read(f"{dev}/current_link_speed") == "32.0 GT/s PCIe\n"
    assert read(f"{dev}/max_link_width") == "16\n"
    unbound = host.device_path("0000:00:1f.0")
    assert not read(f"{unbound}/uevent").startswith("DRIVER=")
    assert read(f"{unbound}/numa_node") == "-1\n"


def test_resource_lines_carry_kernel_flags(tmp_path):
    host = build_host(tmp_path / "h", small_host())
    lines = read(os.path.join(host.device_path("0000:03:00.0"), "resource")).splitlines()
    assert len(lines) == 13  # 6 BARs, ROM, 6 SR-IOV BARs
    rows = [[int(x, 16) for x in line.split()] for line in lines]
    start, end, flags = rows[2]
    assert end - start + 1 == 128 << 30
    assert flags == 0x0014220C  # MEM_64 | SIZEALIGN | PREFETCH | MEM | 64-bit pref BAR bits
    assert rows[0][2] == 0x00140204  # 64-bit, not prefetchable
    assert rows[1] == [0, 0, 0]  # upper half of BAR0
    assert start % (128 << 30) == 0
    bridge_lines = read(os.path.join(host.device_path("0000:00:01.0"), "resource"))
    assert len(bridge_lines.splitlines()) == 17


def test_config_space_has_ids_header_type_and_size(tmp_path):
    host = build_host(tmp_path / "h", small_host())
    gpu = os.path.join(host.device_path("0000:03:00.0"), "config")
    assert os.stat(gpu).st_size == 4096
    with open(gpu, "rb") as f:
        cfg = f.read()
    vendor, device = struct.unpack_from("<HH", cfg, 0)
    assert (vendor, device) == (0x10DE, 0x2330)
    assert cfg[8] == 0xA1
    assert cfg[9:12] == bytes([0x00, 0x02, 0x03])
    assert cfg[0x0E] == 0x00
    assert struct.unpack_from("<HH", cfg, 0x2C) == (0x10DE, 0x16C1)
    assert cfg[cfg[0x34]] == 0x10  # PCI Express capability
    lpc = os.path.join(host.device_path("0000:00:1f.0"), "config")
    assert os.stat(lpc).st_size == 256
    with open(lpc, "rb") as f:
        assert f.read()[0x0E] == 0x80  # multi-function (1f.0 and 1f.4)
    with open(os.path.join(host.device_path("0000:01:00.0"), "config"), "rb") as f:
        bridge = f.read()
    assert bridge[0x0E] == 0x01
    assert tuple(bridge[0x18:0x1B]) == (0x01, 0x02, 0x03)


def test_groups_types_and_nodes(tmp_path):
    host = build_host(tmp_path / "h", small_host())
    groups = os.path.join(host.sysfs_root, "kernel/iommu_groups")
    assert sorted(os.listdir(groups), key=int) == ["1", "2", "3", "4", "12"]
    assert sorted(os.listdir(os.path.join(groups, "4", "devices"))) == [
        "0000:00:1f.0",
        "0000:00:1f.4",
    ]
    assert read(os.path.join(groups, "12", "type")) == "identity\n"  # iommu=pt
    assert "msi" in read(os.path.join(groups, "12", "reserved_regions"))
    # Only the group with a member on vfio has a node; the cdev follows the device.
    assert sorted(os.listdir(os.path.join(host.dev_root, "vfio"))) == ["12", "devices", "vfio"]
    assert os.listdir(os.path.join(host.dev_root, "vfio", "devices")) == ["vfio0"]
    cdev = os.path.join(host.device_path("0000:03:00.0"), "vfio-dev", "vfio0")
    assert read(os.path.join(cdev, "dev")) == "511:0\n"
    assert os.path.samefile(os.path.join(cdev, "device"), host.device_path("0000:03:00.0"))
    by_class = os.path.join(host.sysfs_root, "class/vfio-dev/vfio0")
    assert os.path.samefile(by_class, cdev)
    assert os.path.samefile(os.path.join(host.sysfs_root, "dev/char/511:0"), cdev)
    assert os.path.exists(os.path.join(host.dev_root, "iommu"))
    assert os.path.islink(os.path.join(host.sysfs_root, "class/iommu/dmar0"))
    assert os.path.exists(os.path.join(host.sysfs_root, "firmware/acpi/tables/DMAR"))
    assert "intel_iommu=on" in read(os.path.join(host.proc_root, "cmdline"))


def test_drivers_have_their_files_and_modules(tmp_path):
    host = build_host(tmp_path / "h", small_host())
    drivers = os.path.join(host.sysfs_root, "bus/pci/drivers")
    for name in ("bind", "unbind", "new_id", "remove_id"):
        assert os.path.isfile(os.path.join(drivers, "vfio-pci", name))
    assert os.readlink(os.path.join(drivers, "vfio-pci", "module")) == "../../../../module/vfio_pci"
    assert not os.path.lexists(os.path.join(drivers, "pcieport", "module"))  # built in
    assert os.path.isfile(os.path.join(host.sysfs_root, "bus/pci/drivers_probe"))
    param = os.path.join(host.sysfs_root, "module/vfio/parameters/enable_unsafe_noiommu_mode")
    assert read(param) == "N\n"


def test_iommu_off_leaves_no_groups(tmp_path):
    spec = small_host()
    spec["iommu"] = False
    for dev in spec["devices"]:  # type: ignore[attr-defined]
        dev.pop("group", None)
        if dev.get("driver") == "vfio-pci":
            dev["driver"] = "nvidia"
    host = build_host(tmp_path / "h", spec)
    assert os.listdir(os.path.join(host.sysfs_root, "kernel/iommu_groups")) == []
    assert os.listdir(os.path.join(host.sysfs_root, "class/iommu")) == []
    assert not os.path.lexists(os.path.join(host.device_path("0000:03:00.0"), "iommu_group"))
    assert "intel_iommu" not in read(os.path.join(host.proc_root, "cmdline"))


def test_iommu_off_refuses_groups_and_vfio_bindings():
    with pytest.raises(InvalidInputError, match="no IOMMU"):
        host_from_dict({"iommu": False, "devices": [{"bdf": "0000:00:02.0", **GPU, "group": 1}]})
    vfio = {"bdf": "0000:00:02.0", **GPU, "driver": "vfio-pci"}
    with pytest.raises(InvalidInputError, match="without an IOMMU group"):
        host_from_dict({"iommu": False, "devices": [vfio]})


def test_noiommu_groups_appear_for_vfio_devices_only(tmp_path):
    devices = [
        {"bdf": "0000:00:02.0", **GPU, "driver": "vfio-pci"},
        {"bdf": "0000:00:03.0", **GPU, "driver": "nvidia"},
    ]
    host = build_host(tmp_path / "h", {"iommu": False, "noiommu": True, "devices": devices})
    groups = os.path.join(host.sysfs_root, "kernel/iommu_groups")
    assert os.listdir(groups) == ["0"]
    assert read(os.path.join(groups, "0", "name")) == "vfio-noiommu\n"
    assert os.path.exists(os.path.join(host.dev_root, "vfio", "noiommu-0"))
    assert os.listdir(os.path.join(host.dev_root, "vfio", "devices")) == ["noiommu-vfio0"]
    assert not os.path.lexists(os.path.join(host.device_path("0000:00:03.0"), "iommu_group"))


def test_amd_and_arm_vendors(tmp_path):
    for vendor, table, unit in (("amd", "IVRS", "ivhd0"), ("arm", "IORT", "smmu3.")):
        spec = {"iommu": vendor, "devices": [{"bdf": "0000:00:02.0", **GPU, "group": 0}]}
        host = build_host(tmp_path / vendor, spec)
        sysfs = host.sysfs_root
        assert os.path.exists(os.path.join(sysfs, "firmware/acpi/tables", table))
        assert os.listdir(os.path.join(sysfs, "class/iommu"))[0].startswith(unit)


def test_no_cdev_support(tmp_path):
    spec = small_host()
    spec["cdev"] = False
    host = build_host(tmp_path / "h", spec)
    assert not os.path.exists(os.path.join(host.device_path("0000:03:00.0"), "vfio-dev"))
    assert not os.path.exists(os.path.join(host.dev_root, "vfio", "devices"))
    assert not os.path.exists(os.path.join(host.dev_root, "iommu"))
    assert os.path.exists(os.path.join(host.dev_root, "vfio", "12"))


def test_missing_and_unreadable_attributes(tmp_path):
    spec = small_host()
    spec["devices"][3]["missing"] = ["revision", "numa_node"]  # type: ignore[index]
    spec["devices"][3]["unreadable"] = ["subsystem_vendor", "config"]  # type: ignore[index]
    host = build_host(tmp_path / "h", spec)
    dev = host.device_path("0000:03:00.0")
    assert not os.path.exists(os.path.join(dev, "revision"))
    assert not os.path.exists(os.path.join(dev, "numa_node"))
    with pytest.raises(OSError):  # noqa: PT011 - EACCES or EISDIR depending on the user
        read(os.path.join(dev, "subsystem_vendor"))
    # config keeps its size for stat (the PCIe rule) but loses its permissions.
    assert os.stat(os.path.join(dev, "config")).st_size == 4096
    assert os.stat(os.path.join(dev, "config")).st_mode & 0o777 == 0


def test_domains_above_ffff(tmp_path):
    spec = {"devices": [{"bdf": "10000:e1:00.0", **GPU, "group": 40, "driver": "nvme"}]}
    host = build_host(tmp_path / "h", spec)
    assert os.readlink(os.path.join(host.sysfs_root, "bus/pci/devices/10000:e1:00.0")) == (
        "../../../devices/pci10000:e1/10000:e1:00.0"
    )


def test_sriov_links(tmp_path):
    pf = {"bdf": "0000:19:00.0", "id": "15b3:1021", "class": "020000", "totalvfs": 8,
          "driver": "mlx5_core", "group": 1}  # fmt: skip
    vfs = [
        {"bdf": f"0000:19:00.{fn}", "id": "15b3:101e", "class": "020000",
         "physfn": "0000:19:00.0", "group": 1 + fn, "driver": "vfio-pci"}
        for fn in (2, 3)
    ]  # fmt: skip
    host = build_host(tmp_path / "h", {"devices": [pf, *vfs]})
    pf_dir = host.device_path("0000:19:00.0")
    assert os.readlink(os.path.join(pf_dir, "virtfn0")) == "../0000:19:00.2"
    assert os.readlink(os.path.join(pf_dir, "virtfn1")) == "../0000:19:00.3"
    assert os.readlink(os.path.join(host.device_path("0000:19:00.3"), "physfn")) == (
        "../0000:19:00.0"
    )
    assert read(os.path.join(pf_dir, "sriov_numvfs")) == "2\n"
    assert read(os.path.join(pf_dir, "sriov_totalvfs")) == "8\n"
    assert read(os.path.join(pf_dir, "sriov_offset")) == "2\n"
    assert sorted(os.listdir(os.path.join(host.dev_root, "vfio", "devices"))) == [
        "vfio0",
        "vfio1",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bdf": "0000:00:01.0/../.."}, "canonical PCI address"),
        ({"bdf": "0000:00:20.0"}, "canonical PCI address"),
        ({"parent": "0000:00:09.0"}, "not a bridge"),
        ({"driver": "../evil"}, "driver name"),
        ({"bars": ["3M mem32"]}, "power of two"),
        ({"id": "10de-2330"}, "10de:2330"),
        ({"colour": "red"}, "unknown keys"),
        ({"reset": ["warm"]}, "unknown reset"),
        ({"missing": ["../config"]}, "attribute name"),
    ],
)
def test_bad_descriptions_are_refused_with_the_input_named(change, message):
    dev = {"bdf": "0000:05:00.0", **GPU, **change}
    with pytest.raises(InvalidInputError, match=message):
        host_from_dict({"devices": [dev]})


def test_building_into_a_used_directory_is_refused(tmp_path):
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "keep").write_text("x")
    with pytest.raises(InvalidInputError, match="not empty"):
        build_host(tmp_path / "h", small_host())
    assert (tmp_path / "h" / "keep").read_text() == "x"


def test_same_description_same_tree(tmp_path):
    def snapshot(root: str) -> dict[str, str]:
        out = {}
        for top, dirs, files in os.walk(root):
            for name in sorted(dirs + files):
                path = os.path.join(top, name)
                rel = posixpath.relpath(path, root)
                if os.path.islink(path):
                    out[rel] = "-> " + os.readlink(path)
                elif os.path.isfile(path):
                    with open(path, "rb") as f:
                        out[rel] = f.read().hex()
        return out

    a = build_host(tmp_path / "a", sample_spec())
    b = build_host(tmp_path / "b", sample_spec())
    assert snapshot(a.root) == snapshot(b.root)


def test_records_form_and_dict_form_agree():
    from_records = HostSpec(
        devices=(
            DeviceSpec("0000:00:02.0", 0x10DE, 0x2330, 0x030200, 0x10DE, 0x16C1, 0xA1,
                       iommu_group=3, bars=(BarSpec(0, 16 << 20, is_64bit=True),)),
        )
    )  # fmt: skip
    from_dict = host_from_dict(
        {"devices": [{"bdf": "0000:00:02.0", **GPU, "group": 3, "bars": ["16M mem64"]}]}
    )
    assert from_records == from_dict


def test_sample_spec_shape():
    spec = sample_spec()
    gpus = [d for d in spec.devices if (d.vendor, d.device) == (0x10DE, 0x2330)]
    assert len(gpus) == 8
    assert {d.driver for d in gpus} == {"vfio-pci", "nvidia", None}
    switches = [d for d in spec.devices if d.device == 0x22A3]
    assert len(switches) == 4
    assert all(d.class_code == 0x068000 for d in switches)
    audio = next(d for d in spec.devices if d.class_code == 0x040300)
    vga = next(d for d in spec.devices if d.bdf == audio.bdf[:-1] + "0")
    assert audio.iommu_group == vga.iommu_group
    assert audio.driver == "snd_hda_intel"
    vfs = [d for d in spec.devices if d.physfn is not None]
    assert vfs
    assert all(d.driver == "vfio-pci" for d in vfs)
    assert {d.numa_node for d in spec.devices} == {0, 1}


@pytest.mark.lspci
def test_lspci_lists_exactly_the_described_devices(tmp_path):
    import shutil
    import subprocess

    if shutil.which("lspci") is None:
        pytest.skip("lspci (pciutils) is not installed; .ci/run installs it")
    spec = sample_spec()
    host = build_host(tmp_path / "h", spec)
    out = subprocess.run(
        ["lspci", "-O", f"sysfs.path={host.sysfs_root}/bus/pci", "-nnk", "-D"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        if line and not line[0].isspace():
            current = line.split()[0]
            listed[current] = [line]
        elif current:
            listed[current].append(line.strip())
    assert list(listed) == [d.bdf for d in spec.devices]
    for dev in spec.devices:
        head = listed[dev.bdf][0]
        assert f"[{dev.vendor:04x}:{dev.device:04x}]" in head
        assert f"[{dev.class_code >> 8:04x}]" in head
        in_use = [x for x in listed[dev.bdf] if x.startswith("Kernel driver in use:")]
        assert in_use == ([f"Kernel driver in use: {dev.driver}"] if dev.driver else [])
