"""Binding against the real kernel: ``bind --group``/``restore`` and ``kill -9`` mid-bind."""

from __future__ import annotations

from typing import Any

import pytest
from kvlab import topology

pytestmark = pytest.mark.lab

_BRIDGES = (topology.SWITCH_UPSTREAM, topology.SWITCH_DOWNSTREAM, topology.PCI_BRIDGE)


def _bind_group(lab: Any) -> dict[str, Any]:
    facts: dict[str, Any] = lab.facts("bind")["bind_group"]
    return facts


def test_bind_group_moves_every_endpoint_of_each_group_to_vfio_pci(lab: Any) -> None:
    facts = _bind_group(lab)
    assert facts["bind"]["rc"] == 0, facts["bind"]["stderr"]
    assert {bdf: s["driver"] for bdf, s in facts["bound"].items()} == dict.fromkeys(
        facts["bound"], "vfio-pci"
    )
    assert facts["journal"] == sorted(facts["before"])


def test_bind_never_writes_for_a_bridge_or_port(lab: Any) -> None:
    writes = _bind_group(lab)["bind"]["output"]["writes"]
    touched = [w for w in writes if any(bridge in w["path"] + w["value"] for bridge in _BRIDGES)]
    assert touched == []
    assert len(writes) == 3 * len(_bind_group(lab)["before"]), "override, unbind, probe each"


def test_bind_loads_vfio_pci_when_it_is_a_module(lab: Any) -> None:
    facts = _bind_group(lab)
    if facts["vfio_pci_loaded_before"]:
        pytest.skip(f"vfio-pci is built into {lab.release}: nothing to load")
    assert "vfio_pci" in facts["bind"]["output"]["modules"]


def test_binding_again_writes_nothing(lab: Any) -> None:
    facts = _bind_group(lab)
    assert facts["again_actions"] == ["already-bound"]
    assert facts["again_writes"] == 0


def test_restore_returns_every_device_to_its_original_driver(lab: Any) -> None:
    facts = _bind_group(lab)
    assert facts["restore"]["rc"] == 0, facts["restore"]["stderr"]
    assert facts["restored"] == facts["before"]
    assert facts["journal_after"] == []


def _kill(lab: Any) -> dict[str, Any]:
    facts: dict[str, Any] = lab.facts("bind")["kill"]
    return facts


def test_kill_points_cover_every_write_of_the_bind(lab: Any) -> None:
    kill = _kill(lab)
    group = list(topology.NIC_MULTI)
    assert kill["planned_writes"] == 3 * len(group)
    assert [p["stop_before_write"] for p in kill["points"]] == list(
        range(kill["planned_writes"] + 1)
    )
    stopped = [p for p in kill["points"] if p["stopped"]]
    assert len(stopped) == kill["planned_writes"], "the bind never reached some writes"
    assert all(p["killed"] for p in stopped)
    seen = [
        tuple(sorted((b, s["driver"], s["override"]) for b, s in p["at_kill"].items()))
        for p in stopped
    ]
    assert len(set(seen)) == len(seen), "two kill points saw the same state"
    half_bound = [
        p for p in stopped if {s["driver"] for s in p["at_kill"].values()} == {"vfio-pci", "e1000e"}
    ]
    unbound = [p for p in stopped if None in {s["driver"] for s in p["at_kill"].values()}]
    assert half_bound, "no kill point left the group half-bound"
    assert unbound, "no kill point caught a device between unbind and probe"


@pytest.mark.parametrize("point", range(7))
def test_restore_after_kill_9_gives_back_the_original_state(lab: Any, point: int) -> None:
    kill = _kill(lab)
    if point >= len(kill["points"]):
        pytest.fail(f"only {len(kill['points'])} kill points were taken")
    taken = kill["points"][point]
    assert taken["after_restore"] == kill["original"], (
        f"killed before write {point} (state then: {taken['at_kill']}); "
        f"restore gave {taken['after_restore']}"
    )
    assert taken["journal_after"] == []


def test_every_check_leaves_the_devices_as_it_found_them(lab: Any) -> None:
    for name, entry in lab.results["checks"].items():
        if "devices_before" in entry:
            assert entry["devices_after"] == entry["devices_before"], name
