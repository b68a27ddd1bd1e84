"""The agent's CDI specs: written before advertising, only on change, units kept while
present, resolvable by the CDI registry."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from k8s_hosts import private_sample, scan

from kata_vfio import oci
from kata_vfio.cdi import DevfsLookup, Registry, load_spec
from kata_vfio.k8s.cdispec import CdiSpecWriter, resource_spec
from kata_vfio.k8s.inventory import build_inventory
from kata_vfio.k8s.resources import default_resources, parse_resources


def test_spec_has_one_device_per_unit_and_the_control_node(sample_scan) -> None:  # type: ignore[no-untyped-def]
    inventory = build_inventory(sample_scan, default_resources(), "legacy")
    spec = resource_spec(inventory.resources[0], "legacy")
    assert spec is not None
    assert spec.kind == "nvidia.com/pgpu"
    names = [d.name for d in spec.devices]
    # Healthy units and Unhealthy ones still on the host with a node; no 'all' device.
    assert "0000:18:00.0" in names and "0000:a9:00.0" in names and "all" not in names
    assert spec.device("0000:18:00.0").container_edits.device_nodes[0].path == "/dev/vfio/14"
    assert [n.path for n in spec.container_edits.device_nodes] == ["/dev/vfio/vfio"]
    iommufd = resource_spec(
        build_inventory(sample_scan, default_resources(), "iommufd").resources[0], "iommufd"
    )
    assert iommufd is not None
    assert [n.path for n in iommufd.container_edits.device_nodes] == ["/dev/iommu"]
    assert "0000:9d:00.0" not in [d.name for d in iommufd.devices]  # no cdev, never had one


def test_writer_writes_on_change_only_and_keeps_present_units(tmp_path: Path) -> None:
    fake = private_sample(tmp_path)
    cdi_dir = str(tmp_path / "cdi")
    writer = CdiSpecWriter(cdi_dir)
    resources = default_resources()

    def sync():  # type: ignore[no-untyped-def]
        return writer.sync(build_inventory(scan(fake), resources, "iommufd"))

    (change,) = sync()
    path = writer.path_for("nvidia.com/pgpu")
    assert change.path == path == os.path.join(cdi_dir, "nvidia.com-pgpu.yaml")
    assert "0000:18:00.0" in change.added
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    before = os.stat(path)
    assert sync() == []
    assert os.stat(path).st_ino == before.st_ino, "an unchanged spec is not rewritten"

    # Unbound from vfio: Unhealthy and without a cdev, but still on the host: the device stays
    # with its last nodes, so a running pod's container can still be resolved.
    old_nodes = load_spec(path).device("0000:18:00.0").container_edits
    fake.unbind("0000:18:00.0")
    assert sync() == []
    assert load_spec(path).device("0000:18:00.0").container_edits == old_nodes
    # A new agent (restart) learns those nodes from the file it finds.
    assert CdiSpecWriter(cdi_dir).sync(build_inventory(scan(fake), resources, "iommufd")) == []

    # Gone from the host: gone from the spec.
    fake.remove_device("0000:18:00.0")
    (change,) = sync()
    assert change.removed == ("0000:18:00.0",)
    assert load_spec(path).device("0000:18:00.0") is None

    # Rebound: the device follows the unit's current cdev.
    fake.unbind("0000:1b:00.0")
    fake.bind("0000:1b:00.0", "vfio-pci")
    sync()
    cdev = scan(fake).device("0000:1b:00.0").vfio_cdev
    nodes = load_spec(path).device("0000:1b:00.0").container_edits.device_nodes
    assert [n.path for n in nodes] == [f"/dev/vfio/devices/{cdev}"]


def test_a_resource_without_units_has_no_spec(tmp_path: Path, sample_scan) -> None:  # type: ignore[no-untyped-def]
    writer = CdiSpecWriter(str(tmp_path))
    resources = parse_resources(["example.com/none=1234:5678"])
    assert writer.sync(build_inventory(sample_scan, resources, "legacy")) == []
    assert os.listdir(tmp_path) == []
    stale = tmp_path / "example.com-none.yaml"
    stale.write_text("not: [a spec\n")
    (change,) = CdiSpecWriter(str(tmp_path)).sync(build_inventory(sample_scan, resources, "legacy"))
    assert change.deleted and not stale.exists()


def test_registry_resolves_every_unit(tmp_path: Path, sample) -> None:  # type: ignore[no-untyped-def]
    host = scan(sample)
    inventory = build_inventory(host, default_resources(), "legacy")
    CdiSpecWriter(str(tmp_path)).sync(inventory)
    registry = Registry(
        [str(tmp_path)], device_lookup=DevfsLookup(sample.dev_root, sample.sysfs_root)
    )
    names = [u.cdi_name for u in inventory.resources[0].healthy]
    spec = {"ociVersion": "1.0.2", "process": {"args": ["true"]}, "root": {"path": "rootfs"}}
    result = registry.inject(spec, names)
    paths = [d["path"] for d in oci.linux_devices(result.spec)]
    assert "/dev/vfio/vfio" in paths
    assert {f"/dev/vfio/{u.group}" for u in inventory.resources[0].healthy} <= set(paths)
