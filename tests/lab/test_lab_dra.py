"""The DRA plugin on a real kernel: the two-function e1000e group is prepared whole (both
functions on vfio-pci, the claim's CDI spec naming nodes that exist and open), unprepared back
to e1000e, and a prepare killed with SIGKILL after binding is rolled back by the restart."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.lab

PAIR = ("0000:05:00.0", "0000:05:00.1")


def _facts(lab: Any) -> dict[str, Any]:
    facts: dict[str, Any] = lab.facts("dra")
    return facts


def test_prepare_binds_the_whole_group_and_names_its_nodes(lab: Any) -> None:
    facts = _facts(lab)
    assert facts["drivers_before"] == dict.fromkeys(PAIR, "e1000e")
    prepared = facts["prepare"]
    assert prepared["prepare_error"] == "", prepared
    assert prepared["drivers_prepared"] == dict.fromkeys(PAIR, "vfio-pci")
    (cdi_id,) = prepared["cdi_ids"]
    assert cdi_id.startswith("k8s.vfio.kata-vfio.io/unit=") and cdi_id.endswith("pci-0000-05-00-0")
    nodes = prepared["spec_nodes"]
    # Legacy: the group's node; iommufd: one cdev per function.
    assert len(nodes) in (1, 2) and all(prepared["nodes_exist"].values()), prepared
    assert prepared["spec_control"][0]["path"] in ("/dev/vfio/vfio", "/dev/iommu")
    assert all(c["rc"] == 0 for c in prepared["check_open"].values()), prepared["check_open"]
    assert prepared["repeat_same"]


def test_unprepare_gives_e1000e_back_and_removes_the_spec(lab: Any) -> None:
    prepared = _facts(lab)["prepare"]
    assert prepared["unprepare_error"] == ""
    assert prepared["drivers_unprepared"] == dict.fromkeys(PAIR, "e1000e")
    assert prepared["spec_left"] == []


def test_a_prepare_killed_after_binding_is_rolled_back_at_restart(lab: Any) -> None:
    killed = _facts(lab)["killed"]
    assert killed["child_killed"], killed
    assert "vfio-pci" in killed["drivers_after_kill"].values()
    assert killed["drivers_after_restart"] == dict.fromkeys(PAIR, "e1000e")
    assert killed["records_after_restart"] == 0
    assert killed["spec_after_restart"] == []


def test_timings_are_recorded_and_the_devices_end_as_found(lab: Any) -> None:
    facts = _facts(lab)
    timings = facts["timings"]
    assert "error" not in timings, timings
    assert len(timings["prepare"]) == len(timings["unprepare"]) == 5
    assert all(w <= t for w, t in zip(timings["prepare_writes"], timings["prepare"], strict=True))
    assert facts["drivers_after"] == facts["drivers_before"]
