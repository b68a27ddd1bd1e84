"""The scan against the real kernel: groups, endpoints, and viability step by step."""

from __future__ import annotations

from typing import Any

import pytest
from kvlab import topology

pytestmark = pytest.mark.lab

_BRIDGE_CLASSES = (0x0600, 0x0604)  # host bridges and PCI bridges/ports: never endpoints


def test_kernel_builds_each_group_shape(lab: Any) -> None:
    kernel = {tuple(m) for m in lab.facts("scan")["kernel_groups"].values()}
    for shape, members in topology.EXPECTED_GROUPS.items():
        assert members in kernel, f"{lab.release}: no kernel group is exactly {shape} {members}"


def test_scan_groups_equal_kernel_groups(lab: Any) -> None:
    facts = lab.facts("scan")
    scanned = {g: v["devices"] for g, v in facts["scan_groups"].items()}
    assert scanned == facts["kernel_groups"]


def test_scan_gives_each_device_its_kernel_group(lab: Any) -> None:
    facts = lab.facts("scan")
    kernel = {bdf: int(g) for g, members in facts["kernel_groups"].items() for bdf in members}
    assert facts["scan_device_groups"] == kernel


def test_scan_endpoints_are_the_groups_non_bridges(lab: Any) -> None:
    facts = lab.facts("scan")
    classes = facts["kernel_classes"]
    for group, members in facts["kernel_groups"].items():
        expected = [bdf for bdf in members if classes[bdf] >> 8 not in _BRIDGE_CLASSES]
        assert facts["scan_groups"][group]["endpoints"] == expected, f"group {group}"


def test_scan_sees_the_iommu(lab: Any) -> None:
    facts = lab.facts("scan")
    assert facts["iommu_enabled"], facts["iommu_reasons"]


@pytest.mark.parametrize("shape", ["multifunction", "bridge", "switch", "single"])
def test_scan_viability_equals_kernel_viable_flag(lab: Any, shape: str) -> None:
    walk = lab.facts("scan")["viability"][shape]
    compared = 0
    for step in walk["steps"]:
        if step["kernel_viable"] is None:
            continue  # no /dev/vfio node: the kernel has no verdict to compare with
        compared += 1
        assert step["scan"]["viable"] == step["kernel_viable"], (
            f"{shape} group {walk['group']}, {step['label']}: scan says "
            f"viable={step['scan']['viable']}, kernel says {step['kernel_viable']} "
            f"(drivers {step['drivers']})"
        )
    assert compared == len(walk["endpoints"]), "the kernel made no group node to ask"


@pytest.mark.parametrize("shape", ["multifunction", "bridge"])
def test_half_bound_group_is_not_viable_on_both_sides(lab: Any, shape: str) -> None:
    walk = lab.facts("scan")["viability"][shape]
    half = walk["steps"][1]
    unbound = walk["endpoints"][1:]
    assert half["kernel_viable"] is False, half
    assert half["scan"]["viable"] is False, half
    assert set(unbound) <= set(half["scan"]["blockers"]), (
        f"scan's blockers {half['scan']['blockers']} should name the unbound {unbound}"
    )


@pytest.mark.parametrize("shape", ["multifunction", "bridge", "switch", "single"])
def test_fully_bound_group_is_viable_and_assignable(lab: Any, shape: str) -> None:
    walk = lab.facts("scan")["viability"][shape]
    full = walk["steps"][len(walk["endpoints"])]
    assert all(full["drivers"][bdf] == "vfio-pci" for bdf in walk["endpoints"]), full
    assert full["kernel_viable"] is True, full
    assert full["scan"]["viable"] is True, full
    assert full["scan"]["assignable"] is True, full
    assert full["scan"]["blockers"] == [], full


@pytest.mark.parametrize("shape", ["multifunction", "bridge", "switch", "single"])
def test_unbound_group_is_not_viable_in_scan(lab: Any, shape: str) -> None:
    walk = lab.facts("scan")["viability"][shape]
    first, last = walk["steps"][0], walk["steps"][-1]
    assert first["scan"]["viable"] is False, "NICs on e1000e/e1000 must block the group"
    assert last["drivers"] == first["drivers"], "the harness did not restore the drivers"
