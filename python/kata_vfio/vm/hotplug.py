"""Hot-plug slots, hypervisor-neutral: an IOMMU group to plug into a running VM, as the
devices (slots) that each go into one free port, and the functions of each.

A backend turns a :class:`HotplugGroup` into its own commands (QEMU: ``object-add`` of the
iommufd object, ``device_add`` of each function, function 0 last; see
:mod:`kata_vfio.qemu.hotplug`).
"""

from __future__ import annotations

from dataclasses import dataclass

from kata_vfio._core import Bdf
from kata_vfio.vm.devices import PassthroughGroup, function_id
from kata_vfio.vm.placement import PlannedDevice, hotplug_iommufd_id

__all__ = ["HotplugGroup", "SlotFunction", "deferred_hotplug", "group_hotplug"]


@dataclass(frozen=True)
class SlotFunction:
    """One host function of a hot-plugged device: its VMM device id and guest function."""

    device_id: str
    host: Bdf
    guest_function: int


@dataclass(frozen=True)
class HotplugGroup:
    """An IOMMU group to hot-plug: ``slots`` holds the functions of each physical device,
    each device into its own free port (the first free of ``ports`` when the plan reserved
    some, else of all the VM's ports); ``iommufd`` is the iommufd object its cdevs use,
    created before and deleted after them (None for legacy VFIO groups)."""

    group: int
    slots: tuple[tuple[SlotFunction, ...], ...]
    iommufd: str | None = None
    ports: tuple[str, ...] = ()

    @property
    def device_ids(self) -> tuple[str, ...]:
        """Every function's device id, slot by slot."""
        return tuple(f.device_id for slot in self.slots for f in slot)


def group_hotplug(group: PassthroughGroup) -> HotplugGroup:
    """The hot-plug of a resolved group, into any free ports; a cdev group gets its own
    iommufd object, so unplugging it can delete the object again."""
    return HotplugGroup(
        group=group.group,
        slots=tuple(
            tuple(
                SlotFunction(function_id(function.bdf), function.bdf, guest_function)
                for function, guest_function in zip(
                    slot.functions, slot.guest_functions, strict=True
                )
            )
            for slot in group.slots
        ),
        iommufd=hotplug_iommufd_id(group.group) if group.backend == "iommufd" else None,
    )


def deferred_hotplug(device: PlannedDevice) -> HotplugGroup:
    """The hot-plug of a planned device (``plug == "hot"``) into the ports its plan chose,
    functions in guest order."""
    slots: dict[str, list[SlotFunction]] = {}
    for function in sorted(device.functions, key=lambda f: f.guest_order):
        slots.setdefault(function.port, []).append(
            SlotFunction(function.device_id, function.bdf, function.guest_function)
        )
    return HotplugGroup(
        group=device.group,
        slots=tuple(tuple(slot) for slot in slots.values()),
        iommufd=device.iommufd,
        ports=tuple(slots),
    )
