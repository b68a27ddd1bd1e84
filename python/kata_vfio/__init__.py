"""kata_vfio: the host side of VFIO device passthrough into Kata Containers sandboxes.

Facts come from the Rust core (:func:`scan`), plans are pure functions (CDI injection, PCIe
topology, QEMU argv), effects are thin and explicit (write a spec, bind a group, launch QEMU).

>>> import kata_vfio
>>> host = kata_vfio.scan()                      # /sys and /dev of this machine
>>> for group in host.groups:
...     print(group.id, group.assignable, [str(b) for b in group.endpoints])
"""

from __future__ import annotations

from kata_vfio import errors
from kata_vfio._core import (
    Bar,
    Bdf,
    Blocker,
    DevNode,
    Fix,
    Host,
    HostPaths,
    IommuGroup,
    IommuStatus,
    PciDevice,
    PciLink,
    ReadProblem,
    __version__,
    classify_devnode,
    read_details,
    scan,
)

__all__ = [
    "Bar",
    "Bdf",
    "Blocker",
    "DevNode",
    "Fix",
    "Host",
    "HostPaths",
    "IommuGroup",
    "IommuStatus",
    "PciDevice",
    "PciLink",
    "ReadProblem",
    "__version__",
    "classify_devnode",
    "errors",
    "read_details",
    "scan",
]
