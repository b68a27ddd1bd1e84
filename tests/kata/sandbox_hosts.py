"""Fake GPU servers for the sandbox tests, described in ``kata_vfio.testing``'s compact form.

Every device sits behind its own PCIe root port (``0000:00:<n>.0``, bus ``n``), as on a real
server with ACS; a GPU's HD-audio function shares the GPU's IOMMU group, as it does on real
hardware. IDs are real: L40S 10de:26b9 with audio 10de:22ba, H100 10de:2330, GH100 NVSwitch
10de:22a3, ConnectX-7 15b3:1021, Instinct MI300X 1002:74a1, Arc A770 8086:56a0, PM9A3 NVMe
144d:a80a.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import kata_vfio._core as core
from kata_vfio.cdi import DevfsLookup, Registry, generate_vfio_spec, write_vfio_spec
from kata_vfio.kata.config import KataConfig, load_config
from kata_vfio.testing import build_host
from shared_paths import SHARED_DATA

KATA_CONFIGS = SHARED_DATA / "kata-configs"
NVIDIA_GO = KATA_CONFIGS / "runtime-go" / "configuration-qemu-nvidia-gpu.toml"

MIB = 1 << 20
GIB = 1 << 30

# name -> (vendor:device, class, BARs in compact form)
MODELS: dict[str, tuple[str, str, list[str | None]]] = {
    "l40s": ("10de:26b9", "030200", ["16M mem64", None, "64G mem64 pref", None, "32M mem64 pref"]),
    "h100": ("10de:2330", "030200", ["16M mem64", None, "128G mem64 pref", None, "32M mem64 pref"]),
    "nvswitch": ("10de:22a3", "068000", ["32M mem64"]),
    "cx7": ("15b3:1021", "020000", ["32M mem64 pref"]),
    "mi300x": ("1002:74a1", "120000", ["256G mem64 pref", None, "2M mem64 pref", None, None]),
    "arc": ("8086:56a0", "030000", ["16M mem64", None, "16G mem64 pref"]),
    "nvme": ("144d:a80a", "010802", ["16K mem64"]),
}
AUDIO = ("10de:22ba", "040300", ["16K mem32"])


@dataclass
class ServerBuilder:
    """Adds devices one by one; :meth:`build` writes the tree and scans it."""

    devices: list[dict[str, Any]] = field(default_factory=list)
    next_bus: int = 1
    next_group: int = 10
    cdev: bool = True

    def add(
        self,
        model: str,
        *,
        audio: bool = False,
        numa: int | None = 0,
        driver: str | None = "vfio-pci",
        audio_driver: str | None = "vfio-pci",
        bus: int | None = None,
    ) -> list[str]:
        """One device behind a new root port; returns its functions' BDFs."""
        ident, klass, bars = MODELS[model]
        bus = self.next_bus if bus is None else bus
        self.next_bus = max(self.next_bus, bus + 1)
        port = f"0000:00:{bus:02x}.0"
        self.devices.append(
            {
                "bdf": port,
                "id": "8086:347a",
                "class": "060400",
                "driver": "pcieport",
                "group": self._group(),
                "numa": numa,
            }
        )
        group = self._group()
        main = f"0000:{bus:02x}:00.0"
        self.devices.append(
            {
                "bdf": main,
                "id": ident,
                "class": klass,
                "bars": bars,
                "parent": port,
                "driver": driver,
                "group": group,
                "numa": numa,
            }
        )
        functions = [main]
        if audio:
            sound = f"0000:{bus:02x}:00.1"
            self.devices.append(
                {
                    "bdf": sound,
                    "id": AUDIO[0],
                    "class": AUDIO[1],
                    "bars": AUDIO[2],
                    "parent": port,
                    "driver": audio_driver,
                    "group": group,
                    "numa": numa,
                }
            )
            functions.append(sound)
        return functions

    def _group(self) -> int:
        self.next_group += 1
        return self.next_group - 1

    def build(self, root: Path) -> FakeServer:
        """Writes the fake host under ``root`` and scans it with details."""
        nodes = 1 + max((d.get("numa") or 0 for d in self.devices), default=0)
        fake = build_host(
            root,
            {"iommu": "intel", "cdev": self.cdev, "numa_nodes": nodes, "devices": self.devices},
        )
        host = core.scan(fake.sysfs_root, fake.dev_root, fake.proc_root, details=True)
        return FakeServer(fake.sysfs_root, fake.dev_root, fake.proc_root, host)


@dataclass(frozen=True)
class FakeServer:
    """A built fake host and its scan."""

    sysfs_root: str
    dev_root: str
    proc_root: str
    host: core.Host

    def group_node(self, bdf: str) -> str:
        """``/dev/vfio/<group>`` of a function."""
        node = self.host.group_node(bdf)
        assert node is not None
        return node

    def cdev_node(self, bdf: str) -> str:
        """``/dev/vfio/devices/vfioN`` of a function."""
        node = self.host.cdev_node(bdf)
        assert node is not None
        return node


def gpu_server(root: Path, *, gpus: int = 8, audio: bool = True, nics: int = 4) -> FakeServer:
    """The benchmark machine: ``gpus`` L40S (each with its audio function), ``nics``
    ConnectX-7, split over two NUMA nodes."""
    builder = ServerBuilder()
    for index in range(gpus):
        builder.add("l40s", audio=audio, numa=index * 2 // max(gpus, 1))
    for index in range(nics):
        builder.add("cx7", numa=index * 2 // max(nics, 1))
    return builder.build(root)


def oci_spec(
    devices: list[str] | None = None,
    annotations: dict[str, str] | None = None,
    devnos: dict[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """A minimal OCI spec with ``linux.devices`` for the given host paths."""
    entries = []
    for path in devices or []:
        entry: dict[str, Any] = {"path": path, "type": "c"}
        if devnos and path in devnos:
            entry["major"], entry["minor"] = devnos[path]
        entries.append(entry)
    spec: dict[str, Any] = {
        "ociVersion": "1.1.0",
        "process": {"args": ["sh"]},
        "linux": {"devices": entries},
    }
    if annotations:
        spec["annotations"] = dict(annotations)
    return spec


# The shared test server: bus number -> (model, audio, numa, driver, audio driver).
ZOO: dict[str, tuple[int, str, bool, int, str | None, str | None]] = {
    "gpu0": (1, "l40s", True, 0, "vfio-pci", "vfio-pci"),
    "gpu1": (2, "l40s", True, 0, "vfio-pci", "vfio-pci"),
    "h100a": (3, "h100", False, 0, "vfio-pci", None),
    "h100b": (4, "h100", False, 1, "vfio-pci", None),
    "nvswitch0": (5, "nvswitch", False, 0, "vfio-pci", None),
    "nvswitch1": (6, "nvswitch", False, 0, "vfio-pci", None),
    "nic0": (7, "cx7", False, 0, "vfio-pci", None),
    "nic1": (8, "cx7", False, 1, "vfio-pci", None),
    "mi300x": (9, "mi300x", False, 1, "vfio-pci", None),
    "arc": (10, "arc", False, 1, "vfio-pci", None),
    "nvme": (11, "nvme", False, 1, "vfio-pci", None),
    "busy_audio": (12, "l40s", True, 0, "vfio-pci", "snd_hda_intel"),
    "unbound": (13, "h100", False, 0, None, None),
    **{f"extra{i}": (14 + i, "h100", False, 0, "vfio-pci", None) for i in range(6)},
}


def zoo_server(root: Path) -> tuple[FakeServer, dict[str, list[str]]]:
    """One server with every kind of device the flow tests need; returns it and the BDFs of
    each named device."""
    builder = ServerBuilder()
    names: dict[str, list[str]] = {}
    for name, (bus, model, audio, numa, driver, audio_driver) in ZOO.items():
        names[name] = builder.add(
            model, audio=audio, numa=numa, driver=driver, audio_driver=audio_driver, bus=bus
        )
    return builder.build(root), names


Zoo = tuple[FakeServer, dict[str, list[str]]]


def nvidia_kata_config(tmp_path: Path) -> KataConfig | None:
    """Kata's NVIDIA GPU configuration, copied into ``tmp_path``; None when shared/data is
    not there."""
    if not NVIDIA_GO.is_file():
        return None
    copy = tmp_path / NVIDIA_GO.name
    copy.write_bytes(NVIDIA_GO.read_bytes())
    return load_config(copy, host_cpus=64)


def cdi_registry(
    server: FakeServer,
    spec_dir: Path,
    devices: list[str],
    *,
    kind: str = "nvidia.com/pgpu",
    naming: str = "index",
    cdev: bool = False,
) -> Registry:
    """A real CDI registry over a spec generated from the fake host for ``devices`` (first
    functions), with device numbers read from the fake devfs (as udev would name them)."""
    spec = generate_vfio_spec(
        server.host,
        kind=kind,
        naming=naming,  # type: ignore[arg-type]
        cdev=cdev,
        devices=devices,
    )
    spec_dir.mkdir(parents=True, exist_ok=True)
    write_vfio_spec(spec, str(spec_dir))
    return Registry([spec_dir], device_lookup=DevfsLookup(server.dev_root, server.sysfs_root))


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    """The shared fake server (see ``ZOO``), built once per session; read-only."""
    return zoo_server(tmp_path_factory.mktemp("zoo") / "host")


@pytest.fixture
def nvidia_config(tmp_path: Path) -> KataConfig:
    """Kata's NVIDIA GPU configuration (cold_plug_vfio = root-port, 8 root ports), copied."""
    config = nvidia_kata_config(tmp_path)
    if config is None:
        pytest.skip(f"Kata configurations not found under {KATA_CONFIGS}")
    return config
