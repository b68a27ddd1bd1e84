"""Where the project's read-only test data lives (``shared/data`` beside the checkout).

Found, in order: ``$KATA_VFIO_SHARED_DATA``; a ``shared/data`` folder beside the checkout or
beside any folder above it. Tests that need it skip, naming the path, when it is absent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _find() -> Path:
    override = os.environ.get("KATA_VFIO_SHARED_DATA")
    if override:
        return Path(override)
    for folder in REPO.parents:
        candidate = folder / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared" / "data"


SHARED_DATA = _find()

SNAPSHOTS = SHARED_DATA / "sysfs-snapshots"


def _looks_like_flattened_link(path: Path) -> str | None:
    """The link target if ``path`` is a symlink that was stored as a small file holding its
    relative target (how the shared snapshots arrive: one line, no newline, ``../`` first)."""
    try:
        if path.stat().st_size > 1024:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(b"../") or b"\n" in data or b"\0" in data:
        return None
    return data.decode("utf-8", "replace")


def copy_snapshot(source: Path, destination: Path) -> Path:
    """Copies a sysfs snapshot and turns flattened links back into relative symlinks, so the
    copy is laid out exactly as the machine's /sys was. Returns the copy's ``sys`` root."""
    shutil.copytree(source, destination, symlinks=True)
    for directory, _dirs, files in os.walk(destination):
        for name in files:
            path = Path(directory) / name
            target = _looks_like_flattened_link(path)
            if target is not None:
                path.unlink()
                path.symlink_to(target)
    return destination / "sys"


def snapshot_names() -> list[str]:
    """The real-machine snapshots in shared/data (empty when that folder is absent)."""
    if not SNAPSHOTS.is_dir():
        return []
    return sorted(p.name for p in SNAPSHOTS.iterdir() if (p / "sys").is_dir())
