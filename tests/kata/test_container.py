"""The container-create plan: no second injection, inner annotations, agent devices."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox_hosts import Zoo, cdi_registry, oci_spec

from kata_vfio.errors import InvalidInputError, PlanError
from kata_vfio.kata.config import KataConfig
from kata_vfio.kata.container import SandboxView, plan_container
from kata_vfio.kata.sandbox import SandboxPlan, plan_sandbox

SEED = {"cdi.k8s.io/vfio": "nvidia.com/pgpu=0"}
CRI_CONTAINER = {"io.kubernetes.cri.container-type": "container"}
CRI_SANDBOX = {"io.kubernetes.cri.container-type": "sandbox"}


def _sandbox(zoo: Zoo, config: KataConfig, nodes: list[str], **kwargs: Any) -> SandboxPlan:
    server, _names = zoo
    return plan_sandbox(oci_spec(nodes), host=server.host, config=config, **kwargs)


def _container(
    nodes: list[str], annotations: dict[str, str] | None = None, **kw: Any
) -> dict[str, Any]:
    return oci_spec(nodes, annotations={**CRI_CONTAINER, **(annotations or {})}, **kw)


def test_seed_scenario_end_to_end(zoo: Zoo, nvidia_config: KataConfig, tmp_path: Path) -> None:
    """The same annotation on the sandbox and the container: injected once (at sandbox
    creation), no error at container creation, annotations gone from both specs, and the
    guest gets the inner annotation for its own CDI spec."""
    server, names = zoo
    registry = cdi_registry(server, tmp_path / "cdi", [names["gpu0"][0], names["gpu1"][0]])
    sandbox = plan_sandbox(
        oci_spec(annotations={**SEED, **CRI_SANDBOX}),
        host=server.host,
        config=nvidia_config,
        registry=registry,
    )
    # containerd applies the outer CDI edits to the container spec itself (same library here)
    outer = registry.inject(
        oci_spec(annotations={**SEED, **CRI_CONTAINER}), ["nvidia.com/pgpu=0"]
    ).spec
    devices_before = [d["path"] for d in outer["linux"]["devices"]]
    plan = plan_container(outer, sandbox)

    assert plan.annotations_removed == ("cdi.k8s.io/vfio",)
    group = server.group_node(names["gpu0"][0])
    number = group.rsplit("/", 1)[1]
    assert plan.annotations_added == {f"cdi.k8s.io/vfio{number}": "nvidia.com/gpu=0"}
    assert plan.spec["annotations"] == {
        **CRI_CONTAINER,
        f"cdi.k8s.io/vfio{number}": "nvidia.com/gpu=0",
    }
    assert "cdi.k8s.io/vfio" not in sandbox.spec.get("annotations", {})
    # nothing injected a second time: the spec only lost nodes (guest-kernel mode)
    assert devices_before.count(group) == 1
    assert plan.removed_devices == tuple(sorted([group, "/dev/vfio/vfio"]))
    assert plan.spec["linux"]["devices"] == []
    assert plan.spec["linux"]["resources"]["devices"] == []  # their cgroup rules went too
    (agent,) = plan.agent_devices
    assert agent.to_document() == {
        "type": "vfio-pci-gk",
        "id": f"vfio{number}",
        "container_path": group,
        "options": [f"{names['gpu0'][0]}=08/00", f"{names['gpu0'][1]}=08/00.1"],
        "vm_path": "",
    }
    assert plan.hotplug == ()


def test_container_plan_is_deterministic_and_leaves_its_input_alone(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    server, names = zoo
    node = server.group_node(names["gpu0"][0])
    sandbox = _sandbox(zoo, nvidia_config, [node])
    spec = _container([node, "/dev/vfio/vfio"], SEED)
    before = json.dumps(spec, sort_keys=True)
    first = json.dumps(plan_container(spec, sandbox).to_document(), sort_keys=True)
    assert json.dumps(plan_container(spec, sandbox).to_document(), sort_keys=True) == first
    assert json.dumps(spec, sort_keys=True) == before


def test_mixed_kinds_get_per_kind_indices_in_guest_pci_order(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    server, names = zoo
    order = ["gpu0", "gpu1", "nvswitch0", "nic0", "nic1", "mi300x", "arc", "nvme"]
    nodes = {n: server.group_node(names[n][0]) for n in order}
    sandbox = _sandbox(zoo, _config(nvidia_config, pcie_root_port=8), list(nodes.values()))
    # the container gets all but the first GPU: indices still count the whole sandbox
    plan = plan_container(_container([nodes[n] for n in reversed(order[1:])]), sandbox)
    key = {n: f"cdi.k8s.io/vfio{nodes[n].rsplit('/', 1)[1]}" for n in order}
    assert plan.annotations_added == dict(
        sorted(
            {
                key["gpu1"]: "nvidia.com/gpu=1",
                key["nic0"]: "nvidia.com/nic=0",
                key["nic1"]: "nvidia.com/nic=1",
                key["mi300x"]: "amd.com/gpu=0",
                key["arc"]: "intel.com/gpu=0",
            }.items()
        )
    )
    # NVSwitch and NVMe have no guest kind: an agent device but no annotation
    assert {a.container_path for a in plan.agent_devices} == {nodes[n] for n in order[1:]}


def test_indices_follow_numeric_port_order_beyond_ten_ports(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    """Kata sorts by port name, so rp10 came before rp2; here the guest PCI order counts."""
    server, names = zoo
    wanted = ["gpu0", "gpu1", "h100a", "h100b"] + [f"extra{i}" for i in range(6)] + ["mi300x"]
    nodes = [server.group_node(names[n][0]) for n in wanted]
    sandbox = _sandbox(zoo, _config(nvidia_config, pcie_root_port=12), nodes)
    plan = plan_container(_container(nodes), sandbox)
    values = [plan.annotations_added[f"cdi.k8s.io/vfio{n.rsplit('/', 1)[1]}"] for n in nodes]
    assert values == [f"nvidia.com/gpu={i}" for i in range(10)] + ["amd.com/gpu=0"]
    # the last GPU sits on rp10: string order would have put it before rp2 and given it index 2
    ports = {
        f.port for d in sandbox.devices for f in d.functions if str(f.bdf) == names["extra5"][0]
    }
    assert ports == {"rp10"}


def _devno(zoo: Zoo, path: str) -> tuple[int, int]:
    node = zoo[0].host.resolve_devnode(path)
    assert node.major is not None and node.minor is not None
    return (node.major, node.minor)


def test_devices_are_recognised_by_major_minor(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    node = server.group_node(names["h100a"][0])
    numbers = _devno(zoo, node)
    # the sandbox spec gives no numbers: the plan keeps the host node's
    sandbox = plan_sandbox(oci_spec([node]), host=server.host, config=nvidia_config)
    assert sandbox.devices[0].nodes[0].devno == numbers
    # the container sees the node under another path, with the same numbers
    plan = plan_container(_container(["/dev/vfio/77"], devnos={"/dev/vfio/77": numbers}), sandbox)
    assert [a.options for a in plan.agent_devices] == [(f"{names['h100a'][0]}=08/00",)]
    assert [a.container_path for a in plan.agent_devices] == ["/dev/vfio/77"]
    # the same path with another node's numbers is another device: not in the sandbox
    other = _devno(zoo, server.group_node(names["nic1"][0]))
    with pytest.raises(PlanError, match="not cold-plugged"):
        plan_container(_container([node], devnos={node: other}), sandbox)


def test_sandbox_nodes_are_the_host_nodes_their_numbers_name(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    """An OCI path is the container's (a CDI node may map host /dev/vfio/15 to another
    path); Kata finds the host node from major:minor, and so do we."""
    server, names = zoo
    node = server.group_node(names["h100a"][0])
    spec = oci_spec(["/dev/vfio/77"], devnos={"/dev/vfio/77": _devno(zoo, node)})
    sandbox = plan_sandbox(spec, host=server.host, config=nvidia_config)
    (device,) = sandbox.devices
    assert [str(f.bdf) for f in device.functions] == names["h100a"]
    assert (device.nodes[0].path, device.nodes[0].host_path) == ("/dev/vfio/77", node)
    # the stored plan keeps both
    view = SandboxView.from_document(json.loads(json.dumps(sandbox.to_document())))
    assert view.devices[0].nodes[0].host_path == node
    # numbers that name a control node are refused, naming both
    control = oci_spec([node], devnos={node: _devno(zoo, "/dev/vfio/vfio")})
    with pytest.raises(PlanError, match=r"is /dev/vfio/vfio on this host, not a VFIO"):
        plan_sandbox(control, host=server.host, config=nvidia_config)


def test_cdev_in_container_matches_a_group_in_the_sandbox(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    server, names = zoo
    sandbox = _sandbox(zoo, nvidia_config, [server.group_node(names["gpu0"][0])])
    cdev = server.cdev_node(names["gpu0"][0])
    plan = plan_container(_container([cdev]), sandbox)
    (agent,) = plan.agent_devices
    assert agent.id == f"vfio{cdev.rsplit('vfio', 1)[1]}"
    assert agent.options == (f"{names['gpu0'][0]}=08/00",)  # only the cdev's own function


def test_vfio_mode_keeps_nodes_and_requires_a_guest_iommu(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    server, names = zoo
    node = server.group_node(names["nic0"][0])
    sandbox = _sandbox(zoo, _config(nvidia_config, vfio_mode="vfio", enable_iommu=True), [node])
    plan = plan_container(_container([node, "/dev/vfio/vfio"], SEED), sandbox)
    assert [d["path"] for d in plan.spec["linux"]["devices"]] == [node, "/dev/vfio/vfio"]
    assert plan.annotations_added == {}
    assert [a.type for a in plan.agent_devices] == ["vfio-pci"]
    view = dataclasses.replace(SandboxView.from_plan(sandbox), guest_iommu=False)
    with pytest.raises(PlanError, match="needs a guest IOMMU"):
        plan_container(_container([node]), view)


def test_malformed_vfio_path_in_a_container_is_refused(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    sandbox = _sandbox(zoo, nvidia_config, [server.group_node(names["gpu0"][0])])
    with pytest.raises(PlanError, match="'/dev/vfio/gpu0' is under /dev/vfio/"):
        plan_container(_container(["/dev/vfio/gpu0"]), sandbox)


def test_pause_container_gets_nothing(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    node = server.group_node(names["gpu0"][0])
    sandbox = _sandbox(zoo, nvidia_config, [node])
    for marker in (
        {"io.kubernetes.cri.container-type": "sandbox"},
        {"io.kubernetes.cri-o.ContainerType": "sandbox"},
        {"io.katacontainers.pkg.oci.container_type": "pod_sandbox"},
    ):
        plan = plan_container(oci_spec([node], annotations={**marker, **SEED}), sandbox)
        assert plan.sandbox_container
        assert plan.agent_devices == () and plan.annotations_added == {}
        assert plan.spec["annotations"] == marker  # outer annotation stripped all the same


def test_device_not_in_the_sandbox_is_refused_or_left_for_hot_plug(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    server, names = zoo
    sandbox = _sandbox(zoo, nvidia_config, [server.group_node(names["gpu0"][0])])
    other = server.group_node(names["gpu1"][0])
    with pytest.raises(PlanError, match="was not cold-plugged") as info:
        plan_container(_container([other]), sandbox)
    assert "Pod Resources" in (info.value.hint or "")
    hot = _config(
        nvidia_config, cold_plug_vfio="no-port", hot_plug_vfio="root-port", pcie_root_port=1
    )
    hot_sandbox = _sandbox(zoo, hot, [])
    plan = plan_container(_container([other]), hot_sandbox)
    assert plan.hotplug == (other,) and plan.agent_devices == ()
    with pytest.raises(PlanError, match="none is left"):
        plan_container(_container([other, server.group_node(names["nic0"][0])]), hot_sandbox)


def test_plan_from_the_stored_sandbox_document_is_the_same(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    server, names = zoo
    nodes = [server.group_node(names[n][0]) for n in ("gpu0", "nic0")] + [
        server.cdev_node(names["h100a"][0])
    ]
    sandbox = _sandbox(zoo, nvidia_config, nodes)
    document = json.loads(json.dumps(sandbox.to_document()))
    view = SandboxView.from_document(document)
    assert view == SandboxView.from_plan(sandbox)
    spec = _container(nodes, SEED)
    assert plan_container(spec, view).to_document() == plan_container(spec, sandbox).to_document()


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"config": {}, "devices": [], "ports": []},
        {
            "config": {"vfio_mode": "vfio", "enable_iommu": "yes", "hot_plug_vfio": "no-port"},
            "devices": [],
            "ports": [],
        },
        {
            "config": {"vfio_mode": "vfio", "enable_iommu": True, "hot_plug_vfio": "no-port"},
            "devices": [3],
            "ports": [],
        },
        {
            "config": {"vfio_mode": "vfio", "enable_iommu": True, "hot_plug_vfio": "no-port"},
            "devices": [
                {
                    "group": 1,
                    "backend": "legacy",
                    "plug": "cold",
                    "nodes": [],
                    "functions": [{"bdf": "zz"}],
                }
            ],
            "ports": [],
        },
    ],
)
def test_broken_sandbox_documents_are_input_errors(document: object) -> None:
    with pytest.raises(InvalidInputError):
        SandboxView.from_document(document)


def _config(base: KataConfig, **changes: object) -> KataConfig:
    return dataclasses.replace(base, **changes).validate()  # type: ignore[arg-type]


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.text(max_size=8)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_DEVICE_KEYS = st.sampled_from(["group", "backend", "plug", "iommufd", "nodes", "functions"])


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "config": st.one_of(
                _JSON,
                st.fixed_dictionaries(
                    {
                        "vfio_mode": st.sampled_from(["vfio", "guest-kernel", "x"]),
                        "enable_iommu": st.booleans(),
                        "hot_plug_vfio": st.just("no-port"),
                    }
                ),
            ),
            "devices": st.lists(st.one_of(_JSON, st.dictionaries(_DEVICE_KEYS, _JSON)), max_size=2),
            "ports": st.one_of(
                _JSON, st.lists(st.dictionaries(st.sampled_from(["id", "free"]), _JSON))
            ),
        }
    )
)
def test_any_stored_plan_document_loads_or_is_an_input_error(document: dict[str, Any]) -> None:
    try:
        view = SandboxView.from_document(document)
    except InvalidInputError as exc:
        assert str(exc)
    else:
        assert view.vfio_mode in ("vfio", "guest-kernel")
