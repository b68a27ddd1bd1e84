"""kata_vfio: the host side of VFIO device passthrough into Kata Containers sandboxes.

Facts come from the Rust core (:func:`scan`), plans are pure functions (CDI injection, PCIe
topology, QEMU argv), effects are thin and explicit (write a spec, bind a group, launch QEMU).
"""

from __future__ import annotations

from kata_vfio import errors
from kata_vfio._core import Bdf, __version__

__all__ = ["Bdf", "__version__", "errors"]
