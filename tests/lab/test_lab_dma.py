"""A DMA mapping cannot outlive its buffer (issue 13 item 4), against the real kernel: map
through the project's handle, close the handle, drop the buffer, and the kernel object (kept
alive by the attached group or bound cdev, and seen through a second fd) holds no mapping:
the pinned pages are no longer counted and the IOVA maps again."""

from __future__ import annotations

import errno
from typing import Any

import pytest

pytestmark = pytest.mark.lab

SIZE_KB = 4 << 10
CONTAINER_SET = 0x2


def _dma(lab: Any) -> dict[str, Any]:
    facts: dict[str, Any] = lab.facts("dma")
    return facts


def test_legacy_close_unmaps_what_the_container_mapped(lab: Any) -> None:
    legacy = _dma(lab)["legacy"]
    assert legacy["busy_while_mapped"] == {"ok": False, "errno": errno.EEXIST}
    assert legacy["group_flags_after_close"] & CONTAINER_SET, (
        "the kernel's container outlives the handle while the group is attached"
    )
    assert legacy["vmlck_kb_mapped"] - legacy["vmlck_kb_before"] == SIZE_KB, "type1 pins it"
    assert legacy["vmlck_kb_after_close"] == legacy["vmlck_kb_before"], "no pinned pages left"
    assert legacy["remap_after_close"] == {"ok": True}, "the IOVA is free again"
    assert legacy["vmlck_kb_end"] == legacy["vmlck_kb_before"]


def test_iommufd_close_unmaps_what_the_handle_mapped(lab: Any) -> None:
    facts = _dma(lab)
    if not facts["has_iommufd"]:
        pytest.skip(f"{lab.release} has no iommufd (Debian kernels never do)")
    iommufd = facts["iommufd"]
    assert iommufd["busy_while_mapped"] == {"ok": False, "errno": errno.EEXIST}
    assert iommufd["ioas_alive_after_close"], "the bound cdev keeps the IOAS alive"
    assert iommufd["remap_after_close"] == {"ok": True}, "the IOVA is free again"
