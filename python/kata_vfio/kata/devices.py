"""From an OCI spec's ``linux.devices`` to the host PCI functions a sandbox passes through.

Classification is exact (``/dev/vfio/<group>`` and ``/dev/vfio/devices/vfioN`` pass devices,
``/dev/vfio/vfio`` and ``/dev/iommu`` are control nodes, everything else is not VFIO). Every
VFIO node is expanded to all endpoint functions of its IOMMU group (bridges left out), the
group is refused unless it is assignable, and functions of one physical device are kept
together so they can share one guest slot. Pure: reads only the host snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kata_vfio._core import Bdf, Host, IommuGroup, PciDevice, classify_devnode
from kata_vfio._echo import echo
from kata_vfio.errors import InvalidInputError, NotAssignableError, PlanError
from kata_vfio.host import render
from kata_vfio.vm.devices import HostFunction, PassthroughGroup, PassthroughSlot, VfioNode

__all__ = [
    "SpecDevice",
    "classify_spec_devices",
    "refuse_malformed_vfio_paths",
    "resolve_groups",
]


@dataclass(frozen=True)
class SpecDevice:
    """One ``linux.devices`` entry as it matters here."""

    path: str
    kind: str  # group, cdev, container, iommufd, noiommu-group, other
    type: str | None
    major: int | None
    minor: int | None

    @property
    def is_vfio_device(self) -> bool:
        """A node that passes a device (group or cdev)."""
        return self.kind in ("group", "cdev", "noiommu-group")

    @property
    def is_control(self) -> bool:
        """``/dev/vfio/vfio`` or ``/dev/iommu``."""
        return self.kind in ("container", "iommufd")

    @property
    def devno(self) -> tuple[int, int] | None:
        """``(major, minor)`` when both are known."""
        if self.major is None or self.minor is None:
            return None
        return (self.major, self.minor)


def classify_spec_devices(spec: Mapping[str, Any]) -> tuple[SpecDevice, ...]:
    """The ``linux.devices`` of an OCI spec, each classified by its path (no I/O)."""
    linux = spec.get("linux")
    if linux is None:
        return ()
    if not isinstance(linux, Mapping):
        raise InvalidInputError("OCI spec: 'linux' is not an object", hint="fix config.json")
    entries = linux.get("devices") or []
    if not isinstance(entries, list):
        raise InvalidInputError("OCI spec: 'linux.devices' is not a list", hint="fix config.json")
    devices = []
    for index, entry in enumerate(entries):
        where = f"OCI spec: linux.devices[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
            raise InvalidInputError(f"{where} has no 'path' string", hint="fix config.json")
        path = entry["path"]
        devices.append(
            SpecDevice(
                path=path,
                kind=classify_devnode(path).kind,
                type=_optional(entry, "type", str, where),
                major=_optional(entry, "major", int, where),
                minor=_optional(entry, "minor", int, where),
            )
        )
    return tuple(devices)


def refuse_malformed_vfio_paths(devices: Iterable[SpecDevice]) -> None:
    """Kata takes any path under ``/dev/vfio/`` (but ``/dev/vfio/vfio*``) for a VFIO device
    node; one that is not a well-formed node (``/dev/vfio/1a``, ``/dev/vfio/016``) is refused
    here instead of being passed on as an ordinary device."""
    for device in devices:
        path = device.path
        if (
            device.kind == "other"
            and path.startswith(_VFIO_DIR)
            and len(path) > len(_VFIO_DIR)
            and not path.startswith(_VFIO_DIR + "vfio")
        ):
            raise PlanError(
                f"device path {echo(path)} is under /dev/vfio/ but is not a VFIO device node",
                hint="use /dev/vfio/<group> or /dev/vfio/devices/vfio<N> (decimal, no leading "
                "zeros), as the kernel names them",
            )


_VFIO_DIR = "/dev/vfio/"


def _optional(entry: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidInputError(
            f"{where}.{key} = {echo(value)} is not a {kind.__name__}", hint="fix config.json"
        )
    return value


def resolve_groups(
    host: Host, devices: Iterable[SpecDevice], *, require_iommufd: bool = False
) -> tuple[PassthroughGroup, ...]:
    """Resolves the VFIO nodes among ``devices`` into whole groups, in PCI order.

    Refuses (before anything is launched) a group that is not assignable, naming the blocking
    function and the command that fixes it; a group asked for through both its legacy node
    and a cdev; a noiommu group; and, with ``require_iommufd`` (confidential guests), a
    legacy group node.
    """
    devices = tuple(devices)
    refuse_malformed_vfio_paths(devices)
    nodes: dict[int, list[VfioNode]] = {}
    for spec_device in devices:
        if not spec_device.is_vfio_device:
            continue
        node = _resolve_node(host, spec_device)
        if node.kind == "group" and require_iommufd:
            raise PlanError(
                f"confidential guests need IOMMUFD; cannot use the legacy group node {node.path}",
                hint="bind the devices with vfio cdev support and list /dev/vfio/devices/vfioN "
                "nodes (CDI specs with cdev device nodes)",
            )
        known = nodes.setdefault(node.group, [])
        if any(n.host_path == node.host_path for n in known):
            continue  # the same node twice: one device
        if known and known[0].kind != node.kind:
            raise PlanError(
                f"IOMMU group {node.group} is asked for through both {known[0].path} and "
                f"{node.path}: a group uses either the legacy group node or cdevs",
                hint="list only one kind of node for the group's devices",
            )
        known.append(node)
    groups = [_expand(host, group, tuple(found)) for group, found in nodes.items()]
    return tuple(sorted(groups, key=lambda g: g.slots[0].first))


def _resolve_node(host: Host, spec_device: SpecDevice) -> VfioNode:
    host_path, kind = _host_node(host, spec_device)
    resolved = host.resolve_devnode(host_path)
    # The kernel names a no-IOMMU group's nodes noiommu-<group> and noiommu-vfio<N>.
    if kind == "noiommu-group" or (resolved.cdev or "").startswith("noiommu-"):
        raise PlanError(
            f"{spec_device.path} is a no-IOMMU device node: it has no DMA isolation and "
            "cannot be passed to a VM",
            hint="enable the host IOMMU (intel_iommu=on or amd_iommu=on) and turn off "
            "vfio.enable_unsafe_noiommu_mode",
        )
    group = resolved.group
    if kind == "cdev":
        if not resolved.bdfs:
            raise PlanError(
                f"{spec_device.path}: no PCI function on this host has vfio cdev {resolved.cdev}",
                hint="check that the device is bound to vfio-pci and the node exists",
            )
        owner = host.group_of(resolved.bdfs[0])
        group = owner.id if owner is not None else None
    if group is None or host.find_group(group) is None:
        raise PlanError(
            f"{spec_device.path}: IOMMU group not found on this host",
            hint="check the CDI spec's device node and that the host IOMMU is on "
            "(kata-vfio doctor)",
        )
    devno = spec_device.devno
    if devno is None and resolved.major is not None and resolved.minor is not None:
        devno = (resolved.major, resolved.minor)
    return VfioNode(
        path=spec_device.path,
        kind=kind,
        group=group,
        cdev=resolved.cdev,
        devno=devno,
        host_path=host_path,
    )


def _host_node(host: Host, spec_device: SpecDevice) -> tuple[str, str]:
    """The host node behind a spec entry and its kind. An OCI entry's path is the container's;
    its ``major:minor`` names the host node (Kata reads ``/sys/dev/char/M:m/uevent``), so the
    numbers win when the host knows them."""
    if spec_device.devno is None:
        return spec_device.path, spec_device.kind
    numbered = host.devnode_by_number(*spec_device.devno)
    if numbered is None:
        return spec_device.path, spec_device.kind
    if numbered.kind not in ("group", "cdev", "noiommu-group"):
        major, minor = spec_device.devno
        raise PlanError(
            f"{spec_device.path}: device number {major}:{minor} is {numbered.path} on this "
            "host, not a VFIO group or cdev node",
            hint="fix the major/minor of the linux.devices entry (or the CDI spec's device "
            "node), or leave them out to use the path",
        )
    return numbered.path, numbered.kind


def _expand(host: Host, group_id: int, nodes: tuple[VfioNode, ...]) -> PassthroughGroup:
    group = host.group(group_id)
    if not group.assignable:
        raise _not_assignable(group, nodes[0].path)
    if not group.endpoints:
        raise PlanError(
            f"{nodes[0].path}: IOMMU group {group_id} has no endpoint function to pass",
            hint="the group holds only bridges; pick the device's group instead",
        )
    backend = "iommufd" if nodes[0].kind == "cdev" else "legacy"
    functions = [
        _host_function(host.device(bdf), backend, nodes[0].path) for bdf in group.endpoints
    ]
    return PassthroughGroup(
        group=group_id, backend=backend, nodes=nodes, slots=_slots(sorted(functions, key=_key))
    )


def _key(function: HostFunction) -> Bdf:
    return function.bdf


def _not_assignable(group: IommuGroup, path: str) -> NotAssignableError:
    group_id, blockers, endpoints = group.id, group.blockers, group.endpoints
    if blockers:
        first = blockers[0]
        driver = f" (driver {first.driver})" if first.driver else ""
        others = f" and {len(blockers) - 1} more" if len(blockers) > 1 else ""
        command = render.fix_command(first.fix)
        return NotAssignableError(
            f"{path}: IOMMU group {group_id} is not assignable: {first.bdf}{driver} "
            f"{render.blocker_reason(first)}{others}",
            hint=f"run: {command}" if command else f"fix: {render.fix_text(first)}",
        )
    names = ", ".join(str(b) for b in endpoints)
    listing = render.listing_text(group)
    return NotAssignableError(
        f"{path}: IOMMU group {group_id} is not assignable ({listing or names})",
        hint=None if listing else f"kata-vfio groups shows group {group_id} and why",
    )


def _host_function(device: PciDevice, backend: str, node: str) -> HostFunction:
    if backend == "iommufd" and device.vfio_cdev is None:
        raise PlanError(
            f"{node}: {device.bdf} in the same IOMMU group has no vfio cdev, so the group "
            "cannot be passed through iommufd",
            hint="use a kernel with CONFIG_VFIO_DEVICE_CDEV and bind the function to vfio-pci",
        )
    bars = device.bars
    mmio64 = 0
    if bars is not None:
        mmio64 = sum(
            bar.size for bar in bars if bar.is_64bit and bar.prefetchable and not bar.is_io
        )
    return HostFunction(
        bdf=device.bdf,
        vendor=device.vendor,
        device=device.device,
        class_code=device.class_code,
        numa_node=device.numa_node,
        is_pcie=device.is_pcie,
        is_vf=device.physfn is not None,
        cdev=device.vfio_cdev,
        mmio64=mmio64,
        bars_known=bars is not None,
    )


def _slots(functions: Sequence[HostFunction]) -> tuple[PassthroughSlot, ...]:
    """Functions of one device (same bus/device number) share a slot; an SR-IOV VF is a
    device of its own even when its neighbours have the same device number."""
    slots: list[list[HostFunction]] = []
    for function in functions:
        previous = slots[-1] if slots else None
        if (
            previous is not None
            and not function.is_vf
            and not previous[0].is_vf
            and previous[0].bdf.slot == function.bdf.slot
        ):
            previous.append(function)
        else:
            slots.append([function])
    result = []
    for members in slots:
        numbers = [f.bdf.function for f in members]
        guest = tuple(numbers) if 0 in numbers else tuple(range(len(members)))
        result.append(PassthroughSlot(functions=tuple(members), guest_functions=guest))
    return tuple(result)
