"""Small helpers shared by the guest-side checks."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

from kata_vfio import binding


@contextlib.contextmanager
def bound(bdfs: list[str], *, group: bool = True) -> Iterator[None]:
    """``bdfs`` on vfio-pci for the ``with`` body (through the project), then restored."""
    with tempfile.TemporaryDirectory(prefix="kvlab-journal-") as state_dir:
        binding.bind(bdfs, group=group, state_dir=state_dir)
        try:
            yield
        finally:
            binding.restore(state_dir=state_dir)
