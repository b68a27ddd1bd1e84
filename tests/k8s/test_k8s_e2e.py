"""End to end on a fake node: the kubelet allocates through the device plugin, the CDI names it
gets resolve in the CDI registry, the Pod Resources API hands them back, and a real CDI
consumer (podman) resolves the plugin's spec."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from k8s_hosts import FakeNode, private_sample, scan

from kata_vfio.cdi import DevfsLookup, Registry
from kata_vfio.k8s.cdispec import CdiSpecWriter
from kata_vfio.k8s.inventory import build_inventory
from kata_vfio.k8s.podresources import PodResourcesClient
from kata_vfio.k8s.resources import parse_resources

RUNC = "/usr/sbin/runc"
PODMAN_DIR = "/var/run/cdi"  # podman 4 reads only /etc/cdi and /var/run/cdi


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeNode]:
    running = FakeNode(tmp_path, private_sample(tmp_path))
    yield running
    running.close()


def test_allocated_names_resolve_and_come_back_from_pod_resources(cluster: FakeNode) -> None:
    names = cluster.admit("team-a", "trainer", 2)
    assert names == ["nvidia.com/pgpu=0000:18:00.0", "nvidia.com/pgpu=0000:1b:00.0"]
    registry = Registry(
        [str(cluster.cdi_dir)],
        device_lookup=DevfsLookup(cluster.host.dev_root, cluster.host.sysfs_root),
    )
    assert all(registry.get_device(n) is not None for n in names), dict(registry.errors)
    injected = registry.inject({"ociVersion": "1.2.0"}, names)
    paths = [d["path"] for d in injected.spec["linux"]["devices"]]
    host = scan(cluster.host)
    groups = {f"/dev/vfio/devices/{host.device(n.split('=')[1]).vfio_cdev}" for n in names}
    assert groups <= set(paths) and "/dev/iommu" in paths
    with PodResourcesClient(cluster.pods.socket) as client:
        assert list(client.get("team-a", "trainer").cdi_names()) == names


def _podman_missing() -> str | None:
    for tool in ("podman", "busybox"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs podman, runc, busybox-static)"
    if not os.path.exists(RUNC):
        return "runc is not installed"
    if os.geteuid() != 0:
        return "podman 4 reads CDI specs only from /etc/cdi and /var/run/cdi: needs root"
    return None


@pytest.mark.skipif(_podman_missing() is not None, reason=_podman_missing() or "")
def test_podman_resolves_the_plugins_spec(tmp_path: Path, sample) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy(shutil.which("busybox") or "", root / "bin" / "busybox")
    # The agent's own writer, into podman's directory, under a test-only kind.
    resources = parse_resources(["kata-vfio.test/k8s-e2e=10de:*"])
    inventory = build_inventory(scan(sample), resources, "legacy")
    writer = CdiSpecWriter(PODMAN_DIR)
    path = writer.path_for("kata-vfio.test/k8s-e2e")
    try:
        writer.sync(inventory)
        for unit in inventory.resource("kata-vfio.test/k8s-e2e").healthy:
            done = _podman(root, unit.cdi_name)
            # Resolved: podman then injects the nodes, which exist only on a real VFIO host.
            assert "unresolvable CDI devices" not in done.stderr, done.stderr
            if os.path.exists(unit.nodes[0]) and os.path.exists("/dev/vfio/vfio"):
                assert done.returncode == 0, done.stderr
            else:
                assert "failed to stat CDI host device" in done.stderr, done.stderr
        # What Kata #12549 hit: a plugin ID that is not the spec's device name.
        done = _podman(root, "kata-vfio.test/k8s-e2e=14")
        assert "unresolvable CDI devices kata-vfio.test/k8s-e2e=14" in done.stderr
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _podman(root: Path, device: str) -> subprocess.CompletedProcess[str]:
    command = ["podman", "--runtime", RUNC, "run", "--rm", "--network", "none"]
    command += ["--device", device, "--rootfs", str(root), "/bin/busybox", "true"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
