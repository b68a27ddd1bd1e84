"""Hot-plug and unplug over QMP with the project's own code, into planned ports of the real
QEMU (emulated e1000e devices stand in for VFIO functions)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from emulated_vm import emulated
from guest_os import READY, build_initramfs, find_guest_kernel, wait_for_console
from sandbox_hosts import Zoo, oci_spec

from kata_vfio.errors import InvalidInputError, PlanError, QmpError
from kata_vfio.kata.config import KataConfig
from kata_vfio.kata.hotplug import node_hotplug
from kata_vfio.kata.sandbox import SandboxPlan, plan_sandbox
from kata_vfio.qemu.hotplug import group_request
from kata_vfio.qemu.launcher import QemuProcess
from kata_vfio.qemu.qmp import (
    HotplugFunction,
    HotplugRequest,
    free_ports,
    guest_pci_path,
    hotplug,
    list_ports,
    port_occupancy,
    unplug,
)

pytestmark = pytest.mark.qemu


def _plan(
    zoo: Zoo, config: KataConfig, qemu: str, nodes: list[str], **changes: object
) -> SandboxPlan:
    server, _names = zoo
    config = dataclasses.replace(config, path=qemu, default_memory=512, **changes).validate()  # type: ignore[arg-type]
    return plan_sandbox(oci_spec(nodes), host=server.host, config=config, accel="tcg")


def _nic(qemu_id: str, function: int = 0) -> HotplugFunction:
    return HotplugFunction(qemu_id, function, driver="e1000e")


def _objects(vm: QemuProcess) -> set[str]:
    return {e["name"] for e in vm.qmp.execute("qom-list", {"path": "/objects"})}


@pytest.fixture
def planned(zoo: Zoo, nvidia_config: KataConfig, qemu_binary: str) -> SandboxPlan:
    """One cold-plugged GPU (with its audio function) on rp0, rp1..rp3 free."""
    server, names = zoo
    return _plan(
        zoo, nvidia_config, qemu_binary, [server.group_node(names["gpu0"][0])], pcie_root_port=4
    )


def test_hotplug_goes_to_the_first_free_port_with_its_iommufd_object(planned: SandboxPlan) -> None:
    with QemuProcess(emulated(planned).add("-S")) as vm:
        assert list_ports(vm.qmp) == ("rp0", "rp1", "rp2", "rp3")
        assert free_ports(vm.qmp) == ("rp1", "rp2", "rp3") == planned.free_ports
        result = hotplug(vm.qmp, HotplugRequest(slots=((_nic("hot0"),),), iommufd="iommufd-g99"))
        assert result.ports == ("rp1",) and result.ids == ("hot0",)
        assert result.paths == ("09/00",)
        assert "iommufd-g99" in _objects(vm)
        assert port_occupancy(vm.qmp)["rp1"] == ("hot0",)
        assert free_ports(vm.qmp) == ("rp2", "rp3")


def test_multifunction_device_goes_to_one_port_function_zero_last(planned: SandboxPlan) -> None:
    with QemuProcess(emulated(planned).add("-S")) as vm:
        slot = (_nic("mf-0", 0), _nic("mf-1", 1))
        result = hotplug(vm.qmp, HotplugRequest(slots=(slot,)), ports=["rp3", "rp2"])
        assert result.ports == ("rp3",)
        assert {guest_pci_path(vm.qmp, i).function for i in ("mf-0", "mf-1")} == {0, 1}
        assert vm.qmp.execute(
            "qom-get", {"path": "/machine/peripheral/mf-0", "property": "multifunction"}
        )


def test_no_free_port_is_refused_before_qemu_is_asked(planned: SandboxPlan) -> None:
    with QemuProcess(emulated(planned).add("-S")) as vm:
        hotplug(vm.qmp, HotplugRequest(slots=((_nic("a"),), (_nic("b"),), (_nic("c"),))))
        before = port_occupancy(vm.qmp)
        with pytest.raises(PlanError, match=r"1 free PCIe port.*needed, 0 free") as info:
            hotplug(vm.qmp, HotplugRequest(slots=((_nic("d"),),), iommufd="iommufd-gx"))
        assert "pcie_root_port" in (info.value.hint or "")
        assert port_occupancy(vm.qmp) == before
        assert "iommufd-gx" not in _objects(vm)


def test_an_id_in_use_is_refused(planned: SandboxPlan) -> None:
    taken = planned.devices[0].functions[0].device_id
    with QemuProcess(emulated(planned).add("-S")) as vm:
        with pytest.raises(PlanError, match="already in use"):
            hotplug(vm.qmp, HotplugRequest(slots=((_nic(taken),),)))
        with pytest.raises(PlanError, match="repeated"):
            hotplug(vm.qmp, HotplugRequest(slots=((_nic("x"),), (_nic("x"),))))


def test_unplug_of_a_slot_the_guest_never_powered_on_completes_and_deletes_the_object(
    planned: SandboxPlan,
) -> None:
    with QemuProcess(emulated(planned).add("-S")) as vm:
        slot = (_nic("cold-0", 0), _nic("cold-1", 1))
        hotplug(vm.qmp, HotplugRequest(slots=(slot,), iommufd="iommufd-g4"))
        unplug(vm.qmp, ["cold-0", "cold-1"], iommufd="iommufd-g4", timeout=30)
        assert "iommufd-g4" not in _objects(vm)
        assert free_ports(vm.qmp) == ("rp1", "rp2", "rp3")


def test_a_failed_device_add_is_rolled_back(planned: SandboxPlan) -> None:
    with QemuProcess(emulated(planned).add("-S")) as vm:
        before = port_occupancy(vm.qmp)
        broken = (_nic("ok-1", 1), HotplugFunction("bad-0", 0, driver="no-such-device"))
        with pytest.raises(QmpError, match="device_add failed"):
            hotplug(vm.qmp, HotplugRequest(slots=(broken,), iommufd="iommufd-g7"))
        assert port_occupancy(vm.qmp) == before  # function 1 went, it never became visible
        assert "iommufd-g7" not in _objects(vm)


def test_unplug_of_a_powered_slot_without_a_guest_times_out_and_keeps_the_object(
    planned: SandboxPlan,
) -> None:
    """A cold-plugged device's slot is powered on at reset; only the guest can release it."""
    ids = [f.device_id for f in planned.devices[0].functions]
    with QemuProcess(emulated(planned).add("-object", "iommufd,id=iommufd-g5").add("-S")) as vm:
        with pytest.raises(QmpError, match="not removed within 1 s") as info:
            unplug(vm.qmp, ids, iommufd="iommufd-g5", timeout=1.0)
        assert "guest did not release" in (info.value.hint or "")
        assert "iommufd-g5" in _objects(vm)  # still in use: not deleted
        assert port_occupancy(vm.qmp)["rp0"] == tuple(ids)
        with pytest.raises(PlanError, match="no device ghost"):
            unplug(vm.qmp, ["ghost"])


def test_switch_port_hotplug_path(zoo: Zoo, nvidia_config: KataConfig, qemu_binary: str) -> None:
    plan = _plan(
        zoo,
        nvidia_config,
        qemu_binary,
        [],
        cold_plug_vfio="switch-port",
        pcie_root_port=0,
        pcie_switch_port=2,
    )
    with QemuProcess(emulated(plan).add("-S")) as vm:
        assert free_ports(vm.qmp) == ("swdp0", "swdp1")
        result = hotplug(
            vm.qmp, HotplugRequest(slots=((_nic("sw0"),),)), ports=list(plan.free_ports)
        )
        assert result.paths == ("08/00/00/00",)


def test_ports_are_listed_in_numeric_order(
    zoo: Zoo, nvidia_config: KataConfig, qemu_binary: str
) -> None:
    plan = _plan(zoo, nvidia_config, qemu_binary, [], pcie_root_port=12)
    with QemuProcess(emulated(plan).add("-S")) as vm:
        assert list_ports(vm.qmp) == tuple(f"rp{i}" for i in range(12))


def test_vfio_request_for_a_group_is_what_cold_plug_would_place(zoo: Zoo) -> None:
    server, names = zoo
    request = group_request(node_hotplug(server.host, server.cdev_node(names["gpu0"][0])))
    group = server.host.group_of(names["gpu0"][0])
    assert group is not None and request.iommufd == f"iommufd-g{group.id}"
    link = ("iommufd", request.iommufd)
    (slot,) = request.slots
    assert [(f.qemu_id, f.guest_function, f.driver, f.props) for f in slot] == [
        ("vfio-0000-01-00.0", 0, "vfio-pci", (("host", "0000:01:00.0"), link)),
        ("vfio-0000-01-00.1", 1, "vfio-pci", (("host", "0000:01:00.1"), link)),
    ]
    assert node_hotplug(server.host, server.group_node(names["nic0"][0])).iommufd is None
    with pytest.raises(InvalidInputError, match="not a VFIO device node"):
        node_hotplug(server.host, "/dev/vfio/vfio")


def test_unplug_completes_with_a_guest_and_deletes_the_iommufd_object(
    planned: SandboxPlan, tmp_path: Path
) -> None:
    kernel = find_guest_kernel()
    if kernel is None:
        pytest.skip(
            "no guest kernel: run .ci/run (it caches the lab kernel) or set KATA_VFIO_GUEST_KERNEL"
        )
    initrd = build_initramfs(tmp_path / "initrd.gz")
    if initrd is None:
        pytest.skip("busybox-static or tools/lab missing: cannot build the guest initramfs")
    console = tmp_path / "console.log"
    command = (
        emulated(planned)
        .without(["-serial"])
        .extend(
            [
                ("-kernel", str(kernel)),
                ("-initrd", str(initrd)),
                ("-append", "console=ttyS0 panic=-1 quiet"),
                ("-serial", f"file:{console}"),
            ]
        )
    )
    with QemuProcess(command, powerdown_timeout=1) as vm:
        wait_for_console(console, READY, timeout=300)
        hotplug(
            vm.qmp,
            HotplugRequest(slots=((_nic("guest-0", 0), _nic("guest-1", 1)),), iommufd="iommufd-g3"),
        )
        unplug(vm.qmp, ["guest-0", "guest-1"], iommufd="iommufd-g3", timeout=120)
        assert "guest-0" not in port_occupancy(vm.qmp).get("rp1", ())
        assert "iommufd-g3" not in _objects(vm)
        assert free_ports(vm.qmp) == ("rp1", "rp2", "rp3")
