"""linux.devices classification, group expansion and assignability, CDI kinds."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sandbox_hosts import ServerBuilder, Zoo, oci_spec

import kata_vfio._core as core
from kata_vfio.errors import InvalidInputError, NotAssignableError, PlanError
from kata_vfio.kata.devices import classify_spec_devices, resolve_groups
from kata_vfio.kata.kinds import cdi_kind, kind_lookup, parse_kind_rule
from kata_vfio.testing import build_host
from kata_vfio.vm.devices import function_id

# Kata's TestIsVFIO table, plus the iommufd nodes: classification is by exact name.
CLASSES = {
    "/dev/vfio/16": "group",
    "/dev/vfio/1": "group",
    "/dev/vfio/": "other",
    "/dev/vfio": "other",
    "/dev/vf": "other",
    "/dev": "other",
    "/dev/vfio/vfio": "container",
    "/dev/vfio/vfio/12": "other",
    "/dev/vfio/devices/vfio0": "cdev",
    "/dev/vfio/devices/vfio": "other",
    "/dev/iommu": "iommufd",
    "/dev/null": "other",
}


def test_linux_devices_are_classified_exactly() -> None:
    spec = oci_spec(list(CLASSES), devnos={"/dev/vfio/16": (243, 16)})
    devices = classify_spec_devices(spec)
    assert {d.path: d.kind for d in devices} == CLASSES
    assert [d.path for d in devices if d.is_vfio_device] == [
        "/dev/vfio/16",
        "/dev/vfio/1",
        "/dev/vfio/devices/vfio0",
    ]
    assert [d.path for d in devices if d.is_control] == ["/dev/vfio/vfio", "/dev/iommu"]
    assert devices[0].devno == (243, 16)
    assert devices[1].devno is None


@pytest.mark.parametrize(
    "path",
    ["/dev/vfio/1a", "/dev/vfio/016", "/dev/vfio/16/", "/dev/vfio/devices/vfio", "/dev/vfio/x/1"],
)
def test_malformed_vfio_paths_are_refused_not_passed_as_other_devices(zoo: Zoo, path: str) -> None:
    """Kata takes these for VFIO nodes (and fails on them later); we refuse them up front
    instead of leaving them in the spec as ordinary devices."""
    server, _names = zoo
    with pytest.raises(PlanError, match="not a VFIO device node"):
        resolve_groups(server.host, classify_spec_devices(oci_spec([path])))


def test_kata_non_vfio_paths_under_dev_vfio_stay_other_devices(zoo: Zoo) -> None:
    server, _names = zoo
    paths = ["/dev/vfio/", "/dev/vfio/vfio/12", "/dev/vfio/vfio", "/dev/vfio"]
    assert resolve_groups(server.host, classify_spec_devices(oci_spec(paths))) == ()


@pytest.mark.parametrize(
    "linux",
    [
        [],
        {"devices": "x"},
        {"devices": [{"type": "c"}]},
        {"devices": [{"path": "/dev/vfio/1", "major": "1"}]},
    ],
)
def test_malformed_linux_devices_are_input_errors(linux: object) -> None:
    with pytest.raises(InvalidInputError):
        classify_spec_devices({"ociVersion": "1", "linux": linux})


def test_a_group_is_expanded_to_all_its_endpoints(zoo: Zoo) -> None:
    server, names = zoo
    gpu, audio = names["gpu0"]
    groups = resolve_groups(server.host, classify_spec_devices(oci_spec([server.group_node(gpu)])))
    assert len(groups) == 1
    (group,) = groups
    assert [str(f.bdf) for f in group.functions] == [gpu, audio]  # not just the first function
    assert len(group.slots) == 1 and group.slots[0].guest_functions == (0, 1)
    assert group.backend == "legacy"
    assert group.functions[0].mmio64 == 64 * (1 << 30) + 32 * (1 << 20)
    assert group.functions[1].mmio64 == 0


def test_bridges_in_a_group_are_left_out(tmp_path: Path) -> None:
    # A GPU behind a switch without ACS: the switch ports share the GPU's group.
    builder = ServerBuilder()
    builder.devices += [
        {
            "bdf": "0000:00:01.0",
            "id": "8086:347a",
            "class": "060400",
            "driver": "pcieport",
            "group": 1,
        },
        {
            "bdf": "0000:01:00.0",
            "id": "1000:c030",
            "class": "060400",
            "driver": "pcieport",
            "parent": "0000:00:01.0",
            "group": 2,
        },
        {
            "bdf": "0000:02:00.0",
            "id": "1000:c030",
            "class": "060400",
            "driver": "pcieport",
            "parent": "0000:01:00.0",
            "group": 2,
        },
        {
            "bdf": "0000:03:00.0",
            "id": "10de:2330",
            "class": "030200",
            "driver": "vfio-pci",
            "parent": "0000:02:00.0",
            "group": 2,
            "bars": ["16M mem64", None, "128G mem64 pref"],
        },
    ]
    server = builder.build(tmp_path / "host")
    (group,) = resolve_groups(server.host, classify_spec_devices(oci_spec(["/dev/vfio/2"])))
    assert [str(f.bdf) for f in group.functions] == ["0000:03:00.0"]


def test_nvswitch_is_an_endpoint(zoo: Zoo) -> None:
    server, names = zoo
    (switch,) = names["nvswitch0"]
    (group,) = resolve_groups(
        server.host, classify_spec_devices(oci_spec([server.group_node(switch)]))
    )
    assert [f.class_code for f in group.functions] == [0x068000]


def test_group_not_assignable_names_the_blocker_and_the_fix(zoo: Zoo) -> None:
    server, names = zoo
    gpu, _audio = names["busy_audio"]
    node = server.group_node(gpu)
    with pytest.raises(NotAssignableError) as info:
        resolve_groups(server.host, classify_spec_devices(oci_spec([node])))
    message = str(info.value)
    assert node in message and "0000:0c:00.1" in message and "snd_hda_intel" in message
    assert info.value.hint is not None and info.value.hint.startswith("run: kata-vfio bind")


def test_unbound_endpoint_is_refused(zoo: Zoo) -> None:
    server, names = zoo
    (gpu,) = names["unbound"]
    with pytest.raises(NotAssignableError, match="no driver"):
        resolve_groups(server.host, classify_spec_devices(oci_spec([server.group_node(gpu)])))


def test_cdev_node_expands_to_its_group_through_cdevs(zoo: Zoo) -> None:
    server, names = zoo
    gpu, audio = names["gpu0"]
    cdev = server.cdev_node(gpu)
    (group,) = resolve_groups(server.host, classify_spec_devices(oci_spec([cdev])))
    assert group.backend == "iommufd"
    assert [str(f.bdf) for f in group.functions] == [gpu, audio]
    assert all(f.cdev for f in group.functions)
    assert group.nodes[0].cdev == cdev.rsplit("/", 1)[1]


def test_same_group_through_legacy_node_and_cdev_is_refused(zoo: Zoo) -> None:
    server, names = zoo
    (gpu,) = names["h100a"]
    spec = oci_spec([server.group_node(gpu), server.cdev_node(gpu)])
    with pytest.raises(PlanError, match="either the legacy group node or cdevs"):
        resolve_groups(server.host, classify_spec_devices(spec))


def test_a_node_listed_twice_is_one_device(zoo: Zoo) -> None:
    server, names = zoo
    (gpu,) = names["h100a"]
    node = server.group_node(gpu)
    (group,) = resolve_groups(server.host, classify_spec_devices(oci_spec([node, node])))
    assert len(group.nodes) == 1


def test_confidential_guests_refuse_legacy_group_nodes(zoo: Zoo) -> None:
    server, names = zoo
    (gpu,) = names["h100a"]
    devices = classify_spec_devices(oci_spec([server.group_node(gpu)]))
    with pytest.raises(PlanError, match="confidential guests need IOMMUFD"):
        resolve_groups(server.host, devices, require_iommufd=True)
    cdevs = classify_spec_devices(oci_spec([server.cdev_node(gpu)]))
    assert resolve_groups(server.host, cdevs, require_iommufd=True)[0].backend == "iommufd"


def test_unknown_nodes_are_refused(zoo: Zoo) -> None:
    server, _names = zoo
    with pytest.raises(PlanError, match="/dev/vfio/999: IOMMU group not found"):
        resolve_groups(server.host, classify_spec_devices(oci_spec(["/dev/vfio/999"])))
    with pytest.raises(PlanError, match="vfio77"):
        resolve_groups(server.host, classify_spec_devices(oci_spec(["/dev/vfio/devices/vfio77"])))


def test_noiommu_groups_are_refused(zoo: Zoo) -> None:
    server, _names = zoo
    with pytest.raises(PlanError, match="no-IOMMU device node") as info:
        resolve_groups(server.host, classify_spec_devices(oci_spec(["/dev/vfio/noiommu-3"])))
    assert "intel_iommu=on" in (info.value.hint or "")


def test_noiommu_cdevs_are_refused(tmp_path: Path) -> None:
    """vfio's unsafe no-IOMMU mode also gives cdevs (``noiommu-vfioN``): no isolation
    either, whichever node names the device."""
    fake = build_host(
        tmp_path,
        {
            "iommu": False,
            "noiommu": True,
            "cdev": True,
            "devices": [
                {"bdf": "0000:00:01.0", "id": "8086:347a", "class": "060400", "driver": "pcieport"},
                {
                    "bdf": "0000:01:00.0",
                    "id": "10de:2330",
                    "class": "030200",
                    "parent": "0000:00:01.0",
                    "driver": "vfio-pci",
                },
            ],
        },
    )
    host = core.scan(fake.sysfs_root, fake.dev_root, fake.proc_root)
    cdev = host.cdev_node("0000:01:00.0")
    assert cdev == "/dev/vfio/devices/noiommu-vfio0"
    for node in (cdev, host.group_node("0000:01:00.0")):
        assert node is not None
        with pytest.raises(PlanError, match="no-IOMMU device node"):
            resolve_groups(host, classify_spec_devices(oci_spec([node])))


def test_groups_come_back_in_pci_order(zoo: Zoo) -> None:
    server, names = zoo
    first, second = names["h100a"][0], names["nic0"][0]
    spec = oci_spec([server.group_node(second), server.group_node(first)])
    groups = resolve_groups(server.host, classify_spec_devices(spec))
    assert [str(g.functions[0].bdf) for g in groups] == [first, second]


def test_function_ids_are_valid_qemu_ids_and_unique() -> None:
    from kata_vfio._core import Bdf
    from kata_vfio.qemu.argv import validate_id

    ids = {function_id(Bdf(f"0000:{b:02x}:00.{f}")) for b in range(3) for f in range(8)}
    assert len(ids) == 24
    for qemu_id in ids:
        validate_id(qemu_id)
    assert function_id(Bdf("10000:41:1f.7")) == "vfio-10000-41-1f.7"


@pytest.mark.parametrize(
    ("vendor", "klass", "kind"),
    [
        (0x10DE, 0x030200, "nvidia.com/gpu"),  # H100 3D controller
        (0x10DE, 0x030000, "nvidia.com/gpu"),  # VGA
        (0x10DE, 0x068000, None),  # NVSwitch: no kind, no annotation
        (0x10DE, 0x040300, None),  # HD audio companion
        (0x1002, 0x038000, "amd.com/gpu"),  # MI210 display-other
        (0x1002, 0x120000, "amd.com/gpu"),  # MI300X processing accelerator
        (0x8086, 0x038000, "intel.com/gpu"),  # Data Center GPU Max
        (0x8086, 0x020000, None),  # an Intel NIC
        (0x15B3, 0x020000, "nvidia.com/nic"),  # ConnectX Ethernet
        (0x15B3, 0x020700, "nvidia.com/nic"),  # ConnectX InfiniBand
        (0x15B3, 0x010800, None),
        (0x144D, 0x010802, None),  # NVMe
    ],
)
def test_cdi_kind_table(vendor: int, klass: int, kind: str | None) -> None:
    assert cdi_kind(vendor, klass) == kind


def test_a_site_guest_kind_comes_before_the_built_in_table() -> None:
    nic = parse_kind_rule("8086:0200=example.com/nic")
    assert (nic.vendor, nic.base_class, nic.subclasses) == (0x8086, 0x02, frozenset({0x00}))
    kind_of = kind_lookup([nic, parse_kind_rule("10DE:03=example.com/anygpu")])
    assert kind_of(0x8086, 0x020000) == "example.com/nic"
    assert kind_of(0x8086, 0x028000) is None  # another subclass
    assert kind_of(0x10DE, 0x030200) == "example.com/anygpu"  # the site's rule wins
    assert kind_of(0x15B3, 0x020000) == "nvidia.com/nic"  # the built-in table still applies
    assert kind_lookup()(0x8086, 0x020000) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "8086=x.com/y",
        "8086:2=x.com/y",
        "8086:020000=x.com/y",
        "8086:0200",
        "8086:0200=nic",
        "8086:0200=x.com/",
        "808g:0200=x.com/y",
        "8086:0200=x.com/y/z",
        "8086:0200=-x.com/y",
    ],
)
def test_a_malformed_guest_kind_rule_is_refused_with_its_form(text: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_kind_rule(text)
    assert "invalid guest kind rule" in caught.value.message
    assert caught.value.hint is not None and "VENDOR:CLASS=KIND" in caught.value.hint


@given(st.text(max_size=40))
def test_any_guest_kind_rule_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        rule = parse_kind_rule(text)
    except InvalidInputError:
        return
    assert 0 <= rule.vendor <= 0xFFFF and 0 <= rule.base_class <= 0xFF
    assert text.endswith(f"={rule.kind}")


@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
    st.one_of(st.none(), st.integers(0, 0xFF)),
    st.from_regex(r"[a-z][a-z0-9]{0,8}\.com/[a-z]([a-z0-9_-]{0,8}[a-z0-9])?", fullmatch=True),
)
def test_a_written_guest_kind_rule_reads_back(
    vendor: int, base: int, sub: int | None, kind: str
) -> None:
    text = f"{vendor:04x}:{base:02x}{'' if sub is None else f'{sub:02x}'}={kind}"
    rule = parse_kind_rule(text)
    assert (rule.vendor, rule.base_class, rule.kind) == (vendor, base, kind)
    assert rule.subclasses == (None if sub is None else frozenset({sub}))
    assert rule.matches(vendor, (base << 16) | ((sub or 0) << 8))
