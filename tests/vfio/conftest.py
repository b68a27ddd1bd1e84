"""Fake hosts for the binding and VFIO tests, shaped like the real-kernel lab (lab.md): a
single-function group, a switch group (downstream port + NIC), a two-function group, a
group behind a PCIe-to-PCI bridge, and the q35 ICH9 multi-function group; plus a GPU with
its audio function in one group."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kata_vfio.testing import FakeHost, build_host
from kata_vfio.testing.kernel_sim import KernelSim

E1000E = "8086:10d3"
E1000 = "8086:100e"
ROOT_PORT = "1b36:000c"

LAB_DEVICES: list[dict[str, Any]] = [
    {"bdf": "0000:00:00.0", "id": "8086:29c0", "class": "060000", "group": 0},
    {"bdf": "0000:00:10.0", "id": ROOT_PORT, "class": "060400", "driver": "pcieport", "group": 1},
    {"bdf": "0000:00:11.0", "id": ROOT_PORT, "class": "060400", "driver": "pcieport", "group": 2},
    {"bdf": "0000:00:12.0", "id": ROOT_PORT, "class": "060400", "driver": "pcieport", "group": 3},
    {"bdf": "0000:00:13.0", "id": ROOT_PORT, "class": "060400", "driver": "pcieport", "group": 4},
    {"bdf": "0000:00:1f.0", "id": "8086:2918", "class": "060100", "driver": "lpc_ich", "group": 8},
    {"bdf": "0000:00:1f.2", "id": "8086:2922", "class": "010601", "driver": "ahci", "group": 8},
    {"bdf": "0000:00:1f.3", "id": "8086:2930", "class": "0c0500", "driver": "i801_smbus",
     "group": 8},
    {"bdf": "0000:01:00.0", "id": E1000E, "class": "020000", "driver": "e1000e", "group": 9,
     "parent": "0000:00:10.0", "bars": ["128K mem32", "128K mem32", "32 io", "16K mem32"]},
    {"bdf": "0000:02:00.0", "id": "104c:8232", "class": "060400", "driver": "pcieport",
     "group": 10, "parent": "0000:00:11.0"},
    {"bdf": "0000:03:00.0", "id": "104c:8233", "class": "060400", "driver": "pcieport",
     "group": 11, "parent": "0000:02:00.0"},
    {"bdf": "0000:04:00.0", "id": E1000E, "class": "020000", "driver": "e1000e", "group": 11,
     "parent": "0000:03:00.0"},
    {"bdf": "0000:05:00.0", "id": E1000E, "class": "020000", "driver": "e1000e", "group": 12,
     "parent": "0000:00:12.0"},
    {"bdf": "0000:05:00.1", "id": E1000E, "class": "020000", "driver": "e1000e", "group": 12,
     "parent": "0000:00:12.0"},
    {"bdf": "0000:06:00.0", "id": "1b36:000e", "class": "060400", "group": 13,
     "parent": "0000:00:13.0"},
    {"bdf": "0000:07:01.0", "id": E1000, "class": "020000", "driver": "e1000", "group": 13,
     "parent": "0000:06:00.0", "pcie": False},
    {"bdf": "0000:07:02.0", "id": E1000, "class": "020000", "driver": "e1000", "group": 13,
     "parent": "0000:06:00.0", "pcie": False},
]  # fmt: skip

GPU_DEVICES: list[dict[str, Any]] = [
    {"bdf": "0000:80:01.0", "id": "8086:347a", "class": "060400", "driver": "pcieport",
     "group": 40},
    {"bdf": "0000:81:00.0", "id": "10de:26b9", "class": "030000", "driver": "nvidia",
     "group": 41, "parent": "0000:80:01.0", "subsys": "10de:1851"},
    {"bdf": "0000:81:00.1", "id": "10de:22ba", "class": "040300", "driver": "snd_hda_intel",
     "group": 41, "parent": "0000:80:01.0"},
]  # fmt: skip


def build(root: Path, devices: list[dict[str, Any]], **host: Any) -> FakeHost:
    """A fake host with ``devices`` (dict form) and host-wide settings."""
    return build_host(root, {"iommu": "intel", **host, "devices": devices})


def _memory_dir() -> str | None:
    """A tmpfs directory (a fake host is hundreds of small files: on a busy disk each costs
    milliseconds, in memory microseconds), or None to use pytest's tmp_path."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


@pytest.fixture(scope="session")
def scratch_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where this session's fake hosts go: tmpfs when there is one."""
    base = _memory_dir()
    if base is None:
        yield tmp_path_factory.mktemp("vfio")
        return
    root = Path(tempfile.mkdtemp(prefix="kata-vfio-tests-", dir=base))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def scratch(scratch_root: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh directory for one test, under :func:`scratch_root`."""
    return Path(tempfile.mkdtemp(prefix=request.node.name[:40] + "-", dir=scratch_root))


@pytest.fixture
def lab_host(scratch: Path) -> FakeHost:
    """The lab's emulated topology plus the GPU group, every device on its host driver."""
    return build(scratch / "host", LAB_DEVICES + GPU_DEVICES)


@pytest.fixture
def sim(lab_host: FakeHost) -> KernelSim:
    """The kernel behind ``lab_host``'s binding files."""
    return KernelSim.for_host(lab_host)


def binding_options(host: FakeHost, sim: KernelSim, state_dir: Path) -> dict[str, Any]:
    """Keyword arguments that point binding at a fake host and its simulated kernel."""
    modules_root = Path(host.root) / "modules"
    os.makedirs(modules_root, exist_ok=True)
    return {
        "paths": host.paths,
        "state_dir": str(state_dir),
        "sysfs_writer": sim.write,
    }


@pytest.fixture
def opts(lab_host: FakeHost, sim: KernelSim, scratch: Path) -> dict[str, Any]:
    """Options for :func:`kata_vfio.binding.bind` on ``lab_host``."""
    return binding_options(lab_host, sim, scratch / "state")


@pytest.fixture
def bind_opts(opts: dict[str, Any], sim: KernelSim, lab_host: FakeHost) -> dict[str, Any]:
    """``opts`` plus the bind-only options (module loader, empty modules.alias root)."""
    return {
        **opts,
        "module_loader": sim.load_module,
        "modules_root": str(Path(lab_host.root) / "modules"),
        "kernel_release": "6.12.0-test",
    }
