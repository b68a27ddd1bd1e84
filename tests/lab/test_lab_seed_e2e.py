"""The seed scenario end to end on a real kernel (guest/check_seed_e2e.py): a sandbox planned
from a bundle, launched by the library as a nested VM, every function found by an agent-like
init at the guest PCI path it was given, the inner CDI annotations selecting the right
device, hot-plug and unplug, and the same chain from the Pod Resources API.

Each test names the stage that failed (generate, podresources, plan, launch, guest-boot,
resolve, index, hotplug, unplug) with its error and L2's console."""

from __future__ import annotations

from typing import Any

import pytest
from kvlab import topology

pytestmark = pytest.mark.lab

KIND = "lab.kata-vfio.io/nic"
E1000E = tuple(f"{n:#06x}" for n in topology.E1000E)


def _seed(lab: Any) -> dict[str, Any]:
    facts: dict[str, Any] = lab.facts("seed_e2e")
    assert "restore_error" not in facts, facts["restore_error"]
    if facts["failed_stage"] is not None:
        pytest.fail(
            f"seed e2e ({lab.suite}): stage {facts['failed_stage']} failed: {facts['stages']}"
        )
    return facts


def _scenario(lab: Any, name: str, *stages: str) -> dict[str, Any]:
    """The scenario's facts, after checking that ``stages`` all passed."""
    scenario: dict[str, Any] = _seed(lab)["scenarios"].get(name)
    assert scenario is not None, f"seed e2e ({lab.suite}): scenario {name} did not run"
    done = {entry["name"]: entry for entry in scenario["stages"]}
    for stage in stages:
        entry = done.get(stage)
        if entry is None or not entry["ok"]:
            why = entry["error"] if entry else f"never reached (failed: {scenario['failed_stage']})"
            console = "\n".join(scenario.get("console_tail", []))
            pytest.fail(
                f"seed e2e ({lab.suite}) {name}: stage {stage} failed: {why}\n"
                f"qemu run: {scenario.get('qemu_run_stderr', '')}\nL2 console:\n{console}"
            )
    return scenario


def _functions(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for device in scenario["resolved"] for f in device["functions"]]


def test_seed_e2e_cdi_generate_names_every_group(lab: Any) -> None:
    facts = _seed(lab)
    nodes = facts["cdi_names"]
    expected = {"legacy": 4, "cdev": 5}[facts["mode"]]  # a cdev spec names each function
    assert len(nodes) == expected, nodes
    assert all(name.startswith(f"{KIND}=") for name in nodes.values())
    prefix = "/dev/vfio/devices/vfio" if facts["mode"] == "cdev" else "/dev/vfio/"
    assert all(node.startswith(prefix) for node in nodes), nodes


def test_seed_e2e_root_port_devices_are_where_the_agent_looks(lab: Any) -> None:
    scenario = _scenario(lab, "root-port", "plan", "launch", "guest-boot", "resolve")
    plan = scenario["plan"]
    assert plan["device_source"] == "annotations"
    assert plan["annotations_removed"] == ["cdi.k8s.io/seed"]
    assert not [a for a in scenario["written_annotations"] if a.startswith("cdi.k8s.io/")]
    assert plan["cdi_devices"] == scenario["requested"]
    functions = _functions(scenario)
    hosts = {*topology.NIC_MULTI, topology.NIC_SINGLE}
    assert {f["host"] for f in functions} == hosts
    for function in functions:
        assert function["guest_bdf"], function
        assert (function["vendor"], function["device"]) == E1000E
        assert len(function["path"].split("/")) == 2  # root port, device
        assert function["driver"] == "e1000e"  # guest-kernel: the guest's driver has it
    multi = [f for f in functions if f["host"] in topology.NIC_MULTI]
    assert len({f["guest_bdf"][:-2] for f in multi}) == 1, multi  # one slot, two functions
    assert sorted(f["guest_bdf"][-1] for f in multi) == ["0", "1"]


def test_seed_e2e_inner_annotations_select_the_device_in_guest_pci_order(lab: Any) -> None:
    scenario = _scenario(lab, "root-port", "resolve", "index")
    added = scenario["container"]["annotations_added"]
    assert set(added) == {f"cdi.k8s.io/{d['id']}" for d in scenario["resolved"]}
    for device in scenario["resolved"]:
        values = added[f"cdi.k8s.io/{device['id']}"].split(",")
        annotated = sorted(int(v.removeprefix(f"{KIND}=")) for v in values)
        assert annotated == sorted(f["kind_index"] for f in device["functions"]), device
    # every guest function of the kind is some device's, each index once
    indices = sorted(f["kind_index"] for f in _functions(scenario))
    assert indices == list(range(len(indices)))
    container = scenario["container"]
    assert container["annotations_removed"] == ["cdi.k8s.io/seed"]
    assert not [p for p in container["spec_devices"] if p.startswith("/dev/vfio")]
    assert all(d["type"] == "vfio-pci-gk" for d in container["agent_devices"])


def test_seed_e2e_switch_port_vfio_mode_behind_a_viommu(lab: Any) -> None:
    scenario = _scenario(lab, "switch-port", "plan", "launch", "guest-boot", "resolve")
    assert scenario["plan"]["topology"] == "switch-port"
    assert scenario["plan"]["iommu"]
    functions = _functions(scenario)
    assert {f["host"] for f in functions} == {topology.NIC_SINGLE, topology.NIC_SWITCH}
    for function in functions:
        assert len(function["path"].split("/")) >= 3, function  # root port, switch, device
        assert (function["vendor"], function["device"]) == E1000E
        # the agent's part in vfio mode: vfio-pci in the guest, a group node for the container
        assert function["vfio_driver"] == "vfio-pci", function
        assert function["group_node"] is True, function
    assert all(d["type"] == "vfio-pci" for d in scenario["container"]["agent_devices"])
    assert scenario["container"]["annotations_added"] == {}


def test_seed_e2e_numa_device_sits_behind_an_expander_of_its_node(lab: Any) -> None:
    scenario = _scenario(lab, "numa", "plan", "launch", "guest-boot", "resolve", "index")
    plan = scenario["plan"]
    # L1's NIC of node 1 (behind L1's own expander) gets an expander in L2; a NIC of no
    # node stays on the root bus.
    expanders = {e["id"]: e for e in plan["expanders"]}
    hosts = {e["host_numa_node"] for e in expanders.values()}
    assert topology.NUMA_EXPANDER_NODE in hosts, plan["expanders"]
    assert plan["numa_argv"], "no guest NUMA node on QEMU's command line"
    by_host = {f["bdf"]: f for f in plan["functions"]}
    numa_port = plan["ports"][by_host[topology.NIC_NUMA]["port"]]
    expander = expanders.get(numa_port["bus"])
    assert expander is not None and expander["host_numa_node"] == topology.NUMA_EXPANDER_NODE
    functions = {f["host"]: f for f in _functions(scenario)}
    assert set(functions) == {topology.NIC_SINGLE, topology.NIC_NUMA}
    seen = functions[topology.NIC_NUMA]
    # the agent's path starts at the expander's root bus, and L2's kernel puts the device on
    # the expander's guest node (its ACPI proximity)
    assert seen["path"].split("/")[0] == f"{expander['bus_nr']:02x}", seen
    assert int(seen["guest_bdf"].split(":")[1], 16) > expander["bus_nr"], seen
    assert seen["numa_node"] == expander["guest_numa_node"], seen
    assert (seen["vendor"], seen["device"]) == E1000E
    assert seen["driver"] == "e1000e"


def test_seed_e2e_a_two_function_group_is_refused_behind_a_viommu_at_plan_time(
    lab: Any,
) -> None:
    refusal = _seed(lab)["viommu_refusal"]
    assert "error" not in refusal, refusal["error"]
    assert refusal["rc"] == 1, refusal  # a finding: the input is well-formed
    assert all(bdf in refusal["stderr"] for bdf in topology.NIC_MULTI), refusal["stderr"]
    assert "virtual IOMMU" in refusal["stderr"]
    assert "Traceback" not in refusal["stderr"]
    assert refusal["bundle_unchanged"] and not refusal["runtime_dir_made"], refusal


def test_seed_e2e_pod_resources_choose_the_devices(lab: Any) -> None:
    scenario = _scenario(lab, "switch-port", "podresources", "plan", "resolve")
    plan = scenario["plan"]
    assert "seed/seed-pod" in plan["device_source"], plan["device_source"]
    assert plan["cdi_devices"] == scenario["requested"]
    assert any(call.startswith(("Get seed/seed-pod", "List")) for call in scenario["kubelet_calls"])


def test_seed_e2e_hotplug_appears_at_the_reported_path_and_unplug_removes_it(lab: Any) -> None:
    scenario = _scenario(lab, "root-port", "hotplug", "unplug")
    hotplug, unplug = scenario["hotplug"], scenario["unplug"]
    paths = hotplug["cli"]["guest_pci_paths"]
    assert len(paths) == 1
    assert [w["path"] for w in hotplug["seen"]] == paths
    for seen in hotplug["seen"]:
        assert seen["found"] == "yes", seen
        assert (seen["vendor"], seen["device"]) == E1000E
    assert [w["found"] for w in unplug["gone"]] == ["no"] * len(paths)
    assert not set(unplug["cli"]["removed"]) & set(unplug["peripherals"])
    iommufd = hotplug["cli"]["iommufd"]
    if _seed(lab)["mode"] == "cdev":
        assert iommufd and iommufd in hotplug["objects"]
        assert unplug["cli"]["iommufd_deleted"] == iommufd
        assert iommufd not in unplug["objects"], unplug["objects"]
    else:
        assert iommufd is None


def test_seed_e2e_timing_is_split_and_has_a_baseline(lab: Any) -> None:
    facts = _seed(lab)
    for name in ("baseline", "root-port"):
        scenario = _scenario(lab, name, "plan", "launch", "guest-boot")
        timing = scenario["timing"]
        parts = [timing["plan_s"], timing["qemu_start_s"], timing["guest_boot_s"]]
        assert all(part > 0 for part in parts), timing
        # the parts add up to the whole (the rest is the gaps between the steps)
        assert sum(parts) <= timing["to_devices_s"] + 0.5, timing
    assert facts["scenarios"]["baseline"]["plan"]["functions"] == []
