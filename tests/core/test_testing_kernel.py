"""The fake kernel's mutators, the sample host cache and the host generator."""

from __future__ import annotations

import errno
import os

import pytest

import kata_vfio
from kata_vfio.errors import HostIOError
from kata_vfio.samples import sample_host, sample_spec
from kata_vfio.testing import build_host, device_from_dict
from kata_vfio.testing.generate import generate_spec
from oracles import refscan
from oracles.compare import assert_same_host

GPU = {"id": "10de:2330", "class": "030200", "subsys": "10de:16c1", "rev": 0xA1}
AUDIO = {"id": "10de:22ba", "class": "040300"}
PORT = {"id": "8086:347a", "class": "060400", "driver": "pcieport"}


def _host(tmp_path, **host):  # type: ignore[no-untyped-def]
    devices = [
        {"bdf": "0000:00:01.0", **PORT, "group": 1},
        {"bdf": "0000:01:00.0", **GPU, "parent": "0000:00:01.0", "group": 7, "driver": "nvidia"},
        {"bdf": "0000:01:00.1", **AUDIO, "parent": "0000:00:01.0", "group": 7,
         "driver": "snd_hda_intel"},
    ]  # fmt: skip
    return build_host(tmp_path / "h", {"devices": devices, **host})


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_binding_a_whole_group_to_vfio(tmp_path):
    host = _host(tmp_path)
    vfio = os.path.join(host.dev_root, "vfio")
    assert sorted(os.listdir(vfio)) == ["devices", "vfio"]
    for bdf in ("0000:01:00.0", "0000:01:00.1"):
        host.unbind(bdf)
        host.set_driver_override(bdf, "vfio-pci")
        host.bind(bdf, "vfio-pci")
    assert sorted(os.listdir(vfio)) == ["7", "devices", "vfio"]
    assert sorted(os.listdir(os.path.join(vfio, "devices"))) == ["vfio0", "vfio1"]
    gpu = host.device_path("0000:01:00.0")
    assert _read(os.path.join(gpu, "uevent")).startswith("DRIVER=vfio-pci\n")
    assert _read(os.path.join(gpu, "driver_override")) == "vfio-pci\n"
    assert not os.path.lexists(
        os.path.join(host.sysfs_root, "bus/pci/drivers/nvidia", "0000:01:00.0")
    )
    scan = kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root)
    assert scan.group(7).assignable
    assert scan.cdev_node("0000:01:00.1") == "/dev/vfio/devices/vfio1"


def test_group_node_goes_with_the_last_vfio_member(tmp_path):
    host = _host(tmp_path)
    for bdf in ("0000:01:00.0", "0000:01:00.1"):
        host.unbind(bdf)
        host.bind(bdf, "vfio-pci")
    host.unbind("0000:01:00.0")
    assert os.path.exists(os.path.join(host.dev_root, "vfio", "7"))
    host.unbind("0000:01:00.1")
    assert not os.path.exists(os.path.join(host.dev_root, "vfio", "7"))
    assert os.listdir(os.path.join(host.dev_root, "vfio", "devices")) == []
    assert os.listdir(os.path.join(host.sysfs_root, "class/vfio-dev")) == []
    # The lowest free cdev number is reused, as the kernel's ida does.
    host.bind("0000:01:00.1", "vfio-pci")
    assert os.listdir(os.path.join(host.dev_root, "vfio", "devices")) == ["vfio0"]


def test_bind_errors_carry_the_kernel_errno(tmp_path):
    host = _host(tmp_path)
    with pytest.raises(HostIOError) as busy:
        host.bind("0000:01:00.0", "vfio-pci")
    assert busy.value.errno == errno.EBUSY
    with pytest.raises(HostIOError) as gone:
        host.bind("0000:09:00.0", "vfio-pci")
    assert gone.value.errno == errno.ENODEV
    off = build_host(
        tmp_path / "off", {"iommu": False, "devices": [{"bdf": "0000:00:02.0", **GPU}]}
    )
    with pytest.raises(HostIOError) as no_group:
        off.bind("0000:00:02.0", "vfio-pci")
    assert no_group.value.errno == errno.EINVAL


def test_noiommu_bind_creates_and_unbind_removes_the_group(tmp_path):
    host = build_host(
        tmp_path / "h",
        {"iommu": False, "noiommu": True, "devices": [{"bdf": "0000:00:02.0", **GPU}]},
    )
    groups = os.path.join(host.sysfs_root, "kernel/iommu_groups")
    host.bind("0000:00:02.0", "vfio-pci")
    assert os.listdir(groups) == ["0"]
    assert os.path.exists(os.path.join(host.dev_root, "vfio", "noiommu-0"))
    host.unbind("0000:00:02.0")
    assert os.listdir(groups) == []
    assert not os.path.exists(os.path.join(host.dev_root, "vfio", "noiommu-0"))


def test_remove_takes_children_and_add_brings_them_back(tmp_path):
    host = _host(tmp_path)
    before = refscan.scan(host.sysfs_root, host.dev_root, host.proc_root)
    host.remove_device("0000:00:01.0")
    devices = os.listdir(os.path.join(host.sysfs_root, "bus/pci/devices"))
    assert devices == []
    assert os.listdir(os.path.join(host.sysfs_root, "kernel/iommu_groups")) == []
    driver_dir = os.listdir(os.path.join(host.sysfs_root, "bus/pci/drivers/nvidia"))
    assert sorted(driver_dir) == ["bind", "module", "new_id", "remove_id", "uevent", "unbind"]
    assert host.spec is not None
    for dev in host.spec.devices:
        host.add_device(dev)
    after = refscan.scan(host.sysfs_root, host.dev_root, host.proc_root)
    assert [d.bdf for d in after.devices] == [d.bdf for d in before.devices]
    assert [(g.id, g.devices) for g in after.groups] == [(g.id, g.devices) for g in before.groups]
    assert [d.driver for d in after.devices] == [d.driver for d in before.devices]
    assert_same_host(kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root), after)


def test_removing_a_vf_updates_its_pf(tmp_path):
    pf = {"bdf": "0000:19:00.0", "id": "15b3:1021", "class": "020000", "totalvfs": 8, "group": 1,
          "driver": "mlx5_core"}  # fmt: skip
    vfs = [
        {"bdf": f"0000:19:00.{fn}", "id": "15b3:101e", "class": "020000",
         "physfn": "0000:19:00.0", "group": 1 + fn, "driver": "vfio-pci"}
        for fn in (1, 2)
    ]  # fmt: skip
    host = build_host(tmp_path / "h", {"devices": [pf, *vfs]})
    host.remove_device("0000:19:00.1")
    pf_dir = host.device_path("0000:19:00.0")
    assert _read(os.path.join(pf_dir, "sriov_numvfs")) == "1\n"
    assert sorted(n for n in os.listdir(pf_dir) if n.startswith("virtfn")) == ["virtfn1"]
    host.add_device(device_from_dict(vfs[0]))
    assert _read(os.path.join(pf_dir, "sriov_numvfs")) == "2\n"
    scan = kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root)
    assert [str(b) for b in scan.device("0000:19:00.0").virtfns] == ["0000:19:00.1", "0000:19:00.2"]


def test_sample_host_is_cached_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = sample_host()
    assert first.root.startswith(str(tmp_path / "cache"))
    assert sample_host().root == first.root
    os.unlink(os.path.join(first.sysfs_root, "bus/pci/devices/0000:18:00.0"))
    again = sample_host()
    assert again.root == first.root
    assert os.path.exists(os.path.join(again.sysfs_root, "bus/pci/devices/0000:18:00.0"))
    scan = kata_vfio.scan(again.sysfs_root, again.dev_root, again.proc_root)
    assert len(scan.devices) == len(sample_spec().devices)


def test_sample_host_tells_the_story(tmp_path):
    host = sample_host(tmp_path / "sample")
    scan = kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root)
    assert scan.iommu.enabled
    assert scan.iommu.cmdline == ("intel_iommu=on", "iommu=pt")
    gpus = [d for d in scan.devices if (d.vendor, d.device) == (0x10DE, 0x2330)]
    assert len(gpus) == 8
    assert sum(1 for g in gpus if scan.group_of(g.bdf).assignable) == 6
    audio_group = scan.group_of("0000:a9:00.1")
    assert not audio_group.viable
    assert [str(b.bdf) for b in audio_group.blockers] == ["0000:a9:00.1"]
    nvswitches = [d for d in scan.devices if d.device == 0x22A3]
    assert all(d.is_endpoint for d in nvswitches)
    pf = scan.device("0000:19:00.0")
    assert len(pf.virtfns) == 4
    assert all(scan.device(vf).physfn == pf.bdf for vf in pf.virtfns)


@pytest.mark.parametrize("count", [1, 17, 250])
def test_generator_gives_exact_counts_deterministically(count):
    spec = generate_spec(count, seed=5)
    assert len(spec.devices) == count
    assert generate_spec(count, seed=5) == spec
    assert generate_spec(count, seed=6) != spec or count == 1


def test_generated_host_has_realistic_variety():
    spec = generate_spec(1000, seed=0)
    assert sum(1 for d in spec.devices if d.physfn is not None) > 50
    assert any(d.is_host_bridge for d in spec.devices)
    assert any(d.class_code == 0x068000 for d in spec.devices)
    assert any(not d.pcie for d in spec.devices)
    shared = {}
    for d in spec.devices:
        shared.setdefault(d.iommu_group, []).append(d)
    assert any(len(m) > 1 and any(d.is_bridge for d in m) for m in shared.values())
    assert len({d.key[0] for d in generate_spec(10_000).devices if d.key[0] > 0xFFFF}) > 1
