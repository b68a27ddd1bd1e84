"""What to hot-plug for a VFIO node: the QMP request for a whole IOMMU group, pure.

The group is expanded and checked exactly as for cold-plug (all endpoint functions, functions
of one device on one port, refused when not assignable); a cdev group gets its own iommufd
object, which unplug deletes again.
"""

from __future__ import annotations

from kata_vfio._core import Host
from kata_vfio.errors import PlanError
from kata_vfio.kata.devices import (
    PassthroughGroup,
    classify_spec_devices,
    function_id,
    resolve_groups,
)
from kata_vfio.qemu.qmp import HotplugFunction, HotplugRequest
from kata_vfio.vm.placement import hotplug_iommufd_id

__all__ = ["group_request", "hotplug_request"]


def hotplug_request(host: Host, node: str) -> HotplugRequest:
    """The request that hot-plugs the group behind a ``/dev/vfio/<group>`` or
    ``/dev/vfio/devices/vfioN`` node of ``host``."""
    devices = classify_spec_devices({"linux": {"devices": [{"path": node}]}})
    groups = resolve_groups(host, devices)
    if not groups:
        raise PlanError(
            f"{node} is not a VFIO device node",
            hint="give /dev/vfio/<group> or /dev/vfio/devices/vfioN",
        )
    return group_request(groups[0])


def group_request(group: PassthroughGroup) -> HotplugRequest:
    """The request for an already resolved group."""
    iommufd = hotplug_iommufd_id(group.group) if group.backend == "iommufd" else None
    link: tuple[tuple[str, str], ...] = (("iommufd", iommufd),) if iommufd else ()
    return HotplugRequest(
        slots=tuple(
            tuple(
                HotplugFunction(
                    qemu_id=function_id(function.bdf),
                    guest_function=guest_function,
                    props=(("host", str(function.bdf)), *link),
                )
                for function, guest_function in zip(
                    slot.functions, slot.guest_functions, strict=True
                )
            )
            for slot in group.slots
        ),
        iommufd=iommufd,
    )
