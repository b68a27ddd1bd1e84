"""The seed guest's agent-like init (tools/lab/guest/seed-init) on a hand-made sysfs tree:
its bridge-by-bridge path resolution, kind numbering and wait, run by busybox sh on the host
(sourced, not PID 1, it only defines its functions)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

INIT = Path(__file__).resolve().parents[2] / "tools" / "lab" / "guest" / "seed-init"
BRIDGE = ("0x1b36", "0x000c", "0x060400")
NIC = ("0x8086", "0x10d3", "0x020000")
# A q35 guest: root ports at 08 and 09 (the second with a two-function device), a switch
# behind the port at 0a, a pxb-pcie root bus 0x20 with a root port, an ICH9 function.
TREE: dict[str, tuple[tuple[str, str, str], str | None]] = {
    "0000:00:08.0": (BRIDGE, "01"),
    "0000:01:00.0": (NIC, None),
    "0000:00:09.0": (BRIDGE, "02"),
    "0000:02:00.0": (NIC, None),
    "0000:02:00.1": (NIC, None),
    "0000:00:0a.0": (BRIDGE, "03"),
    "0000:03:00.0": (("0x104c", "0x8232", "0x060400"), "04"),
    "0000:04:01.0": (("0x104c", "0x8233", "0x060400"), "05"),
    "0000:05:00.0": (NIC, None),
    "0000:00:1f.2": (("0x8086", "0x2922", "0x010601"), None),
    "0000:20:00.0": (BRIDGE, "21"),
    "0000:21:00.0": (NIC, None),
}


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    devices = tmp_path / "bus" / "pci" / "devices"
    for bdf, ((vendor, device, klass), secondary) in TREE.items():
        node = devices / bdf
        node.mkdir(parents=True)
        for name, value in (("vendor", vendor), ("device", device), ("class", klass)):
            (node / name).write_text(value + "\n")
        if secondary is not None:
            (node / "pci_bus" / f"0000:{secondary}").mkdir(parents=True)
    # Only a NUMA kernel has the file; the expander's NIC is on node 1 there.
    (devices / "0000:21:00.0" / "numa_node").write_text("1\n")
    (devices / "0000:01:00.0" / "numa_node").write_text("-1\n")
    return tmp_path


def _seed(sysfs: Path, *commands: str) -> list[dict[str, Any]]:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (apt-get install busybox-static)")
    script = "\n".join([f". {INIT}", "KIND_VENDOR=0x8086 KIND_CLASS=0x0200", *commands])
    done = subprocess.run(
        [busybox, "sh", "-c", script],
        env={"SEED_SYSFS": str(sysfs), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line.removeprefix("SEED ")) for line in done.stdout.splitlines()]


def _resolved(sysfs: Path, *options: str) -> list[dict[str, Any]]:
    (event,) = _seed(sysfs, f"device vfio7 vfio-pci-gk {' '.join(options)}")
    assert (event["event"], event["id"], event["type"]) == ("device", "vfio7", "vfio-pci-gk")
    functions: list[dict[str, Any]] = event["functions"]
    return functions


@pytest.mark.parametrize(
    ("path", "bdf", "index"),
    [
        ("08/00", "0000:01:00.0", 0),
        ("09/00", "0000:02:00.0", 1),
        ("09/00.1", "0000:02:00.1", 2),
        ("0a/00/01/00", "0000:05:00.0", 3),  # root port, switch upstream, downstream, device
        ("20/00/00", "0000:21:00.0", 4),  # an extra root bus first
    ],
)
def test_a_path_is_followed_bridge_by_bridge(sysfs: Path, path: str, bdf: str, index: int) -> None:
    (function,) = _resolved(sysfs, f"0000:aa:00.0={path}")
    assert function["guest_bdf"] == bdf
    assert (function["vendor"], function["device"], function["class"]) == NIC
    assert function["kind_index"] == index  # the NICs counted in guest PCI order
    assert function["host"] == "0000:aa:00.0" and function["path"] == path


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("0b/00", "no bridge 0000:00:0b.0"),
        ("08/01", "no function 0000:01:01.0"),
        ("09/00.2", "no function 0000:02:00.2"),
        ("08/00/00", "0000:01:00.0 has no secondary bus"),
    ],
)
def test_a_path_that_leads_nowhere_says_where_it_stopped(sysfs: Path, path: str, why: str) -> None:
    (function,) = _resolved(sysfs, f"0000:aa:00.0={path}")
    assert function["guest_bdf"] is None
    assert function["why"] == why


@pytest.mark.parametrize(
    ("path", "node"),
    [("20/00/00", 1), ("08/00", -1), ("09/00", -1)],  # 09/00: no file
)
def test_the_guest_numa_node_is_reported(sysfs: Path, path: str, node: int) -> None:
    (function,) = _resolved(sysfs, f"0000:aa:00.0={path}")
    assert function["numa_node"] == node


def test_a_two_function_device_is_resolved_function_by_function(sysfs: Path) -> None:
    functions = _resolved(sysfs, "0000:05:00.0=09/00", "0000:05:00.1=09/00.1")
    assert [f["guest_bdf"] for f in functions] == ["0000:02:00.0", "0000:02:00.1"]
    assert [f["host"] for f in functions] == ["0000:05:00.0", "0000:05:00.1"]


def test_a_function_not_of_the_kind_has_no_index(sysfs: Path) -> None:
    (function,) = _resolved(sysfs, "0000:aa:00.0=1f.2")
    assert function["guest_bdf"] == "0000:00:1f.2"
    assert function["kind_index"] == -1


def test_waiting_reports_what_it_found(sysfs: Path) -> None:
    found, gone = _seed(sysfs, "wait_for 08/00 5 yes", "wait_for 0c/00 5 no")
    assert (found["found"], found["guest_bdf"], found["vendor"]) == ("yes", "0000:01:00.0", NIC[0])
    assert (gone["found"], gone["path"]) == ("no", "0c/00")
