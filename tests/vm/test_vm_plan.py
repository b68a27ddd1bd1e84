"""The hypervisor-neutral VM plan: guest PCI paths, placement without kinds, hot-plug slots,
and the QEMU backend rendering a plan nothing Kata made."""

from __future__ import annotations

import pytest

from kata_vfio import Bdf
from kata_vfio.errors import InvalidInputError
from kata_vfio.qemu.hotplug import group_request
from kata_vfio.qemu.vm import QemuSettings, build_vm_command
from kata_vfio.vm.devices import HostFunction, PassthroughGroup, PassthroughSlot, VfioNode
from kata_vfio.vm.hotplug import SlotFunction, deferred_hotplug, group_hotplug
from kata_vfio.vm.pci_path import PciPath, format_pci_path
from kata_vfio.vm.placement import place_devices
from kata_vfio.vm.plan import VmPlan, cold_plugged, deferred
from kata_vfio.vm.topology import PortRequest, plan_topology

GIB = 1 << 30


def _function(bdf: str, cdev: str | None = None) -> HostFunction:
    return HostFunction(
        bdf=Bdf(bdf),
        vendor=0x10DE,
        device=0x2330,
        class_code=0x030200,
        numa_node=None,
        is_pcie=True,
        is_vf=False,
        cdev=cdev,
        mmio64=0,
        bars_known=True,
    )


def _group(number: int, bdfs: list[str], backend: str = "legacy") -> PassthroughGroup:
    functions = tuple(
        _function(b, f"vfio{i}" if backend == "iommufd" else None) for i, b in enumerate(bdfs)
    )
    slot = PassthroughSlot(functions, tuple(Bdf(b).function for b in bdfs))
    node = VfioNode(f"/dev/vfio/{number}", "group", number, None, None)
    return PassthroughGroup(group=number, backend=backend, nodes=(node,), slots=(slot,))


@pytest.mark.parametrize(
    ("root_bus", "slots", "function", "text"),
    [
        (0, (2, 0), 0, "02/00"),
        (0, (2, 0), 1, "02/00.1"),
        (0x20, (0, 0), 0, "20/00/00"),
        (0, (8, 0, 2, 0), 7, "08/00/02/00.7"),
    ],
)
def test_guest_pci_paths(root_bus: int, slots: tuple[int, ...], function: int, text: str) -> None:
    assert format_pci_path(root_bus, slots, function) == text
    assert str(PciPath("pcie.0", slots, function, root_bus)) == text


def test_group_hotplug_keeps_guest_functions_and_names_its_iommufd_object() -> None:
    cdev = group_hotplug(_group(7, ["0000:01:00.0", "0000:01:00.1"], backend="iommufd"))
    assert cdev.iommufd == "iommufd-g7" and cdev.ports == ()
    assert cdev.slots == (
        (
            SlotFunction("vfio-0000-01-00.0", Bdf("0000:01:00.0"), 0),
            SlotFunction("vfio-0000-01-00.1", Bdf("0000:01:00.1"), 1),
        ),
    )
    assert cdev.device_ids == ("vfio-0000-01-00.0", "vfio-0000-01-00.1")
    assert group_hotplug(_group(8, ["0000:02:00.0"])).iommufd is None


def test_qemu_renders_a_neutral_group_as_vfio_pci_devices() -> None:
    request = group_request(group_hotplug(_group(7, ["0000:01:00.0"], backend="iommufd")))
    (slot,) = request.slots
    assert [(f.qemu_id, f.driver, f.props) for f in slot] == [
        ("vfio-0000-01-00.0", "vfio-pci", (("host", "0000:01:00.0"), ("iommufd", "iommufd-g7")))
    ]
    assert request.iommufd == "iommufd-g7"


@pytest.mark.parametrize("plug", ["cold", "hot"])
def test_a_plan_splits_cold_and_deferred_devices(plug: str) -> None:
    groups = [_group(3, ["0000:01:00.0", "0000:01:00.1"]), _group(4, ["0000:02:00.0"])]
    topology = plan_topology([PortRequest(), PortRequest()], kind="root-port", min_ports=3)
    devices = place_devices(groups, topology, plug=plug)
    assert all(f.kind is None for d in devices for f in d.functions)  # no kinds asked for
    functions, later = cold_plugged(devices), deferred(devices)
    if plug == "cold":
        assert [(f.host, f.port, f.guest_function) for f in functions] == [
            ("0000:01:00.0", "rp0", 0),
            ("0000:01:00.1", "rp0", 1),
            ("0000:02:00.0", "rp1", 0),
        ]
        assert functions[0].multifunction and not functions[1].multifunction
        assert later == ()
    else:
        assert functions == ()
        assert [(g.group, g.ports, g.device_ids) for g in later] == [
            (3, ("rp0",), ("vfio-0000-01-00.0", "vfio-0000-01-00.1")),
            (4, ("rp1",), ("vfio-0000-02-00.0",)),
        ]
        assert deferred_hotplug(devices[1]) == later[1]


def test_qemu_renders_a_vm_plan_nothing_kata_made() -> None:
    topology = plan_topology([PortRequest(mmio64=64 * GIB)], kind="root-port", min_ports=2)
    devices = place_devices([_group(5, ["0000:01:00.0"])], topology, plug="cold")
    plan = VmPlan(
        name="plain-vm",
        memory_mib=1024,
        vcpus=2,
        topology=topology,
        functions=cold_plugged(devices),
        kernel="/boot/vmlinuz",
        kernel_params="quiet",
    )
    argv = build_vm_command(plan, QemuSettings(binary="/usr/bin/qemu", accel="tcg")).argv()
    assert argv[:3] == ["/usr/bin/qemu", "-name", "plain-vm"]
    assert "vfio-pci,host=0000:01:00.0,id=vfio-0000-01-00.0,bus=rp0,addr=00.0" in argv
    assert any(a.startswith("pcie-root-port,id=rp1,") for a in argv)
    assert argv[argv.index("-append") + 1] == "quiet"
    assert argv[argv.index("-cpu") + 1].startswith("max")
    with pytest.raises(InvalidInputError, match="accelerator 'hvf'"):
        build_vm_command(plan, QemuSettings(accel="hvf"))


def test_a_guest_iommu_takes_only_groups_of_one_function() -> None:
    from kata_vfio.errors import PlanError
    from kata_vfio.vm.viommu import refuse_shared_groups_behind_viommu

    single = _group(3, ["0000:41:00.0"])
    shared = _group(7, ["0000:81:00.0", "0000:81:00.1"], backend="iommufd")
    refuse_shared_groups_behind_viommu([single])  # no error
    refuse_shared_groups_behind_viommu([])
    with pytest.raises(PlanError) as refused:
        refuse_shared_groups_behind_viommu([single, shared])
    message = str(refused.value)
    assert "group 7 (0000:81:00.0, 0000:81:00.1)" in message
    assert "group 3" not in message  # only the groups at fault are named
