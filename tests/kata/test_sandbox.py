"""The sandbox-create plan on fake hosts: injection, stripping, expansion, topology, argv."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox_hosts import Zoo, cdi_registry, gpu_server, oci_spec

from kata_vfio.errors import (
    CdiInjectionError,
    CdiNameError,
    ConfigError,
    KataVfioError,
    NotAssignableError,
    PlanError,
)
from kata_vfio.kata.config import KataConfig
from kata_vfio.kata.sandbox import SandboxPlan, plan_sandbox

GIB = 1 << 30
MIB = 1 << 20


def _config(base: KataConfig, **changes: object) -> KataConfig:
    return dataclasses.replace(base, **changes).validate()  # type: ignore[arg-type]


def _plan(zoo: Zoo, config: KataConfig, nodes: list[str], **kwargs: object) -> SandboxPlan:
    server, _names = zoo
    return plan_sandbox(oci_spec(nodes), host=server.host, config=config, **kwargs)  # type: ignore[arg-type]


def _devices(plan: SandboxPlan, driver: str) -> list[dict[str, str]]:
    """The ``-device`` options of one driver, as dicts."""
    return [
        {"driver": d.head or "", **dict(d.props)}
        for d in plan.command.opts("-device")
        if d.head == driver
    ]


def test_seed_scenario_sandbox_injects_once_and_strips_the_annotation(
    zoo: Zoo, nvidia_config: KataConfig, tmp_path: Path
) -> None:
    server, names = zoo
    registry = cdi_registry(server, tmp_path / "cdi", [names["gpu0"][0], names["gpu1"][0]])
    spec = oci_spec(
        annotations={"cdi.k8s.io/vfio": "nvidia.com/pgpu=0", "io.kubernetes.cri.sandbox-id": "5f0c"}
    )
    before = json.dumps(spec, sort_keys=True)
    plan = plan_sandbox(spec, host=server.host, config=nvidia_config, registry=registry)

    assert json.dumps(spec, sort_keys=True) == before  # the input is never changed
    assert plan.cdi_devices == ("nvidia.com/pgpu=0",)
    assert plan.annotations_removed == ("cdi.k8s.io/vfio",)
    assert not any(k.startswith("cdi.k8s.io/") for k in plan.spec.get("annotations", {}))
    assert plan.spec["annotations"] == {"io.kubernetes.cri.sandbox-id": "5f0c"}
    paths = [d["path"] for d in plan.spec["linux"]["devices"]]
    group_node = server.group_node(names["gpu0"][0])
    assert paths.count(group_node) == 1 and paths.count("/dev/vfio/vfio") == 1
    # Both functions of the GPU's group are cold-plugged, on one port, as one device.
    vfio = _devices(plan, "vfio-pci")
    assert [(d["host"], d["bus"], d["addr"], d.get("multifunction")) for d in vfio] == [
        (names["gpu0"][0], "rp0", "00.0", "on"),
        (names["gpu0"][1], "rp0", "00.1", None),
    ]
    assert plan.control_nodes == ("/dev/vfio/vfio",)
    assert plan.qemu_argv[0] == "/opt/kata/bin/qemu-system-x86_64"
    assert (
        plan.command.values("-name")
        and plan.qemu_argv[plan.qemu_argv.index("-name") + 1] == "sandbox-5f0c"
    )


def test_explicit_cdi_names_replace_the_annotations_but_annotations_are_still_stripped(
    zoo: Zoo, nvidia_config: KataConfig, tmp_path: Path
) -> None:
    server, names = zoo
    registry = cdi_registry(server, tmp_path / "cdi", [names["gpu0"][0], names["gpu1"][0]])
    spec = oci_spec(annotations={"cdi.k8s.io/gpu": "nvidia.com/pgpu=0"})
    plan = plan_sandbox(
        spec,
        host=server.host,
        config=nvidia_config,
        registry=registry,
        cdi_names=["nvidia.com/pgpu=1", "nvidia.com/pgpu=1"],
    )
    assert plan.cdi_devices == ("nvidia.com/pgpu=1",)  # asked twice, one device
    assert [str(f.bdf) for d in plan.devices for f in d.functions] == names["gpu1"]
    assert plan.annotations_removed == ("cdi.k8s.io/gpu",)


def test_unresolvable_cdi_name_fails_before_anything_else(
    zoo: Zoo, nvidia_config: KataConfig, tmp_path: Path
) -> None:
    server, names = zoo
    registry = cdi_registry(server, tmp_path / "cdi", [names["gpu0"][0]])
    with pytest.raises(CdiInjectionError, match=r"nvidia\.com/pgpu=vfio1"):
        plan_sandbox(
            oci_spec(annotations={"cdi.k8s.io/vfio": "nvidia.com/pgpu=vfio1"}),
            host=server.host,
            config=nvidia_config,
            registry=registry,
        )
    with pytest.raises(CdiNameError):
        plan_sandbox(
            oci_spec(),
            host=server.host,
            config=nvidia_config,
            registry=registry,
            cdi_names=["not a name"],
        )
    with pytest.raises(PlanError, match="no CDI registry"):
        plan_sandbox(
            oci_spec(annotations={"cdi.k8s.io/vfio": "nvidia.com/pgpu=0"}),
            host=server.host,
            config=nvidia_config,
        )


def test_real_nvidia_ctk_vfio_spec_cold_plugs_its_group(
    nvidia_config: KataConfig, tmp_path: Path
) -> None:
    """nvidia-ctk's own vfio-mode spec (device "0" is /dev/vfio/5) on a host where group 5 is
    a GPU with its audio function."""
    from sandbox_hosts import KATA_CONFIGS, ServerBuilder

    from kata_vfio.cdi import DevfsLookup, Registry

    source = (
        KATA_CONFIGS.parent
        / "cdi-specs"
        / "nvidia-container-toolkit"
        / "nvcdi-vfio-mode-pgpu-iommu-group.yaml"
    )
    if not source.is_file():
        pytest.skip(f"{source} not found")
    builder = ServerBuilder(next_group=4)
    gpu, audio = builder.add("l40s", audio=True)
    server = builder.build(tmp_path / "host")
    assert server.group_node(gpu) == "/dev/vfio/5"
    spec_dir = tmp_path / "cdi"
    spec_dir.mkdir()
    (spec_dir / "nvidia.yaml").write_bytes(source.read_bytes())
    registry = Registry([spec_dir], device_lookup=DevfsLookup(server.dev_root, server.sysfs_root))
    plan = plan_sandbox(
        oci_spec(annotations={"cdi.k8s.io/vfio": "nvidia.com/pgpu=0"}),
        host=server.host,
        config=nvidia_config,
        registry=registry,
    )
    assert [str(f.bdf) for f in plan.devices[0].functions] == [gpu, audio]
    assert plan.annotations_removed == ("cdi.k8s.io/vfio",)


def test_two_gpus_and_an_nvswitch_get_a_port_each(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    nodes = [server.group_node(names[n][0]) for n in ("nvswitch0", "gpu1", "gpu0")]
    plan = _plan(zoo, nvidia_config, nodes)
    placed = {
        str(f.bdf): (f.port, f.guest_function, f.kind) for d in plan.devices for f in d.functions
    }
    assert placed == {
        names["gpu0"][0]: ("rp0", 0, "nvidia.com/gpu"),
        names["gpu0"][1]: ("rp0", 1, None),
        names["gpu1"][0]: ("rp1", 0, "nvidia.com/gpu"),
        names["gpu1"][1]: ("rp1", 1, None),
        names["nvswitch0"][0]: ("rp2", 0, None),  # an endpoint with no CDI kind
    }
    assert plan.free_ports == tuple(f"rp{i}" for i in range(3, 8))  # pcie_root_port = 8


def test_more_than_sixteen_devices_is_refused(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    usable = [n for n in names if n not in ("busy_audio", "unbound")]
    assert len(usable) == 17
    with pytest.raises(PlanError, match="at most 16"):
        _plan(zoo, nvidia_config, [server.group_node(names[n][0]) for n in usable])
    sixteen = _plan(zoo, nvidia_config, [server.group_node(names[n][0]) for n in usable[:16]])
    assert len(sixteen.topology.ports) == 16


def test_a_group_that_is_not_assignable_is_refused_before_launch(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    server, names = zoo
    with pytest.raises(NotAssignableError, match="snd_hda_intel") as info:
        _plan(zoo, nvidia_config, [server.group_node(names["busy_audio"][0])])
    assert "kata-vfio bind" in (info.value.hint or "")


def test_cdev_and_group_devices_in_one_sandbox(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    nodes = [
        server.cdev_node(names["gpu0"][0]),
        server.group_node(names["h100a"][0]),
        server.cdev_node(names["nic0"][0]),
    ]
    plan = _plan(zoo, nvidia_config, nodes)
    by_group = {d.group: d for d in plan.devices}
    assert [d.backend for d in plan.devices] == ["iommufd", "legacy", "iommufd"]
    assert {d.iommufd for d in plan.devices} == {"iommufd0", None}
    assert [o.render() for o in plan.command.opts("-object") if o.head == "iommufd"] == [
        "iommufd,id=iommufd0"
    ]
    vfio = _devices(plan, "vfio-pci")
    assert [d.get("iommufd") for d in vfio] == ["iommufd0", "iommufd0", None, "iommufd0"]
    # the cdev node expanded to the GPU's audio function too, through its own cdev
    gpu_group = server.host.group_of(names["gpu0"][0])
    assert gpu_group is not None
    assert [f.cdev for f in by_group[gpu_group.id].functions] == [
        server.cdev_node(b).rsplit("/", 1)[1] for b in names["gpu0"]
    ]


def test_vfio_mode_needs_a_guest_iommu(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    node = server.group_node(names["nic0"][0])
    with pytest.raises(PlanError, match="needs a guest IOMMU"):
        _plan(zoo, _config(nvidia_config, vfio_mode="vfio"), [node])
    plan = _plan(zoo, _config(nvidia_config, vfio_mode="vfio", enable_iommu=True), [node])
    devices = plan.command.opts("-device")
    assert devices[0].render() == "intel-iommu,intremap=on,caching-mode=on"
    assert plan.command.opts("-accel")[0].render() == "kvm,kernel-irqchip=split"
    tcg = _plan(
        zoo, _config(nvidia_config, vfio_mode="vfio", enable_iommu=True), [node], accel="tcg"
    )
    assert tcg.command.opts("-accel")[0].render() == "tcg"
    append = plan.qemu_argv[plan.qemu_argv.index("-append") + 1]
    assert "intel_iommu=on iommu=pt" in append


def test_a_group_of_several_functions_is_refused_behind_a_guest_iommu(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    # The vIOMMU gives each guest function its own address space; the host attaches a group
    # to one. QEMU would refuse at start, so the plan refuses first and names the group.
    server, names = zoo
    gpu = server.group_node(names["gpu0"][0])  # GPU and its audio function: one group
    config = _config(nvidia_config, enable_iommu=True)
    with pytest.raises(PlanError) as refused:
        _plan(zoo, config, [gpu])
    message = str(refused.value)
    assert all(bdf in message for bdf in names["gpu0"]), message
    assert "virtual IOMMU" in message
    assert "enable_iommu = false" in (refused.value.hint or "")
    # without the vIOMMU the same group plans, and a one-function group plans with it
    assert _plan(zoo, nvidia_config, [gpu]).devices
    assert _plan(zoo, config, [server.group_node(names["nic0"][0])]).devices


def test_switch_ports(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    config = _config(
        nvidia_config, cold_plug_vfio="switch-port", pcie_root_port=0, pcie_switch_port=4
    )
    plan = _plan(zoo, config, [server.group_node(names[n][0]) for n in ("gpu0", "nic0")])
    rendered = [d.render() for d in plan.command.opts("-device") if d.head != "vfio-pci"]
    # the switch's root port reserves the window of every device below it (64 GiB + 64 MiB)
    assert (
        "pcie-root-port,id=swrp0,bus=pcie.0,addr=08.0,chassis=1,slot=0,pref64-reserve=65600M"
        in rendered
    )
    assert not any("pref64-reserve" in d for d in rendered if d.startswith("xio3130"))
    assert "x3130-upstream,id=swup0,bus=swrp0" in rendered
    assert [d["id"] for d in _devices(plan, "xio3130-downstream")] == [
        "swdp0",
        "swdp1",
        "swdp2",
        "swdp3",
    ]
    assert [d["bus"] for d in _devices(plan, "vfio-pci")] == ["swdp0", "swdp0", "swdp1"]
    assert plan.devices[0].functions[0].guest_pci_path == "08/00/00/00"
    assert plan.free_ports == ("swdp2", "swdp3")


def test_twelve_ports_in_numeric_order(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    wanted = [
        "gpu0",
        "gpu1",
        "h100a",
        "h100b",
        "nvswitch0",
        "nvswitch1",
        "nic0",
        "nic1",
        "mi300x",
        "arc",
        "nvme",
        "extra0",
    ]
    plan = _plan(
        zoo,
        _config(nvidia_config, pcie_root_port=12),
        [server.group_node(names[n][0]) for n in wanted],
    )
    ports = [d["id"] for d in _devices(plan, "pcie-root-port")]
    assert ports == [f"rp{i}" for i in range(12)]
    # devices in host PCI order on ports in numeric order: rp10 holds the 11th device
    buses = [
        f.port
        for d in sorted(plan.devices, key=lambda d: d.functions[0].bdf)
        for f in d.functions
        if f.guest_function == 0
    ]
    assert buses == ports
    assert [f.guest_pci_path for d in plan.devices for f in d.functions if f.port == "rp10"] == [
        "12/00"
    ]


def test_a_64_gib_bar_gpu_gets_its_window_and_the_hole(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    plan = _plan(zoo, nvidia_config, [server.group_node(names["gpu0"][0])])
    port = _devices(plan, "pcie-root-port")[0]
    assert port["pref64-reserve"] == "65568M"  # 64 GiB + 32 MiB of prefetchable BARs
    assert "q35-pcihost.pci-hole64-size=128G" in plan.qemu_argv
    assert plan.topology.pci_hole64 == 128 * GIB
    fw_cfg = plan.qemu_argv[plan.qemu_argv.index("-fw_cfg") + 1]
    assert fw_cfg == "name=opt/ovmf/X-PciMmio64Mb,string=131072"  # OVMF firmware configured


def test_plan_is_deterministic_and_independent_of_device_order(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    server, names = zoo
    nodes = [server.group_node(names[n][0]) for n in ("nic1", "gpu0", "mi300x", "nvswitch0")]
    first = json.dumps(_plan(zoo, nvidia_config, nodes).to_document(), sort_keys=True)
    again = json.dumps(_plan(zoo, nvidia_config, nodes).to_document(), sort_keys=True)
    assert first == again
    reordered = _plan(zoo, nvidia_config, list(reversed(nodes)))
    assert [d.to_document() for d in reordered.devices] == json.loads(first)["devices"]


def test_hot_plug_mode_reserves_ports_and_keeps_devices_off_the_command_line(
    zoo: Zoo, nvidia_config: KataConfig, tmp_path: Path
) -> None:
    server, names = zoo
    registry = cdi_registry(server, tmp_path / "cdi", [names["gpu0"][0]])
    config = _config(
        nvidia_config, cold_plug_vfio="no-port", hot_plug_vfio="root-port", pcie_root_port=4
    )
    spec = oci_spec(
        [server.group_node(names["nic0"][0])], annotations={"cdi.k8s.io/x": "nvidia.com/pgpu=0"}
    )
    plan = plan_sandbox(spec, host=server.host, config=config, registry=registry)
    assert plan.cdi_devices == ()  # Kata injects at sandbox creation only for cold-plug
    # Nothing injected, so the request stays for whatever plugs the devices later.
    assert plan.annotations_removed == ()
    assert plan.spec["annotations"]["cdi.k8s.io/x"] == "nvidia.com/pgpu=0"
    assert any("not cold-plugged" in w for w in plan.warnings)
    assert [d.plug for d in plan.devices] == ["hot"]
    assert _devices(plan, "vfio-pci") == []
    assert len(_devices(plan, "pcie-root-port")) == 4


def test_no_port_with_vfio_devices_is_refused(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    config = _config(nvidia_config, cold_plug_vfio="no-port", pcie_root_port=0)
    with pytest.raises(PlanError, match="both 'no-port'"):
        _plan(zoo, config, [server.group_node(names["nic0"][0])])


def test_pod_annotations_override_the_configuration(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    spec = oci_spec(
        [server.group_node(names["nic0"][0])],
        annotations={
            "io.katacontainers.config.hypervisor.enable_iommu": "true",
            "io.katacontainers.config.runtime.vfio_mode": "vfio",
        },
    )
    plan = plan_sandbox(spec, host=server.host, config=nvidia_config)
    assert plan.config.enable_iommu and plan.config.vfio_mode == "vfio"
    assert nvidia_config.enable_iommu is False
    spec["annotations"] = {"io.katacontainers.config.hypervisor.pcie_root_port": "2"}
    with pytest.raises(ConfigError, match="not enabled"):
        plan_sandbox(spec, host=server.host, config=nvidia_config)


def test_numa_placement_on_expanders(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    nodes = [server.group_node(names[n][0]) for n in ("gpu0", "h100b", "nic0", "nic1")]
    plan = _plan(zoo, _config(nvidia_config, enable_numa=True, pcie_root_port=0), nodes)
    pxb = _devices(plan, "pxb-pcie")
    assert [(d["id"], d["numa_node"], d["bus_nr"]) for d in pxb] == [
        ("pxb0", "0", "32"),
        ("pxb1", "1", "64"),
    ]
    on = {str(f.bdf): f.port for d in plan.devices for f in d.functions}
    ports = {d["id"]: d["bus"] for d in _devices(plan, "pcie-root-port")}
    assert ports[on[names["h100b"][0]]] == "pxb1" and ports[on[names["gpu0"][0]]] == "pxb0"
    assert len(plan.command.opts("-numa")) == 2


def test_confidential_guest_refuses_legacy_nodes(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    config = _config(nvidia_config, confidential_guest=True)
    with pytest.raises(PlanError, match="IOMMUFD"):
        _plan(zoo, config, [server.group_node(names["gpu0"][0])])
    plan = _plan(zoo, config, [server.cdev_node(names["h100a"][0])])
    assert plan.devices[0].iommufd == "iommufd0"


def test_runtime_dir_puts_the_console_socket_there(zoo: Zoo, nvidia_config: KataConfig) -> None:
    plan = _plan(zoo, nvidia_config, [], runtime_dir="/run/kata-vfio/sb")
    chardev = plan.command.opts("-chardev")[0]
    assert chardev.get("path") == "/run/kata-vfio/sb/console.sock"
    assert "console=ttyS0" in plan.qemu_argv[plan.qemu_argv.index("-append") + 1]
    with pytest.raises(Exception, match="not an absolute path"):
        _plan(zoo, nvidia_config, [], runtime_dir="run/sb")


def test_document_has_the_promised_keys(zoo: Zoo, nvidia_config: KataConfig) -> None:
    server, names = zoo
    document = _plan(zoo, nvidia_config, [server.group_node(names["gpu0"][0])]).to_document()
    assert {"devices", "ports", "qemu_argv", "annotations_removed", "spec"} <= set(document)
    assert json.loads(json.dumps(document)) == document
    assert [p["free"] for p in document["ports"]] == [False] + [True] * 7


_PATHS = st.one_of(
    st.sampled_from(
        [
            "/dev/vfio/11",
            "/dev/vfio/13",
            "/dev/vfio/33",
            "/dev/vfio/35",
            "/dev/vfio/999",
            "/dev/vfio/vfio",
            "/dev/iommu",
            "/dev/vfio/devices/vfio0",
            "/dev/vfio/devices/vfio99",
            "/dev/vfio/noiommu-1",
            "/dev/vfio/../vfio/11",
            "/dev/vfio/11/",
            "/dev/null",
        ]
    ),
    st.text(max_size=20).map(lambda t: "/dev/vfio/" + t),
)
_ANNOTATIONS = st.dictionaries(
    st.sampled_from(
        [
            "cdi.k8s.io/vfio",
            "cdi.k8s.io/x",
            "io.katacontainers.config.hypervisor.enable_iommu",
            "io.katacontainers.config.runtime.vfio_mode",
            "other",
        ]
    ),
    st.one_of(
        st.sampled_from(["nvidia.com/pgpu=0", "true", "vfio", "bogus=", ""]), st.text(max_size=10)
    ),
    max_size=3,
)


@settings(
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    deadline=None,
    max_examples=60,
)
@given(
    st.lists(
        st.fixed_dictionaries({"path": _PATHS}, optional={"major": st.integers(-1, 300)}),
        max_size=5,
    ),
    _ANNOTATIONS,
)
def test_any_sandbox_spec_gives_a_plan_or_a_project_error(
    zoo: Zoo,
    nvidia_config: KataConfig,
    tmp_path: Path,
    devices: list[dict[str, object]],
    annotations: dict[str, str],
) -> None:
    server, names = zoo
    registry = cdi_registry(server, tmp_path / "cdi", [names["gpu0"][0]])
    spec = {"ociVersion": "1.1.0", "annotations": annotations, "linux": {"devices": devices}}
    try:
        plan = plan_sandbox(spec, host=server.host, config=nvidia_config, registry=registry)
    except KataVfioError as exc:
        assert str(exc)
    else:
        assert not any(k.startswith("cdi.k8s.io/") for k in plan.spec.get("annotations", {}))
        assert len(plan.topology.ports) <= 16


def test_a_hypervisor_without_a_backend_is_refused_before_anything_starts(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    server, names = zoo
    clh = dataclasses.replace(nvidia_config, hypervisor="clh", qemu=None).validate()
    with pytest.raises(PlanError, match="hypervisor 'clh' has no backend") as info:
        plan_sandbox(oci_spec([server.group_node(names["gpu0"][0])]), host=server.host, config=clh)
    assert "[hypervisor.qemu]" in (info.value.hint or "")


def test_the_vm_plan_is_neutral_and_the_command_renders_it(
    zoo: Zoo, nvidia_config: KataConfig
) -> None:
    server, names = zoo
    plan = plan_sandbox(
        oci_spec([server.group_node(names["gpu0"][0])]), host=server.host, config=nvidia_config
    )
    assert plan.vm.topology is plan.topology and plan.vm.deferred == ()
    assert [f.device_id for f in plan.vm.functions] == [
        f.device_id for d in plan.devices for f in d.functions
    ]
    assert plan.vm.kernel == nvidia_config.kernel and plan.qemu_argv[0] == nvidia_config.path


def test_unknown_bar_sizes_are_named_in_a_warning(
    tmp_path: Path, nvidia_config: KataConfig
) -> None:
    """An unreadable or malformed ``resource`` is unknown BARs, not "no BARs": the plan says
    whose window it could not size instead of silently planning a too-small one."""
    from kata_vfio import scan

    server = gpu_server(tmp_path / "host", gpus=1, nics=0)
    gpu = next(d for d in server.host.devices if d.class_code >> 16 == 0x03)
    assert gpu.bars  # sized when resource reads fine
    resource = Path(server.sysfs_root, "bus/pci/devices", str(gpu.bdf), "resource")
    resource.write_text("0x0 0xffffffffffffffff 0x200\n")  # 2^64 bytes: not the kernel's
    host = scan(server.sysfs_root, server.dev_root, server.proc_root, details=True)
    assert host.device(gpu.bdf).bars is None
    node = host.group_node(gpu.bdf)
    assert node is not None
    plan = plan_sandbox(oci_spec([node]), host=host, config=nvidia_config)
    (warning,) = [w for w in plan.warnings if "BAR sizes" in w]
    assert str(gpu.bdf) in warning and "unknown" in warning
