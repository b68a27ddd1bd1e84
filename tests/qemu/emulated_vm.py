"""Turn a planned sandbox VM into one QEMU can run here, and read its PCI tree back.

This machine has no IOMMU and no devices to pass through, so each ``vfio-pci`` becomes an
emulated ``e1000e`` with the same id, bus, address and multifunction flag; the boot assets of
the Kata configuration (kernel, image, OVMF) are left out. Everything else (ports, switch,
expanders, vIOMMU, iommufd objects, the 64-bit hole, NUMA nodes) is the plan's own.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from sandbox_hosts import Zoo, oci_spec

from kata_vfio.kata.config import KataConfig
from kata_vfio.kata.sandbox import SandboxPlan, plan_sandbox
from kata_vfio.qemu.argv import QemuCommand, QemuOpts
from kata_vfio.qemu.qmp import QmpSession, query_pci

BOOT_FLAGS = ("-kernel", "-initrd", "-append", "-bios", "-fw_cfg", "-blockdev")
STAND_IN = "e1000e"


def emulated(plan: SandboxPlan) -> QemuCommand:
    """The plan's command with emulated stand-ins (see the module docstring)."""

    def swap(device: QemuOpts) -> QemuOpts | None:
        if device.head == "vfio-pci":
            return device.with_head(STAND_IN).with_props(("host", None), ("iommufd", None))
        if device.head == "virtio-blk-pci":
            return None  # its image is left out
        return device

    return plan.command.without(BOOT_FLAGS).map_opts("-device", swap)


def planned(
    zoo: Zoo, config: KataConfig, qemu: str, runtime: Path, nodes: list[str], **changes: object
) -> SandboxPlan:
    """The zoo server's sandbox plan for the VFIO ``nodes`` (256 MiB, TCG, ``runtime``)."""
    server, _names = zoo
    config = dataclasses.replace(config, path=qemu, default_memory=256, **changes).validate()  # type: ignore[arg-type]
    return plan_sandbox(
        oci_spec(nodes), host=server.host, config=config, accel="tcg", runtime_dir=str(runtime)
    )


def runnable(
    zoo: Zoo, config: KataConfig, qemu: str, runtime: Path, nodes: list[str], **changes: object
) -> SandboxPlan:
    """:func:`planned`, with a command that runs here (emulated stand-ins, paused CPUs)."""
    plan = planned(zoo, config, qemu, runtime, nodes, **changes)
    return dataclasses.replace(plan, command=emulated(plan).add("-S"))


def pci_tree(session: QmpSession, roots: dict[int, str]) -> dict[str, tuple[str, int, int]]:
    """``qdev id -> (parent, slot, function)`` from ``query-pci``; the parent is the bridge's
    id, or the root bus name (``roots`` maps root bus numbers to names)."""
    tree: dict[str, tuple[str, int, int]] = {}

    def walk(devices: list[dict[str, Any]], parent: str) -> None:
        for device in devices:
            qdev_id = device.get("qdev_id") or f"<{device['class_info']['desc']}>"
            tree[qdev_id] = (parent, device["slot"], device["function"])
            bridge = device.get("pci_bridge")
            if bridge is not None:
                walk(bridge.get("devices", []), qdev_id)

    for root in query_pci(session):
        walk(root["devices"], roots.get(root["bus"], f"bus{root['bus']}"))
    return tree


def enumerate_buses(session: QmpSession, bridges: int, timeout: float = 60.0) -> None:
    """Lets the firmware run until it has numbered every bridge's secondary bus (query-pci
    shows nothing behind an unnumbered bridge), then pauses the VM again."""
    session.execute("cont")
    deadline = time.monotonic() + timeout
    try:
        while True:
            numbered = _numbered_bridges(query_pci(session))
            if numbered >= bridges:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"firmware numbered {numbered} of {bridges} bridges")
            time.sleep(0.1)
    finally:
        session.execute("stop")


def _numbered_bridges(roots: list[dict[str, Any]]) -> int:
    count = 0

    def walk(devices: list[dict[str, Any]]) -> None:
        nonlocal count
        for device in devices:
            bridge = device.get("pci_bridge")
            if bridge is not None:
                if bridge["bus"]["secondary"] > 0:
                    count += 1
                walk(bridge.get("devices", []))

    for root in roots:
        walk(root["devices"])
    return count
