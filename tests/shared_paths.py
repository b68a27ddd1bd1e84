"""Where the project's read-only test data lives (``shared/data`` beside the checkout).

Found, in order: ``$KATA_VFIO_SHARED_DATA``; a ``shared/data`` folder beside the checkout or
beside any folder above it. Tests that need it skip, naming the path, when it is absent.
"""

from __future__ import annotations

import os
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
