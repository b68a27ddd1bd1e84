"""Guest PCI paths as the Kata agent reads them, and the agent's device options checked
against the agent's path grammar and the rules genpolicy enforces (its settings and regexes)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from sandbox_hosts import KATA_CONFIGS, Zoo, oci_spec

from kata_vfio.kata.config import KataConfig
from kata_vfio.kata.container import plan_container
from kata_vfio.kata.sandbox import plan_sandbox

GENPOLICY = KATA_CONFIGS.parent / "oci-bundles" / "kata-genpolicy-testdata"
# src/tools/genpolicy/rules.rego: VFIO_PCI_ADDRESS_REGEX (root-port topologies only).
GENPOLICY_OPTION = re.compile(
    r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[01][0-9a-fA-F]\.[0-7]=[0-9a-fA-F]{2}/[0-9a-fA-F]{2}$"
)
CRI_CONTAINER = {"io.kubernetes.cri.container-type": "container"}


def _config(base: KataConfig, **changes: object) -> KataConfig:
    return dataclasses.replace(base, **changes).validate()  # type: ignore[arg-type]


def _agent_path(path: str) -> tuple[int, list[tuple[int, int]]]:
    """The agent's reading of a guest path (linux_abi.rs pcipath_from_dev_tree_path and
    pci.rs Path/SlotFn): an optional pxb root bus (first of 3+ elements, >= 0x20), then
    ``SS[.F]`` elements."""
    parts = path.split("/")
    root = 0
    if len(parts) >= 3 and int(parts[0], 16) >= 0x20:
        root = int(parts.pop(0), 16)
    elements = []
    for part in parts:
        slot, _, function = part.partition(".")
        elements.append((int(slot, 16), int(function or "0", 16)))
    assert all(s <= 0x1F and f <= 7 for s, f in elements)
    return root, elements


def test_every_function_of_a_multifunction_device_gets_its_own_guest_path(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    """The agent maps the function at each option's path; the audio function must not point
    at the GPU's function 0. (Guest-kernel mode: a two-function group is refused behind the
    vIOMMU that vfio mode needs, see test_sandbox.)"""
    server, names = zoo
    node = server.group_node(names["gpu0"][0])
    config = _config(nvidia_config, vfio_mode="guest-kernel")
    sandbox = plan_sandbox(oci_spec([node]), host=server.host, config=config)
    (agent,) = plan_container(oci_spec([node], annotations=CRI_CONTAINER), sandbox).agent_devices
    gpu, audio = names["gpu0"]
    assert agent.options == (f"{gpu}=08/00", f"{audio}=08/00.1")
    assert [_agent_path(o.split("=")[1]) for o in agent.options] == [
        (0, [(8, 0), (0, 0)]),
        (0, [(8, 0), (0, 1)]),
    ]
    placed = {str(f.bdf): f for d in sandbox.devices for f in d.functions}
    assert [placed[b].guest_function for b in (gpu, audio)] == [0, 1]


def test_devices_on_numa_expanders_name_the_expander_root_bus(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    server, names = zoo
    nodes = [server.group_node(names[n][0]) for n in ("gpu0", "h100b")]
    config = _config(nvidia_config, enable_numa=True, pcie_root_port=0)
    sandbox = plan_sandbox(oci_spec(nodes), host=server.host, config=config)
    plan = plan_container(oci_spec(nodes, annotations=CRI_CONTAINER), sandbox)
    options = [o for a in plan.agent_devices for o in a.options]
    gpu, audio = names["gpu0"]
    assert options == [
        f"{gpu}=20/00/00",
        f"{audio}=20/00/00.1",
        f"{names['h100b'][0]}=40/00/00",
    ]
    # the root bus is the expander's bus_nr on the QEMU command line
    buses = {e.id: e.bus_nr for e in sandbox.topology.expanders}
    assert buses == {"pxb0": 0x20, "pxb1": 0x40}
    assert [_agent_path(o.split("=")[1])[0] for o in options] == [0x20, 0x20, 0x40]


def test_genpolicy_rules_accept_a_two_gpu_cdev_container(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    """The shape of genpolicy's allowed "2 GPUs with properly correlated VFIO devices and CDI
    annotations" request, produced from our plans and checked with genpolicy's own settings."""
    settings_file = GENPOLICY / "genpolicy-settings.json"
    cases_file = GENPOLICY / "createcontainer-gpu_vfio_cdi" / "testcases.json"
    if not settings_file.is_file() or not cases_file.is_file():
        pytest.skip(f"genpolicy test data not found under {GENPOLICY}")
    vfio = json.loads(settings_file.read_text())["devices"]["vfio"]
    allowed = next(c for c in json.loads(cases_file.read_text()) if c["allowed"])
    expected_keys = set(allowed["request"]["devices"][0])

    server, names = zoo
    nodes = [server.cdev_node(names[n][0]) for n in ("h100a", "h100b")]
    sandbox = plan_sandbox(oci_spec(nodes), host=server.host, config=nvidia_config)
    plan = plan_container(oci_spec(nodes, annotations=CRI_CONTAINER), sandbox)

    devices = [
        {("type_" if k == "type" else k): v for k, v in d.to_document().items()}
        for d in plan.agent_devices
    ]
    assert len(devices) == 2 and all(set(d) == expected_keys for d in devices)
    numbers = []
    for device in devices:
        assert device["container_path"].startswith(vfio["device_path"])
        suffix = device["container_path"][len(vfio["device_path"]) :]
        assert device["id"] == f"vfio{suffix}"
        assert device["type_"] == vfio["nvidia"]["gpu_gk_device_type"]
        assert device["options"] and all(GENPOLICY_OPTION.match(o) for o in device["options"])
        numbers.append(suffix)
    annotations = {k: v for k, v in plan.spec["annotations"].items() if k.startswith("cdi.k8s.io/")}
    assert all(re.match(vfio["anno_key_regex"], k) for k in annotations)
    assert all(re.match(vfio["nvidia"]["gpu_anno_value_regex"], v) for v in annotations.values())
    assert {k[len("cdi.k8s.io/vfio") :] for k in annotations} == set(numbers)
    assert sorted(annotations.values()) == ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]
