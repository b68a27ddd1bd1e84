"""What to hot-plug for a VFIO node: the whole IOMMU group behind it, pure.

The group is expanded and checked exactly as for cold-plug (all endpoint functions, functions
of one device on one port, refused when not assignable); a cdev group gets its own iommufd
object, which unplug deletes again. A VMM backend plugs the result
(:func:`kata_vfio.qemu.hotplug.hotplug_group`).
"""

from __future__ import annotations

from kata_vfio._core import Host
from kata_vfio._echo import echo
from kata_vfio.errors import InvalidInputError
from kata_vfio.kata.devices import classify_spec_devices, resolve_groups
from kata_vfio.vm.hotplug import HotplugGroup, group_hotplug

__all__ = ["node_hotplug"]


def node_hotplug(host: Host, node: str) -> HotplugGroup:
    """The hot-plug of the group behind a ``/dev/vfio/<group>`` or
    ``/dev/vfio/devices/vfioN`` node of ``host``."""
    devices = classify_spec_devices({"linux": {"devices": [{"path": node}]}})
    groups = resolve_groups(host, devices)
    if not groups:
        raise InvalidInputError(
            f"{echo(node)} is not a VFIO device node",
            hint="give /dev/vfio/<group> or /dev/vfio/devices/vfioN",
        )
    return group_hotplug(groups[0])
