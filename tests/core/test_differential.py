"""Differential property test: on hypothesis-generated hosts the Rust scan and the pure-Python
reference scanner agree field by field, and both agree with the description the tree was
built from."""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kata_vfio
from kata_vfio.testing import DeviceSpec, HostSpec, build_host
from kata_vfio.testing.spec import is_vfio_driver
from oracles import refscan
from oracles.compare import assert_same_host
from oracles.strategies import host_specs

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _scan_both(spec: HostSpec, details: bool) -> tuple[Any, refscan.RefHost]:
    with tempfile.TemporaryDirectory() as tmp:
        host = build_host(f"{tmp}/host", spec)
        rust = kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root, details=details)
        ref = refscan.scan(host.sysfs_root, host.dev_root, host.proc_root, details=details)
    return rust, ref


@SETTINGS
@given(spec=host_specs(), details=st.booleans())
def test_rust_scan_equals_reference_scan(spec, details):
    rust, ref = _scan_both(spec, details)
    assert_same_host(rust, ref)


@SETTINGS
@given(spec=host_specs(), details=st.booleans(), data=st.data())
def test_both_scans_agree_on_trees_that_lost_functions(spec, details, data):
    """Remove the bus links of some functions (the kernel's group lists still name them) and
    cut some uevents short: both scanners judge the damaged tree alike, and a group with a
    member they cannot read is unknown."""
    with tempfile.TemporaryDirectory() as tmp:
        host = build_host(f"{tmp}/host", spec)
        bdfs = [d.bdf for d in spec.devices]
        # PFs stay: the core takes a VF's physfn from its PF's virtfn links, the reference from
        # the VF's own link; they differ (by design) only when the PF cannot be read.
        removable = [d.bdf for d in spec.devices if d.sriov_totalvfs is None]
        for bdf in data.draw(st.lists(st.sampled_from(removable), max_size=2, unique=True)):
            os.unlink(os.path.join(host.sysfs_root, "bus/pci/devices", bdf))
        for bdf in data.draw(st.lists(st.sampled_from(bdfs), max_size=2, unique=True)):
            uevent = os.path.join(host.sysfs_root, "bus/pci/devices", bdf, "uevent")
            if os.path.isfile(uevent):
                with open(uevent, "r+") as handle:
                    handle.truncate(data.draw(st.integers(0, 40)))
        rust = kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root, details=details)
        ref = refscan.scan(host.sysfs_root, host.dev_root, host.proc_root, details=details)
    assert_same_host(rust, ref)
    for group in rust.groups:
        if any(b.kind == "unknown" for b in group.blockers):
            assert group.verdict == "unknown" and not group.assignable


def _broken(dev: DeviceSpec, *names: str) -> bool:
    return any(n in dev.missing or n in dev.unreadable for n in names)


def _expected(spec: HostSpec, dev: DeviceSpec) -> dict[str, Any]:
    """What a correct scan must report for ``dev``, given which attributes the tree lacks."""
    ids_elsewhere = _broken(dev, "uevent") and _broken(dev, "modalias")
    upstream = []
    parent = spec.parent_of(dev)
    while parent is not None:
        upstream.insert(0, parent)
        parent = spec.parent_of(spec.device(parent))
    return {
        "vendor": dev.vendor,
        "device": dev.device,
        "class_code": dev.class_code,
        "subsystem_vendor": None
        if ids_elsewhere and _broken(dev, "subsystem_vendor")
        else dev.subsystem_vendor,
        "revision": None if _broken(dev, "revision") else dev.revision,
        "numa_node": None if _broken(dev, "numa_node") else dev.numa_node,
        "driver_override": None if _broken(dev, "driver_override") else dev.driver_override,
        "driver": dev.driver,
        "is_pcie": dev.pcie and "config" not in dev.missing,
        "upstream": tuple(upstream),
        "physfn": dev.physfn,
        "iommu_group": dev.iommu_group if spec.iommu else None,
    }


@SETTINGS
@given(spec=host_specs())
def test_reference_scan_reports_what_the_tree_was_built_from(spec):
    _rust, ref = _scan_both(spec, details=False)
    assert [d.bdf for d in ref.devices] == [d.bdf for d in spec.devices]
    vfio = [d.bdf for d in spec.devices if is_vfio_driver(d.driver)]
    cdev = re.compile(r"^noiommu-vfio\d+$" if spec.noiommu else r"^vfio\d+$")
    for dev, got in zip(spec.devices, ref.devices, strict=True):
        want = _expected(spec, dev)
        if spec.noiommu and dev.bdf in vfio:
            # vfio gives each function it binds a software group with the next free number.
            want["iommu_group"] = got.iommu_group
        seen = {k: getattr(got, k) for k in want}
        assert seen == want, dev.bdf
        if spec.cdev and dev.bdf in vfio:
            assert got.vfio_cdev is not None
            assert cdev.match(got.vfio_cdev), got.vfio_cdev
        else:
            assert got.vfio_cdev is None
    groups = {d.iommu_group for d in spec.devices if d.iommu_group is not None}
    assert ref.iommu.enabled == (spec.iommu and bool(groups))
    if spec.noiommu:
        assert [g.devices for g in ref.groups] == [(b,) for b in vfio]
        assert ref.iommu.noiommu
    else:
        assert {g.id for g in ref.groups} == (groups if spec.iommu else set())


def test_noiommu_host_agrees(tmp_path):
    devices = [
        {"bdf": "0000:00:02.0", "id": "10de:2330", "class": "030200", "driver": "vfio-pci"},
        {"bdf": "0000:00:03.0", "id": "10de:2330", "class": "030200", "driver": "nvidia"},
    ]
    host = build_host(tmp_path / "h", {"iommu": False, "noiommu": True, "devices": devices})
    rust = kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root)
    ref = refscan.scan(host.sysfs_root, host.dev_root, host.proc_root)
    assert ref.devices[0].vfio_cdev == "noiommu-vfio0"
    assert not ref.iommu.enabled
    assert ref.iommu.noiommu
    assert_same_host(rust, ref)


def test_vf_keeps_its_pf_when_the_pf_hides_sriov_totalvfs(tmp_path):
    pf = {"bdf": "0000:19:00.0", "id": "15b3:1021", "class": "020000", "totalvfs": 8,
          "group": 1, "driver": "mlx5_core", "unreadable": ["sriov_totalvfs"]}  # fmt: skip
    vf = {"bdf": "0000:19:00.2", "id": "15b3:101e", "class": "020000",
          "physfn": "0000:19:00.0", "group": 2, "driver": "vfio-pci"}  # fmt: skip
    host = build_host(tmp_path / "h", {"devices": [pf, vf]})
    rust = kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root)
    ref = refscan.scan(host.sysfs_root, host.dev_root, host.proc_root)
    assert ref.devices[1].physfn == "0000:19:00.0"
    # The PF still lists its VF: sriov_totalvfs exists (only PFs have it) though unreadable.
    assert ref.devices[0].virtfns == ("0000:19:00.2",)
    assert ref.devices[0].sriov_totalvfs is None
    assert_same_host(rust, ref)
