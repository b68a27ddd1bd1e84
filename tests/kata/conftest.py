"""Fixtures for the Kata flow tests: real Kata configurations and fake GPU servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from sandbox_hosts import KATA_CONFIGS, ServerBuilder, Zoo, nvidia_kata_config, zoo_server

from kata_vfio.kata.config import KataConfig


@pytest.fixture
def builder() -> ServerBuilder:
    """An empty fake server; add devices, then ``build(tmp_path)``."""
    return ServerBuilder()


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    """The shared fake server (see ``sandbox_hosts.ZOO``), built once per session; read-only."""
    return zoo_server(tmp_path_factory.mktemp("zoo") / "host")


@pytest.fixture
def nvidia_config(tmp_path: Path) -> KataConfig:
    """Kata's NVIDIA GPU configuration (cold_plug_vfio = root-port, 8 root ports), copied."""
    config = nvidia_kata_config(tmp_path)
    if config is None:
        pytest.skip(f"Kata configurations not found under {KATA_CONFIGS}")
    return config
