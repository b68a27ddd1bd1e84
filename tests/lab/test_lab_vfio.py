"""The VFIO ioctl layer against the real kernel: legacy, iommufd, and the open preflight."""

from __future__ import annotations

from typing import Any

import pytest
from kvlab import topology

pytestmark = pytest.mark.lab

VFIO_API_VERSION = 0
GROUP_VIABLE, GROUP_CONTAINER_SET = 0x1, 0x2
DEVICE_FLAGS_RESET, DEVICE_FLAGS_PCI = 0x1, 0x2
REGION_READ, REGION_WRITE, REGION_MMAP = 0x1, 0x2, 0x4
IOMMU_INFO_PGSIZES = 0x1
# vfio-pci's IRQ indexes on an e1000e: INTx, MSI, MSI-X (5 vectors), ERR, REQ.
E1000E_IRQ_COUNTS = {0: 1, 1: 1, 2: 5, 3: 1, 4: 1}
DMA_SIZE, DMA_IOVA = 2 << 20, 0x100000


def _vfio(lab: Any) -> dict[str, Any]:
    facts: dict[str, Any] = lab.facts("vfio")
    return facts


def _iommufd(lab: Any) -> dict[str, Any]:
    facts = _vfio(lab)
    if not facts["has_iommufd"]:
        pytest.skip(f"{lab.release} has no iommufd (Debian kernels never do)")
    iommufd: dict[str, Any] = facts["iommufd"]
    return iommufd


def _assert_e1000e_device(device: dict[str, Any]) -> None:
    assert (device["config_vendor"], device["config_device"]) == topology.E1000E
    assert device["info"]["flags"] & DEVICE_FLAGS_PCI
    assert device["info"]["num_regions"] == 9
    assert device["info"]["num_irqs"] == 5
    sizes = {r["index"]: r["size"] for r in device["regions"]}
    assert {i: sizes.get(i) for i in topology.E1000E_REGION_SIZES} == topology.E1000E_REGION_SIZES
    flags = {r["index"]: r["flags"] for r in device["regions"]}
    for bar in (0, 1, 3):  # memory BARs: readable, writable, mappable
        assert flags[bar] & (REGION_READ | REGION_WRITE | REGION_MMAP) == 7, f"BAR{bar}"
    assert not flags[2] & REGION_MMAP, "the I/O port BAR cannot be mapped"
    assert {q["index"]: q["count"] for q in device["irqs"]} == E1000E_IRQ_COUNTS


def test_legacy_container_and_group_sequence(lab: Any) -> None:
    legacy = _vfio(lab)["legacy"]
    assert legacy["api_version"] == VFIO_API_VERSION
    assert legacy["extensions"]["TYPE1v2"] is True
    assert legacy["extensions"]["NOIOMMU"] is False, "no-IOMMU mode must stay off"
    assert legacy["status_before"] == GROUP_VIABLE
    assert legacy["status_after"] == GROUP_VIABLE | GROUP_CONTAINER_SET
    assert legacy["iommu_info"]["flags"] & IOMMU_INFO_PGSIZES
    assert legacy["iommu_info"]["iova_pgsizes"] & 0x1000, "4 KiB pages"


def test_legacy_device_fd_is_the_ioctl_return_value(lab: Any) -> None:
    # A fd taken from the copied buffer instead of the return value would be garbage.
    assert _vfio(lab)["legacy"]["device"]["fd"] >= 3


def test_legacy_regions_irqs_and_config_match_the_emulated_e1000e(lab: Any) -> None:
    device = _vfio(lab)["legacy"]["device"]
    _assert_e1000e_device(device)
    assert device["reset"] == "ok"


def test_legacy_dma_map_and_unmap(lab: Any) -> None:
    assert _vfio(lab)["legacy"]["dma_unmapped"] == DMA_SIZE


def test_open_legacy_sees_the_same_regions(lab: Any) -> None:
    legacy = _vfio(lab)["legacy"]
    assert legacy["open_legacy_regions"] == legacy["device"]["regions"]


def test_the_lab_kernel_has_iommufd_and_the_vfio_cdev(lab: Any) -> None:
    if lab.suite != "lab":
        pytest.skip("only the built lab kernel has iommufd")
    facts = _vfio(lab)
    assert facts["has_iommufd"], f"{lab.release} booted without /dev/iommu"
    assert facts["iommufd"]["cdev"].startswith("vfio")


def test_iommufd_bind_attach_map_unmap(lab: Any) -> None:
    facts = _iommufd(lab)
    assert facts["devid"] >= 1
    assert facts["ioas"] >= 1
    # Attaching to an IOAS makes the kernel create a hardware page table: its own id.
    assert facts["pt"] >= 1
    assert any(
        start <= DMA_IOVA and last >= DMA_IOVA + DMA_SIZE - 1
        for start, last in facts["iova_ranges"]
    )
    assert facts["mapped_iova"] == DMA_IOVA
    assert facts["unmapped"] == DMA_SIZE


def test_iommufd_device_matches_the_emulated_e1000e(lab: Any) -> None:
    _assert_e1000e_device(_iommufd(lab)["device"])


def test_open_iommufd_binds_a_device_id(lab: Any) -> None:
    assert _iommufd(lab)["open_iommufd_devid"] >= 1


def _check_open(lab: Any) -> dict[str, Any]:
    facts: dict[str, Any] = _vfio(lab)["check_open"]
    return facts


def test_check_open_succeeds_on_a_bound_device(lab: Any) -> None:
    facts = _check_open(lab)
    for mode, result in facts["bound"].items():
        assert result["ok"], f"{mode}: {result['error']} ({result['hint']})"
        assert all(step["ok"] for step in result["steps"])
    assert any(s["step"] == "VFIO_GROUP_GET_DEVICE_FD" for s in facts["bound"]["legacy"]["steps"])


def test_check_open_refuses_a_half_bound_group_and_names_the_blocker(lab: Any) -> None:
    facts = _check_open(lab)
    named, blocker = topology.NIC_MULTI
    assert facts["half_drivers"] == {named: "vfio-pci", blocker: "e1000e"}
    legacy = facts["half"]["legacy"]
    assert legacy["ok"] is False
    assert "not viable" in legacy["error"]
    assert blocker in legacy["hint"], legacy["hint"]
    assert "bind --group" in legacy["hint"], legacy["hint"]


def test_cli_check_open_exit_codes_and_hint(lab: Any) -> None:
    facts = _check_open(lab)
    bound, half = facts["bound_cli"], facts["half_cli"]
    assert bound["rc"] == 0, bound
    assert half["rc"] == 1, half
    assert topology.NIC_MULTI[1] in str(half["output"]), half
    assert "bind --group" in str(half["output"]), half
