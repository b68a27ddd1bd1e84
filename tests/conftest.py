"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_paths import SNAPSHOTS, copy_snapshot


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
