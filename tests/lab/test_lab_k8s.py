"""The device plugin on a real kernel: a unit's health follows its driver through kernel
uevents (the agent's rescan interval is an hour, so nothing else can explain an update)."""

from __future__ import annotations

from typing import Any

import pytest
from kvlab import topology

pytestmark = pytest.mark.lab


def _facts(lab: Any) -> dict[str, Any]:
    facts: dict[str, Any] = lab.facts("k8s")
    return facts


def test_the_agent_registers_and_lists_the_bound_nic(lab: Any) -> None:
    facts = _facts(lab)
    assert facts["registered"] == "lab.kata-vfio.io/nic"
    assert facts["first"][0] == "Healthy"


def test_rebinding_away_from_vfio_makes_the_unit_unhealthy_through_uevents(lab: Any) -> None:
    facts = _facts(lab)
    assert facts["driver_away"] == "e1000e"
    assert facts["away"]["seen"] == "Unhealthy", facts["away"]
    log = "\n".join(facts["agent_log"])
    assert "Healthy -> Unhealthy: 0000:01:00.0: endpoint bound to host driver e1000e" in log
    changes = [line for line in facts["agent_log"] if "inventory changed (" in line]
    assert changes and all("(uevent " in line for line in changes), changes


def test_binding_back_makes_it_healthy_again(lab: Any) -> None:
    facts = _facts(lab)
    assert facts["driver_back"] == "vfio-pci"
    assert facts["back"]["seen"] == "Healthy", facts["back"]
    assert any("Unhealthy -> Healthy" in line for line in facts["agent_log"])


def test_the_kernels_numa_node_reaches_the_kubelet(lab: Any) -> None:
    # The expander's NIC: the kernel reads its node from ACPI; ListAndWatch carries it.
    health, numa = _facts(lab)["numa_nic_first"]
    assert numa == topology.NUMA_EXPANDER_NODE
    assert health == "Unhealthy"  # still on e1000e: listed with its reason, never dropped


def test_sigterm_stops_the_agent_cleanly(lab: Any) -> None:
    facts = _facts(lab)
    assert facts["agent_rc"] == 0, facts["agent_log"]
    assert facts["socket_left"] == []
    assert not any("Traceback" in line for line in facts["agent_log"])
