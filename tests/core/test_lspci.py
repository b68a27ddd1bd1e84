"""The scan against pciutils' view of the same tree: ``lspci -O sysfs.path=... -vmm -nn -k -D``
on every real snapshot, the sample host and generated hosts lists the same devices with the
same IDs, classes, revisions, drivers, NUMA nodes and IOMMU groups."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import kata_vfio
from kata_vfio.samples import sample_spec
from kata_vfio.testing import build_host
from kata_vfio.testing.generate import generate_spec
from shared_paths import SHARED_DATA

pytestmark = [
    pytest.mark.lspci,
    pytest.mark.skipif(
        shutil.which("lspci") is None, reason="lspci (pciutils) is not installed; .ci/run adds it"
    ),
]

SNAPSHOT_DIR = SHARED_DATA / "sysfs-snapshots"
SNAPSHOTS = (
    sorted(p.name for p in SNAPSHOT_DIR.iterdir() if (p / "sys").is_dir())
    if SNAPSHOT_DIR.is_dir()
    else []
)
_BRACKET = re.compile(r"\[([0-9a-f]{2,4})\]$")


def lspci_records(sysfs_root: str) -> list[dict[str, str]]:
    """``lspci -vmm -nn -k -D`` on a tree, one dict per function (warnings about missing
    ``config`` files in snapshots go to stderr and are ignored)."""
    out = subprocess.run(
        ["lspci", "-O", f"sysfs.path={sysfs_root}/bus/pci", "-vmm", "-nn", "-k", "-D"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    records = []
    for block in out.strip().split("\n\n"):
        record = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            record[key.strip()] = value.strip()
        records.append(record)
    return records


def _id(value: str) -> int:
    match = _BRACKET.search(value)
    assert match is not None, value
    return int(match.group(1), 16)


def _link_name(scan: Any, bdf: str, name: str) -> str | None:
    """What a device's ``driver`` or ``iommu_group`` link names, even when it dangles: the
    snapshots lack ``bus/pci/drivers`` and ``kernel/iommu_groups``, and lspci resolves these
    links with realpath, so it shows nothing for them there."""
    link = Path(scan.sysfs_root) / "bus/pci/devices" / bdf / name
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def assert_matches_lspci(scan: Any, records: list[dict[str, str]]) -> None:
    assert [r["Slot"] for r in records] == [str(d.bdf) for d in scan.devices]
    for dev, rec in zip(scan.devices, records, strict=True):
        where = str(dev.bdf)
        assert _id(rec["Vendor"]) == dev.vendor, where
        assert _id(rec["Device"]) == dev.device, where
        assert _id(rec["Class"]) == dev.class_code >> 8, where
        assert int(rec.get("ProgIf", "0"), 16) == dev.class_code & 0xFF, where
        assert int(rec.get("Rev", "0"), 16) == (dev.revision or 0), where
        if "SVendor" in rec:
            assert _id(rec["SVendor"]) == dev.subsystem_vendor, where
        if "SDevice" in rec:
            assert _id(rec["SDevice"]) == dev.subsystem_device, where
        assert (rec.get("Driver") or _link_name(scan, where, "driver")) == dev.driver, where
        numa = rec.get("NUMANode")
        assert (int(numa) if numa is not None else None) == dev.numa_node, where
        group = rec.get("IOMMUGroup") or _link_name(scan, where, "iommu_group")
        assert (int(group) if group is not None else None) == dev.iommu_group, where


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_real_snapshots(name, snapshot_root, tmp_path):
    sys_root = str(snapshot_root(name))
    scan = kata_vfio.scan(sys_root, str(tmp_path))
    assert_matches_lspci(scan, lspci_records(sys_root))


def test_sample_host(tmp_path):
    host = build_host(tmp_path / "sample", sample_spec())
    scan = kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root)
    records = lspci_records(host.sysfs_root)
    assert len(records) == len(sample_spec().devices)
    assert_matches_lspci(scan, records)


@pytest.mark.parametrize("seed", [1, 2])
def test_generated_hosts(seed, tmp_path):
    host = build_host(tmp_path / "gen", generate_spec(250, seed=seed))
    scan = kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root)
    assert_matches_lspci(scan, lspci_records(host.sysfs_root))
