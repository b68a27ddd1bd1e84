"""HostPaths: one value for where a host is read, its defaults, and the scan carrying it."""

from __future__ import annotations

from pathlib import Path

import pytest

import kata_vfio
from kata_vfio import HostPaths, binding
from kata_vfio.testing import build_host

NIC = {"bdf": "0000:01:00.0", "id": "8086:10d3", "class": "020000", "driver": "e1000e"}


def test_defaults_are_this_machines() -> None:
    paths = HostPaths()
    assert (paths.sysfs, paths.devfs, paths.procfs, paths.modprobe) == (
        "/sys",
        "/dev",
        "/proc",
        "/sbin/modprobe",
    )
    assert paths.is_live and paths == HostPaths.for_tree("/sys")
    assert repr(paths) == (
        "HostPaths(sysfs='/sys', devfs='/dev', procfs='/proc', modprobe='/sbin/modprobe')"
    )


def test_a_tree_is_read_with_its_own_dev_and_proc() -> None:
    paths = HostPaths.for_tree("/srv/copy/sys")
    assert (paths.sysfs, paths.devfs, paths.procfs) == (
        "/srv/copy/sys",
        "/srv/copy/dev",
        "/srv/copy/proc",
    )
    assert not paths.is_live
    changed = paths.replace(devfs="/elsewhere/dev", modprobe="/usr/sbin/modprobe")
    assert changed == HostPaths(
        "/srv/copy/sys", "/elsewhere/dev", "/srv/copy/proc", "/usr/sbin/modprobe"
    )
    assert paths.replace() == paths and hash(paths.replace()) == hash(paths)
    assert {paths, changed, paths.replace()} == {paths, changed}


def test_a_scan_carries_the_paths_it_was_read_from(tmp_path: Path) -> None:
    fake = build_host(tmp_path / "host", {"iommu": "intel", "devices": [NIC]})
    given = fake.paths.replace(modprobe="/opt/modprobe")
    host = kata_vfio.scan(given, details=True)
    assert host.paths == given and host.has_details
    assert (host.sysfs_root, host.dev_root, host.proc_root) == (
        fake.sysfs_root,
        fake.dev_root,
        fake.proc_root,
    )
    # Separate roots, as before HostPaths: /dev unless given, the tree's own proc.
    assert kata_vfio.scan(fake.sysfs_root).paths == HostPaths.for_tree(fake.sysfs_root).replace(
        devfs="/dev"
    )
    other = kata_vfio.scan(fake.sysfs_root, fake.dev_root, str(tmp_path)).paths
    assert (other.devfs, other.procfs) == (fake.dev_root, str(tmp_path))
    with pytest.raises(TypeError, match="either a HostPaths or separate roots"):
        kata_vfio.scan(fake.paths, fake.dev_root)


def test_the_journal_of_a_tree_stays_beside_it() -> None:
    assert binding.default_state_dir() == binding.DEFAULT_STATE_DIR == "/run/kata-vfio"
    assert binding.default_state_dir(HostPaths()) == "/run/kata-vfio"
    tree = HostPaths.for_tree("/srv/copy/sys")
    assert binding.default_state_dir(tree) == "/srv/copy/run/kata-vfio"
