"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from shared_paths import SNAPSHOTS, copy_snapshot

# Tests never assert on wall time: hypothesis's per-example deadline (200 ms) fails examples
# when the 2-core machine is busy (a lab boot beside the suite), so it is off everywhere.
settings.register_profile("kata-vfio", deadline=None)
settings.load_profile("kata-vfio")


def pytest_configure(config: pytest.Config) -> None:
    """Test files are written with plain ``open()``; a group-writable umask (002) would make
    the CDI specs they write untrusted (the registry refuses them), so fix the usual one."""
    del config
    os.umask(0o022)


@pytest.fixture(scope="session")
def snapshot_root(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A function ``name -> sys root`` giving a private, link-restored copy of a snapshot."""
    copies: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in copies:
            if not (SNAPSHOTS / name).is_dir():
                pytest.skip(f"snapshot {name} not found under {SNAPSHOTS}")
            copies[name] = copy_snapshot(SNAPSHOTS / name, tmp_path_factory.mktemp(name) / name)
        return copies[name]

    return get
