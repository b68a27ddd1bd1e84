"""Devices removed and added by another thread while scans run: no scan fails, and every
device a scan returns is consistent (its values are right or absent, never another
device's)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

import kata_vfio
from kata_vfio.testing import DeviceSpec, FakeHost, HostSpec, build_host
from kata_vfio.testing.generate import generate_spec
from oracles import refscan
from oracles.compare import assert_same_host

Scanner = Callable[[FakeHost], Any]


def _rust(host: FakeHost) -> Any:
    return kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root, details=True)


def _reference(host: FakeHost) -> Any:
    return refscan.scan(host.sysfs_root, host.dev_root, host.proc_root, details=True)


def _subtree(spec: HostSpec, bdf: str) -> list[DeviceSpec]:
    """``bdf`` and everything that goes with it, parents first (the order to add them)."""
    out = [spec.device(bdf)]
    for child in spec.children(bdf):
        out += _subtree(spec, child.bdf)
    for vf in spec.virtfns(bdf):
        if vf not in out:
            out.append(vf)
    return sorted(out, key=lambda d: d.key)


def _churn(host: FakeHost, spec: HostSpec, stop: threading.Event, rounds: list[int]) -> None:
    """Removes a random device with everything below it, then adds it all back."""
    rng = random.Random(7)
    # Root ports, switch ports, PFs and plain endpoints: all kinds of removal.
    candidates = [d.bdf for d in spec.devices if d.parent is not None or d.physfn is not None]
    while not stop.is_set():
        victim = rng.choice(candidates)
        if not host.kernel.has_device(victim):
            continue
        host.remove_device(victim)
        for dev in _subtree(spec, victim):
            host.add_device(dev)
        rounds[0] += 1


def _check_consistent(scan: Any, spec: HostSpec) -> None:
    for dev in scan.devices:
        want = spec.device(str(dev.bdf))
        assert (dev.vendor, dev.device, dev.class_code) == (
            want.vendor,
            want.device,
            want.class_code,
        ), dev.bdf
        for name, value in (
            ("subsystem_vendor", want.subsystem_vendor),
            ("revision", want.revision),
            ("driver", want.driver),
            ("iommu_group", want.iommu_group),
            ("numa_node", want.numa_node),
        ):
            assert getattr(dev, name) in (value, None), (dev.bdf, name)
        assert dev.is_pcie in (want.pcie, False), dev.bdf
        chain = []
        parent = spec.parent_of(want)
        while parent is not None:
            chain.insert(0, parent)
            parent = spec.parent_of(spec.device(parent))
        assert [str(b) for b in dev.upstream] == chain, dev.bdf
        if dev.reset_methods is not None:
            assert tuple(dev.reset_methods) == want.reset_methods, dev.bdf
    for group in scan.groups:
        members = {d.bdf for d in spec.devices if d.iommu_group == group.id}
        assert {str(b) for b in group.devices} <= members, group.id


@pytest.mark.parametrize("scanner", [_rust, _reference], ids=["rust", "reference"])
def test_scans_survive_devices_coming_and_going(scanner: Scanner, tmp_path):
    spec = generate_spec(300, seed=3)
    host = build_host(tmp_path / "h", spec)
    full = scanner(host)
    assert len(full.devices) == 300
    stop = threading.Event()
    rounds = [0]
    churn = threading.Thread(target=_churn, args=(host, spec, stop, rounds), daemon=True)
    churn.start()
    scans = 0
    try:
        while scans < 15 or rounds[0] < 10:
            result = scanner(host)
            _check_consistent(result, spec)
            scans += 1
            if scans > 200:
                break
    finally:
        stop.set()
        churn.join(timeout=60)
    assert not churn.is_alive()
    assert rounds[0] >= 1, "the churn thread never completed a round"
    # Once the churn stops, the tree is whole again and both scanners see all of it.
    after = scanner(host)
    assert len(after.devices) == 300
    assert_same_host(_rust(host), _reference(host))
