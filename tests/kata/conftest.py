"""Fixtures for the Kata flow tests: real Kata configurations and fake GPU servers."""

from __future__ import annotations

import pytest

# Fixtures shared with tests/qemu live beside the helpers they use.
from sandbox_hosts import ServerBuilder, nvidia_config, zoo

__all__ = ["builder", "nvidia_config", "zoo"]


@pytest.fixture
def builder() -> ServerBuilder:
    """An empty fake server; add devices, then ``build(tmp_path)``."""
    return ServerBuilder()
