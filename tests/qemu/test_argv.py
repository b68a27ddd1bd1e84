"""QEMU command lines as data: escaping, validation, and what the real QEMU accepts."""

from __future__ import annotations

import dataclasses
import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox_hosts import Zoo, oci_spec

from kata_vfio.errors import InvalidInputError
from kata_vfio.kata.config import KataConfig
from kata_vfio.kata.sandbox import plan_sandbox
from kata_vfio.qemu.argv import QemuCommand, QemuOpts, escape_value, format_size, validate_id
from kata_vfio.qemu.launcher import QemuProcess
from kata_vfio.qemu.qmp import HotplugFunction


def _parse(text: str) -> list[str]:
    """Splits an option value the way QEMU's QemuOpts parser does: a single comma separates,
    a doubled comma is a literal comma."""
    parts, current, i = [], [], 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                current.append(",")
                i += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(text[i])
        i += 1
    parts.append("".join(current))
    return parts


def test_commas_in_values_are_doubled() -> None:
    opts = QemuOpts.of("vfio-pci", ("id", "gpu0"), ("romfile", "/roms/a,b.rom"))
    assert opts.render() == "vfio-pci,id=gpu0,romfile=/roms/a,,b.rom"
    assert escape_value("a,,b") == "a,,,,b"


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\x7f")),
        min_size=1,
        max_size=4,
    )
)
def test_any_printable_values_round_trip_through_qemu_syntax(values: list[str]) -> None:
    props = tuple((f"k{i}", v) for i, v in enumerate(values))
    rendered = QemuOpts.of("drv", *props).render()
    parts = _parse(rendered)
    assert parts[0] == "drv"
    assert parts[1:] == [f"k{i}={v}" for i, v in enumerate(values)]


@pytest.mark.parametrize("value", ["a\nb", "x\x00", "tab\there", "del\x7f"])
def test_control_characters_are_refused(value: str) -> None:
    with pytest.raises(InvalidInputError, match="control character"):
        QemuOpts.of("vfio-pci", ("romfile", value))
    with pytest.raises(InvalidInputError):
        QemuCommand("qemu-system-x86_64").add("-append", value)


@pytest.mark.parametrize(
    "good", ["rp0", "vfio-0000-41-00.0", "a", "swdp15", "iommufd-g12", "A_b.c-d"]
)
def test_valid_ids(good: str) -> None:
    assert validate_id(good) == good


@pytest.mark.parametrize("bad", ["", "0rp", "-x", "rp 0", "rp,0", "a=b", "a/b", "é", "x" * 129])
def test_invalid_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="not a valid QEMU id"):
        validate_id(bad)
    with pytest.raises(InvalidInputError):
        QemuOpts.of("e1000e", ("id", bad))


@pytest.mark.parametrize("key", ["", "bus,addr", "a=b", "-x", "x y"])
def test_invalid_property_names_are_refused(key: str) -> None:
    with pytest.raises(InvalidInputError, match="property name"):
        QemuOpts.of("e1000e", (key, "1"))


def test_property_given_twice_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="given twice"):
        QemuOpts.of("e1000e", ("id", "a"), ("id", "b"))


def test_values_render_bools_ints_and_skip_none() -> None:
    opts = QemuOpts.of(
        "pcie-root-port", ("id", "rp0"), ("chassis", 1), ("hotplug", False), ("addr", None)
    )
    assert opts.render() == "pcie-root-port,id=rp0,chassis=1,hotplug=off"
    changed = opts.with_props(("chassis", 2), ("hotplug", None), ("slot", 3))
    assert changed.render() == "pcie-root-port,id=rp0,chassis=2,slot=3"
    assert changed.with_head("xio3130-downstream").render().startswith("xio3130-downstream,id=rp0")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0"),
        (4096, "4K"),
        (1 << 20, "1M"),
        (64 << 30, "64G"),
        ((64 << 30) + (32 << 20), "65568M"),
        (1 << 40, "1T"),
        (1000, "1000"),
    ],
)
def test_sizes_are_exact(size: int, text: str) -> None:
    assert format_size(size) == text


def test_command_is_a_list_never_a_shell_string() -> None:
    command = QemuCommand("/usr/bin/qemu-system-x86_64").extend(
        [
            ("-name", QemuOpts.of(None, ("guest", "a b;c"))),
            ("-S", None),
            ("-append", "console=ttyS0 $(x)"),
        ]
    )
    assert command.argv() == [
        "/usr/bin/qemu-system-x86_64",
        "-name",
        "guest=a b;c",
        "-S",
        "-append",
        "console=ttyS0 $(x)",
    ]
    with pytest.raises(InvalidInputError):
        QemuCommand("bin/qemu")
    with pytest.raises(InvalidInputError):
        QemuCommand("qemu").add("S")


@pytest.mark.qemu
def test_qemu_reads_an_escaped_value_back_exactly(qemu_binary: str) -> None:
    name = "pod,with,commas"
    command = QemuCommand(qemu_binary).extend(
        [
            ("-name", QemuOpts.of(None, ("guest", name))),
            ("-machine", "none"),
            ("-nodefaults", None),
            ("-display", "none"),
            ("-S", None),
        ]
    )
    with QemuProcess(command) as vm:
        assert vm.qmp.execute("query-name") == {"name": name}


def _qemu_properties(qemu: str, flag: str, driver: str) -> set[str]:
    out = subprocess.run(
        [qemu, flag, f"{driver},help"], capture_output=True, text=True, timeout=60, check=True
    )
    return set(re.findall(r"^\s+([A-Za-z0-9_.-]+)=<", out.stdout, re.MULTILINE))


@pytest.mark.qemu
def test_every_property_the_planner_emits_exists_in_qemu(
    zoo: Zoo, nvidia_config: KataConfig, qemu_binary: str
) -> None:
    """Each -device property of every planned shape (legacy, cdev/iommufd, multifunction,
    switch, NUMA, vIOMMU, image disk) and of hot-plug is one QEMU itself lists."""
    server, names = zoo
    nodes = [
        server.group_node(names["gpu0"][0]),
        server.cdev_node(names["nic0"][0]),
        server.group_node(names["h100b"][0]),
    ]
    shapes = [
        {},
        {"cold_plug_vfio": "switch-port", "pcie_root_port": 0, "pcie_switch_port": 4},
        {
            "enable_numa": True,
            "enable_iommu": True,
            "enable_iommu_platform": True,
            "vfio_mode": "vfio",
        },
    ]
    used: dict[str, set[str]] = {}
    for shape in shapes:
        config = dataclasses.replace(nvidia_config, **shape).validate()  # type: ignore[arg-type]
        # A two-function group is refused behind a vIOMMU: that shape passes the others.
        passed = nodes[1:] if config.enable_iommu else nodes
        plan = plan_sandbox(oci_spec(passed), host=server.host, config=config, runtime_dir="/run/k")
        for device in plan.command.opts("-device"):
            assert device.head is not None
            used.setdefault(device.head, set()).update(key for key, _ in device.props)
    hotplug = HotplugFunction("vfio-0000-01-00.0", 0, props=(("host", "0000:01:00.0"),))
    used["vfio-pci"] |= {key for key, _ in hotplug.props} | {
        "id",
        "bus",
        "addr",
        "multifunction",
        "iommufd",
    }
    assert {
        "vfio-pci",
        "pcie-root-port",
        "xio3130-downstream",
        "x3130-upstream",
        "pxb-pcie",
        "intel-iommu",
        "virtio-blk-pci",
    } <= set(used)
    for driver, props in sorted(used.items()):
        # id and bus belong to every device (qdev itself), not listed per driver
        known = _qemu_properties(qemu_binary, "-device", driver) | {"id", "bus"}
        assert props <= known, f"{driver}: {sorted(props - known)} not in `-device {driver},help`"
    accel = {o.head: {k for k, _ in o.props} for o in plan.command.opts("-accel")}
    assert accel == {"kvm": {"kernel-irqchip"}}
    bare = QemuCommand(qemu_binary).extend(
        [("-machine", "none"), ("-nodefaults", None), ("-S", None)]
    )
    with QemuProcess(bare) as vm:
        listed = vm.qmp.execute("qom-list-properties", {"typename": "kvm-accel"})
    assert "kernel-irqchip" in {p["name"] for p in listed}
