"""``unbind`` and ``restore`` refuse, quickly and saying why, a device whose group a process
holds (the QEMU way, or its cdev bound to an iommufd) instead of blocking in the kernel, and a
planted journal entry cannot make restore unbind a configured interface (issue 13 items 2
and 8, against the real kernel)."""

from __future__ import annotations

from typing import Any

import pytest
from kvlab import topology

pytestmark = pytest.mark.lab

NIC = topology.NIC_SINGLE


def _refusals(lab: Any) -> dict[str, Any]:
    facts: dict[str, Any] = lab.facts("refusals")
    return facts


def _held(lab: Any, mode: str) -> dict[str, Any]:
    facts = _refusals(lab)
    if mode == "cdev" and not facts["has_iommufd"]:
        pytest.skip(f"{lab.release} has no iommufd or vfio cdev (Debian kernels never do)")
    held: dict[str, Any] = facts[mode]
    return held


@pytest.mark.parametrize("mode", ["group", "cdev"])
def test_a_held_group_is_refused_not_waited_for(lab: Any, mode: str) -> None:
    held = _held(lab, mode)
    for command in ("unbind", "restore"):
        result = held[command]
        assert not result["hung"], f"{command} blocked in the kernel"
        assert result["rc"] == 1, result
        assert "is open in another process" in result["stderr"], result["stderr"]
        assert f"pid {held['holder_pid']} (python) holds /dev/vfio/" in result["stderr"]
        assert "the kernel answers EBUSY to opening /dev/vfio/" in result["stderr"]
        assert "--force" in result["stderr"]
    assert held["while_held"] == held["bound"] == {"driver": "vfio-pci", "override": "vfio-pci"}
    assert held["journal_while_held"] == [NIC], "the entry is kept for the next try"


@pytest.mark.parametrize("mode", ["group", "cdev"])
def test_restore_acts_once_the_holder_is_gone(lab: Any, mode: str) -> None:
    held = _held(lab, mode)
    assert held["after_release"]["rc"] == 0, held["after_release"]["stderr"]
    assert held["restored"] == held["before"]


def test_a_planted_entry_cannot_make_restore_unbind_a_configured_interface(lab: Any) -> None:
    configured = _refusals(lab)["configured"]
    assert configured["ip_setup_rc"] == [0, 0], configured["ip_setup_stderr"]
    assert configured["iface"] in configured["route"], "the kernel routes through it"
    restore = configured["restore"]
    assert restore["rc"] == 1, restore
    assert (
        f"unbinding e1000e would take it from the host: network interface "
        f"{configured['iface']} is up with an IPv4 route"
    ) in restore["stderr"]
    assert configured["after"] == configured["before"] == {"driver": "e1000e", "override": None}
    assert configured["journal_after"] == [NIC]
