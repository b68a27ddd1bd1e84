"""PCIe topology planning: port counts and names, switches, NUMA expanders, 64-bit windows."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kata_vfio.errors import PlanError
from kata_vfio.vm.topology import (
    DEFAULT_PCI_HOLE64,
    FIRST_PORT_SLOT,
    MAX_PORTS,
    PortRequest,
    plan_topology,
)

GIB = 1 << 30
MIB = 1 << 20


def test_twelve_root_ports_are_named_and_placed_in_numeric_order() -> None:
    topology = plan_topology([PortRequest()] * 12, kind="root-port")
    ids = [p.id for p in topology.ports]
    assert ids == [f"rp{i}" for i in range(12)]  # rp2 before rp10, never string order
    assert sorted(ids) != ids  # string order would differ: the check above means something
    assert [p.addr for p in topology.ports] == list(range(FIRST_PORT_SLOT, FIRST_PORT_SLOT + 12))
    assert [p.slot for p in topology.ports] == list(range(12))
    assert len({(p.chassis, p.slot) for p in topology.ports}) == 12  # QEMU needs unique pairs
    assert topology.assignments == tuple(ids)
    assert [p.guest_pci_path for p in topology.ports][:3] == ["08/00", "09/00", "0a/00"]


def test_configured_ports_stay_free_for_hot_plug() -> None:
    topology = plan_topology([PortRequest(), PortRequest()], kind="root-port", min_ports=8)
    assert len(topology.ports) == 8
    assert [p.id for p in topology.free_ports] == [f"rp{i}" for i in range(2, 8)]


def test_more_ports_than_configured_when_devices_need_them() -> None:
    assert len(plan_topology([PortRequest()] * 5, kind="root-port", min_ports=2).ports) == 5


@pytest.mark.parametrize("kind", ["root-port", "switch-port"])
def test_more_than_sixteen_ports_is_a_clear_error(kind: str) -> None:
    plan_topology([PortRequest()] * MAX_PORTS, kind=kind)
    with pytest.raises(PlanError, match="17 PCIe ports; at most 16") as info:
        plan_topology([PortRequest()] * 17, kind=kind)
    assert "functions of one device share a port" in (info.value.hint or "")


def test_devices_without_ports_are_refused() -> None:
    assert plan_topology([], kind="no-port").ports == ()
    with pytest.raises(PlanError, match="both 'no-port'"):
        plan_topology([PortRequest()], kind="no-port")


def test_switch_has_root_port_upstream_and_numbered_downstream_ports() -> None:
    topology = plan_topology([PortRequest()] * 3, kind="switch-port", min_ports=4)
    assert topology.switch is not None
    assert topology.switch.root_port_addr == FIRST_PORT_SLOT
    assert [p.id for p in topology.ports] == ["swdp0", "swdp1", "swdp2", "swdp3"]
    assert {p.bus for p in topology.ports} == {topology.switch.upstream_id}
    assert [p.kind for p in topology.ports] == ["switch-port"] * 4
    assert topology.ports[2].guest_pci_path == "08/00/02/00"
    assert [p.id for p in topology.free_ports] == ["swdp3"]


def test_switch_windows_are_reserved_on_its_root_port() -> None:
    requests = [PortRequest(mmio64=64 * GIB + 32 * MIB), PortRequest(mmio64=32 * MIB)]
    topology = plan_topology(requests, kind="switch-port")
    assert [p.window for p in topology.ports] == [64 * GIB + 32 * MIB, 32 * MIB]
    # QEMU's xio3130-downstream has no pref64-reserve property
    assert [p.pref64_reserve for p in topology.ports] == [0, 0]
    assert topology.switch is not None
    assert topology.switch.pref64_reserve == 64 * GIB + 64 * MIB
    assert topology.pci_hole64 == 128 * GIB


def test_large_bar_sets_the_port_window_and_grows_the_64bit_hole() -> None:
    gpu = PortRequest(mmio64=64 * GIB + 32 * MIB)
    topology = plan_topology(
        [gpu, PortRequest(mmio64=32 * MIB)], kind="root-port", memory_bytes=8 * GIB
    )
    assert topology.ports[0].pref64_reserve == 64 * GIB + 32 * MIB
    assert topology.ports[1].pref64_reserve == 32 * MIB
    assert topology.mmio64_total == 64 * GIB + 64 * MIB
    assert topology.pci_hole64 == 128 * GIB  # 64 GiB does not fit the default 32 GiB hole
    assert topology.phys_bits is None  # 10 GiB + 128 GiB fits 40 address bits


def test_small_bars_keep_the_default_hole() -> None:
    topology = plan_topology([PortRequest(mmio64=16 * GIB)], kind="root-port")
    assert topology.pci_hole64 is None
    assert topology.ports[0].pref64_reserve == 16 * GIB


def test_windows_are_rounded_to_whole_mebibytes() -> None:
    topology = plan_topology([PortRequest(mmio64=16 * 1024)], kind="root-port")
    assert topology.ports[0].pref64_reserve == MIB


def test_eight_big_gpus_need_more_address_bits() -> None:
    topology = plan_topology(
        [PortRequest(mmio64=128 * GIB + 32 * MIB)] * 8, kind="root-port", memory_bytes=64 * GIB
    )
    assert topology.pci_hole64 == 2048 * GIB
    assert topology.phys_bits == 42  # 64 GiB RAM + 2 TiB hole need 42 bits


def test_free_ports_can_reserve_a_window_for_hot_plugged_gpus() -> None:
    topology = plan_topology([], kind="root-port", min_ports=2, hotplug_mmio64=64 * GIB)
    assert [p.pref64_reserve for p in topology.ports] == [64 * GIB, 64 * GIB]
    assert topology.pci_hole64 is not None and topology.pci_hole64 >= 128 * GIB


def test_numa_places_devices_on_one_expander_per_host_node() -> None:
    requests = [
        PortRequest(numa_node=1),
        PortRequest(numa_node=0),
        PortRequest(numa_node=None),
        PortRequest(numa_node=1),
    ]
    topology = plan_topology(requests, kind="root-port", numa=True, min_ports=6)
    assert [(e.id, e.host_numa_node, e.guest_numa_node) for e in topology.expanders] == [
        ("pxb0", 0, 0),
        ("pxb1", 1, 1),
    ]
    ports = {p.id: p for p in topology.ports}
    on = [ports[a].bus for a in topology.assignments]
    assert on == ["pxb1", "pxb0", "pcie.0", "pxb1"]
    # the root bus comes first in guest order, so its ports have the lowest names
    assert [p.id for p in topology.ports if p.bus == "pcie.0"] == ["rp0", "rp1", "rp2"]
    assert len(topology.ports) == 6 and len(topology.free_ports) == 2
    assert all(
        ports[a].root_bus_nr == 0x40
        for a, r in zip(topology.assignments, requests, strict=True)
        if r.numa_node == 1
    )


def test_numa_mapping_must_cover_every_node() -> None:
    with pytest.raises(PlanError, match="host NUMA node 1"):
        plan_topology([PortRequest(numa_node=1)], kind="root-port", numa=True, guest_nodes={0: 0})


def test_numa_needs_root_ports() -> None:
    with pytest.raises(PlanError, match="NUMA placement needs root ports"):
        plan_topology([PortRequest(numa_node=0)], kind="switch-port", numa=True)


def test_unknown_port_kind() -> None:
    with pytest.raises(PlanError, match="unknown port kind"):
        plan_topology([], kind="bridge-port")


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(
        st.builds(
            PortRequest,
            numa_node=st.one_of(st.none(), st.integers(0, 3)),
            mmio64=st.sampled_from([0, 1, MIB, 16 * GIB, 64 * GIB + 32 * MIB]),
        ),
        max_size=18,
    ),
    st.sampled_from(["root-port", "switch-port"]),
    st.integers(0, 16),
    st.booleans(),
)
def test_any_request_list_gives_a_consistent_topology_or_a_plan_error(
    requests: list[PortRequest], kind: str, min_ports: int, numa: bool
) -> None:
    try:
        topology = plan_topology(requests, kind=kind, min_ports=min_ports, numa=numa)
    except PlanError as exc:
        assert str(exc) and exc.hint
        return
    assert topology == plan_topology(requests, kind=kind, min_ports=min_ports, numa=numa)
    ids = [p.id for p in topology.ports]
    assert len(set(ids)) == len(ids) <= MAX_PORTS
    assert len(ids) >= max(min_ports, len(requests))
    assert len(set(topology.assignments)) == len(requests)
    numbers = [int(i.lstrip("rpswd")) for i in ids]
    assert numbers == sorted(numbers)
    assert len({(p.bus, p.addr) for p in topology.ports}) == len(ids)
    assert len({(p.chassis, p.slot) for p in topology.ports}) == len(ids)
    hole = topology.pci_hole64 or DEFAULT_PCI_HOLE64
    assert hole >= topology.mmio64_total
