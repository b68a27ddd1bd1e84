"""Fixtures for the Kata flow tests: real Kata configurations and fake GPU servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from hosts import FakeServer, ServerBuilder, zoo_server

from kata_vfio.cdi import DevfsLookup, Registry, generate_vfio_spec, write_vfio_spec
from kata_vfio.kata.config import KataConfig, load_config

KATA_CONFIGS = Path(__file__).resolve().parents[3] / "shared" / "data" / "kata-configs"
NVIDIA_GO = KATA_CONFIGS / "runtime-go" / "configuration-qemu-nvidia-gpu.toml"


@pytest.fixture
def builder() -> ServerBuilder:
    """An empty fake server; add devices, then ``build(tmp_path)``."""
    return ServerBuilder()


Zoo = tuple[FakeServer, dict[str, list[str]]]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    """The shared fake server (see ``hosts.ZOO``), built once per session; read-only."""
    return zoo_server(tmp_path_factory.mktemp("zoo") / "host")


@pytest.fixture
def nvidia_config(tmp_path: Path) -> KataConfig:
    """Kata's NVIDIA GPU configuration (cold_plug_vfio = root-port, 8 root ports), copied."""
    if not NVIDIA_GO.is_file():
        pytest.skip(f"Kata configurations not found under {KATA_CONFIGS}")
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
        naming=naming,
        cdev=cdev,
        devices=devices,  # type: ignore[arg-type]
    )
    spec_dir.mkdir(parents=True, exist_ok=True)
    write_vfio_spec(spec, str(spec_dir))
    return Registry([spec_dir], device_lookup=DevfsLookup(server.dev_root, server.sysfs_root))
