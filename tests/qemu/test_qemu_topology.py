"""The planned machine in the real QEMU: its PCI topology, read back over QMP, is the plan."""

from __future__ import annotations

import dataclasses

import pytest
from emulated_vm import emulated, enumerate_buses, pci_tree
from sandbox_hosts import Zoo, oci_spec

from kata_vfio.kata.config import KataConfig
from kata_vfio.kata.sandbox import SandboxPlan, plan_sandbox
from kata_vfio.qemu.launcher import QemuProcess
from kata_vfio.qemu.qmp import guest_pci_path
from kata_vfio.vm.topology import DEFAULT_PCI_HOLE64

pytestmark = pytest.mark.qemu


def _plan(
    zoo: Zoo, config: KataConfig, qemu: str, nodes: list[str], **changes: object
) -> SandboxPlan:
    server, _names = zoo
    config = dataclasses.replace(config, path=qemu, default_memory=1024, **changes).validate()  # type: ignore[arg-type]
    return plan_sandbox(oci_spec(nodes), host=server.host, config=config, accel="tcg")


def _expected(plan: SandboxPlan) -> dict[str, tuple[str, int, int]]:
    topology = plan.topology
    expected = {p.id: (p.bus, p.addr, 0) for p in topology.ports}
    if topology.switch is not None:
        expected[topology.switch.root_port_id] = ("pcie.0", topology.switch.root_port_addr, 0)
        expected[topology.switch.upstream_id] = (topology.switch.root_port_id, 0, 0)
    for expander in topology.expanders:
        expected[expander.id] = ("pcie.0", expander.addr, 0)
    for device in plan.devices:
        for function in device.functions:
            expected[function.device_id] = (function.port, 0, function.guest_function)
    return expected


def _check_in_qemu(plan: SandboxPlan) -> None:
    topology = plan.topology
    roots = {0: "pcie.0", **{e.bus_nr: e.id for e in topology.expanders}}
    bridges = len(topology.ports) + (2 if topology.switch is not None else 0)
    with QemuProcess(emulated(plan).add("-S"), start_timeout=60) as vm:
        # Guest PCI paths from the QOM tree work on the paused machine already.
        for device in plan.devices:
            for function in device.functions:
                path = guest_pci_path(vm.qmp, function.device_id)
                assert str(path) == function.guest_pci_path
                assert path.function == function.guest_function
                expected_root = (
                    "pcie.0" if function.guest_root_bus == 0 else roots[function.guest_root_bus]
                )
                assert path.root == expected_root
        hole = vm.qmp.execute("qom-get", {"path": "/machine/q35", "property": "pci-hole64-size"})
        assert hole == (topology.pci_hole64 or DEFAULT_PCI_HOLE64)
        enumerate_buses(vm.qmp, bridges)
        tree = pci_tree(vm.qmp, roots)
    expected = _expected(plan)
    assert {k: tree.get(k) for k in expected} == expected
    # Nothing else with an id: no stray device the plan does not know.
    assert {k for k in tree if not k.startswith("<")} == set(expected)


def test_root_ports_multifunction_gpus_nvswitch_cdev_and_hole(
    zoo: Zoo, nvidia_config: KataConfig, qemu_binary: str
) -> None:
    server, names = zoo
    nodes = [
        server.group_node(names["gpu0"][0]),
        server.group_node(names["gpu1"][0]),
        server.group_node(names["nvswitch0"][0]),
        server.cdev_node(names["nic0"][0]),
        server.group_node(names["h100a"][0]),
    ]
    plan = _plan(zoo, nvidia_config, qemu_binary, nodes, pcie_root_port=12)
    assert [p.id for p in plan.topology.ports][-3:] == ["rp9", "rp10", "rp11"]
    assert plan.topology.pci_hole64 is not None  # the 64 GiB and 128 GiB BARs need it
    _check_in_qemu(plan)


def test_switch_ports(zoo: Zoo, nvidia_config: KataConfig, qemu_binary: str) -> None:
    server, names = zoo
    nodes = [server.group_node(names["gpu0"][0]), server.group_node(names["nic0"][0])]
    plan = _plan(
        zoo,
        nvidia_config,
        qemu_binary,
        nodes,
        cold_plug_vfio="switch-port",
        pcie_root_port=0,
        pcie_switch_port=4,
    )
    _check_in_qemu(plan)


def test_numa_expanders_and_viommu(zoo: Zoo, nvidia_config: KataConfig, qemu_binary: str) -> None:
    server, names = zoo
    nodes = [
        server.group_node(names["h100a"][0]),  # one-function groups: a vIOMMU refuses more
        server.group_node(names["h100b"][0]),
        server.group_node(names["nic1"][0]),
    ]
    plan = _plan(
        zoo,
        nvidia_config,
        qemu_binary,
        nodes,
        enable_numa=True,
        enable_iommu=True,
        vfio_mode="vfio",
        pcie_root_port=3,
    )
    assert [e.id for e in plan.topology.expanders] == ["pxb0", "pxb1"]
    assert plan.command.opts("-device")[0].head == "intel-iommu"
    _check_in_qemu(plan)
