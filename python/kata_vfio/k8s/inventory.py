"""The node inventory: the allocatable units of each resource, from one host scan.

A unit is one IOMMU group that holds a function the resource selects; it carries every endpoint
of the group (the GPU and its audio function, a NIC's functions), because the kernel hands a
group to one user only and the sandbox must get all of it. Companions the selector does not
name come along. A group that cannot be passed through as it stands is still listed, Unhealthy,
with the reasons, so the kubelet and the operator see it instead of a unit that silently went
missing.

The unit's ID is the PCI address of its first selected function (``0000:18:00.0``): it is the
CDI device name too, so ``<resource>=<id>`` always resolves (Kata issue 12549), it survives a
reboot (group numbers do not), and it is the same in both IOMMU modes. It is at most 13
characters, well inside the kubelet's 63.

Pure: :func:`build_inventory` reads only the :class:`~kata_vfio.Host` snapshot it is given.
The device plugin and the DRA driver both build on it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kata_vfio._core import Bdf, Host, IommuGroup, PciDevice
from kata_vfio._echo import echo
from kata_vfio.errors import InvalidInputError
from kata_vfio.host.render import blocker_reason, unknown_reasons
from kata_vfio.k8s.resources import ResourceSpec

__all__ = [
    "IOMMU_MODES",
    "Function",
    "Inventory",
    "IommuMode",
    "Locality",
    "ResourceUnits",
    "Unit",
    "build_inventory",
    "list_devfs_nodes",
    "resolve_iommu_mode",
]

IommuMode = Literal["legacy", "iommufd"]
IOMMU_MODES: tuple[str, ...] = ("legacy", "iommufd", "auto")

VFIO_CONTAINER_NODE = "/dev/vfio/vfio"
IOMMUFD_NODE = "/dev/iommu"


@dataclass(frozen=True, slots=True)
class Function:
    """One endpoint of a unit's group."""

    bdf: Bdf
    vendor: int
    device: int
    class_code: int
    driver: str | None
    selected: bool
    """Whether the resource's selector takes it (False: a companion in the same group)."""
    vfio_bound: bool
    cdev: str | None
    numa_node: int | None


@dataclass(frozen=True, slots=True)
class Locality:
    """Where a unit sits, for preferred allocations and DRA attributes."""

    numa_node: int | None
    root_complex: str
    """The host bridge's bus, as sysfs names it (``pci0000:15``; the DRA ``pcieRoot``)."""
    root_port: Bdf | None
    """The first bridge below the host bridge (None when the unit sits on the root bus)."""
    switch: Bdf | None
    """The nearest bridge above the unit's own port (a switch's upstream port); None when the
    unit hangs directly off a root port or the root bus."""


@dataclass(frozen=True, slots=True)
class Unit:
    """One allocatable unit: an IOMMU group of a resource."""

    id: str
    resource: str
    group: int
    functions: tuple[Function, ...]
    locality: Locality
    reasons: tuple[str, ...] = ()
    """Why the unit is Unhealthy; empty when Healthy."""
    nodes: tuple[str, ...] = ()
    """The VFIO device nodes a container needs, for the inventory's IOMMU mode; empty when
    they cannot be named (an iommufd unit whose functions have no cdev)."""
    largest_bar: int | None = None
    """Size of the largest memory BAR of the group's functions (None without scan details)."""
    passthrough_driver: str | None = None
    """The vfio driver the unit's first function is bound to, or that a prepare would bind it
    to (vfio-pci or a variant); set by the DRA plugin's review, None when not known. Unlike
    the current driver, it stays the same across prepare and unprepare."""

    @property
    def healthy(self) -> bool:
        """No reasons against it."""
        return not self.reasons

    @property
    def bdfs(self) -> tuple[Bdf, ...]:
        """Every function of the group, in PCI order."""
        return tuple(f.bdf for f in self.functions)

    @property
    def cdi_name(self) -> str:
        """The fully qualified CDI device name, ``<resource>=<id>``."""
        return f"{self.resource}={self.id}"


@dataclass(frozen=True, slots=True)
class ResourceUnits:
    """The units of one resource, in PCI order of their IDs."""

    resource: ResourceSpec
    units: tuple[Unit, ...]
    _by_id: Mapping[str, Unit] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {u.id: u for u in self.units})

    def unit(self, unit_id: str) -> Unit | None:
        """The unit with this ID, None when there is none."""
        return self._by_id.get(unit_id)

    @property
    def healthy(self) -> tuple[Unit, ...]:
        """The Healthy units."""
        return tuple(u for u in self.units if u.healthy)


@dataclass(frozen=True, slots=True)
class Inventory:
    """Every configured resource's units, with the IOMMU mode their nodes were named for and
    the host-wide problems (which make every unit Unhealthy)."""

    mode: IommuMode
    resources: tuple[ResourceUnits, ...]
    host_problems: tuple[str, ...] = ()

    def resource(self, name: str) -> ResourceUnits:
        """The units of resource ``name``; raises :class:`KeyError` for an unknown one."""
        for entry in self.resources:
            if entry.resource.name == name:
                return entry
        raise KeyError(name)

    @property
    def units(self) -> tuple[Unit, ...]:
        """Every unit of every resource."""
        return tuple(u for r in self.resources for u in r.units)


def resolve_iommu_mode(host: Host, requested: str) -> IommuMode:
    """``legacy`` or ``iommufd`` as asked; ``auto`` is iommufd when the host has ``/dev/iommu``
    and the kernel has VFIO cdevs (``class/vfio-dev`` exists: one stat of the host's sysfs),
    else legacy."""
    if requested == "legacy":
        return "legacy"
    if requested == "iommufd":
        return "iommufd"
    if requested != "auto":
        raise InvalidInputError(
            f"invalid IOMMU mode {echo(requested)}", hint=f"use one of {', '.join(IOMMU_MODES)}"
        )
    cdevs = os.path.isdir(os.path.join(host.sysfs_root, "class", "vfio-dev"))
    return "iommufd" if host.iommu.iommufd_node and cdevs else "legacy"


def list_devfs_nodes(host: Host) -> frozenset[str]:
    """The VFIO nodes present in the host's devfs, as ``/dev/...`` paths (two directory
    listings: ``<dev>/vfio`` and ``<dev>/vfio/devices``). A node the kernel registered can be
    missing from the devfs a container sees; KubeVirt's plugin checks only this."""
    found: set[str] = set()
    for rel in ("vfio", "vfio/devices"):
        try:
            names = os.listdir(os.path.join(host.dev_root, rel))
        except OSError:
            continue
        found.update(f"/dev/{rel}/{name}" for name in names)
    return frozenset(found)


def build_inventory(
    host: Host,
    resources: Sequence[ResourceSpec],
    mode: IommuMode,
    *,
    devfs_nodes: Collection[str] | None = None,
    bind_on_prepare: bool = False,
) -> Inventory:
    """The units of each resource on ``host`` (see the module docstring). A group that holds
    functions of two resources belongs to the first one given; the other lists it Unhealthy.

    A unit's nodes must be registered by the kernel (the scan's ``devnodes``) and, when
    ``devfs_nodes`` is given (:func:`list_devfs_nodes`), present in the devfs too.

    ``bind_on_prepare`` is the DRA driver's view: it binds a unit's group to vfio when a claim
    is prepared, so a function on its host driver (or none) is no reason against the unit, and
    neither are the VFIO nodes that binding will create; every other reason stays (no IOMMU, a
    bridge on a DMA driver, a member that cannot be read, a no-IOMMU group)."""
    problems = _host_problems(host, mode)
    context = _Context(
        host,
        mode,
        bind_on_prepare,
        _NodeCheck(
            frozenset(n.path for n in host.devnodes),
            None if devfs_nodes is None else frozenset(devfs_nodes),
            host.dev_root,
        ),
        problems,
    )
    owner: dict[int, str] = {}
    entries = []
    for spec in resources:
        units = []
        for group in host.groups:
            # A member the kernel lists but the scan could not read is not among the
            # devices; the group's verdict is then "unknown" and the unit Unhealthy.
            members = [d for d in map(host.find_device, group.devices) if d is not None]
            selected = [d for d in members if spec.matches(d)]
            if not selected:
                continue
            unit = _unit(context, spec, group, members, selected)
            taken_by = owner.setdefault(group.id, spec.name)
            if taken_by != spec.name:
                unit = _with_reasons(
                    unit,
                    f"IOMMU group {group.id} also holds functions of {taken_by}, which "
                    f"offers it; a group goes to one resource (narrow the selectors)",
                    keep_nodes=False,
                )
            units.append(unit)
        units.sort(key=lambda u: Bdf(u.id))
        entries.append(ResourceUnits(spec, tuple(units)))
    return Inventory(mode, tuple(entries), problems)


def _host_problems(host: Host, mode: IommuMode) -> tuple[str, ...]:
    problems = []
    status = host.iommu
    if not status.enabled:
        problems.append("the host has no working IOMMU (kata-vfio doctor says why)")
    if mode == "legacy" and not status.vfio_container_node:
        problems.append(f"{VFIO_CONTAINER_NODE} is missing (is the vfio module loaded?)")
    if mode == "iommufd" and not status.iommufd_node:
        problems.append(f"{IOMMUFD_NODE} is missing (is the iommufd module loaded?)")
    return tuple(problems)


@dataclass(frozen=True, slots=True)
class _NodeCheck:
    registered: frozenset[str]
    present: frozenset[str] | None
    dev_root: str

    def problem(self, path: str) -> str | None:
        if path not in self.registered:
            return f"{path} does not exist (the kernel has not registered it)"
        if self.present is not None and path not in self.present:
            return f"{path} is registered by the kernel but missing from {self.dev_root}"
        return None


@dataclass(frozen=True, slots=True)
class _Context:
    host: Host
    mode: IommuMode
    bind_on_prepare: bool
    nodes: _NodeCheck
    host_problems: tuple[str, ...]


def _unit(
    context: _Context,
    spec: ResourceSpec,
    group: IommuGroup,
    members: Sequence[PciDevice],
    selected: Sequence[PciDevice],
) -> Unit:
    wanted = set(group.endpoints)
    endpoints = [d for d in members if d.bdf in wanted]
    functions = tuple(
        Function(
            bdf=d.bdf,
            vendor=d.vendor,
            device=d.device,
            class_code=d.class_code,
            driver=d.driver,
            selected=spec.matches(d),
            vfio_bound=d.is_vfio_bound,
            cdev=d.vfio_cdev,
            numa_node=d.numa_node,
        )
        for d in endpoints
    )
    primary = selected[0]
    reasons = list(context.host_problems)
    reasons += _group_problems(context, group, endpoints)
    nodes, node_problems = _nodes(context, group, endpoints)
    reasons += node_problems
    return Unit(
        id=str(primary.bdf),
        resource=spec.name,
        group=group.id,
        functions=functions,
        locality=_locality(primary, endpoints),
        reasons=tuple(dict.fromkeys(reasons)),
        nodes=nodes,
        largest_bar=_largest_bar(endpoints),
    )


def _group_problems(
    context: _Context, group: IommuGroup, endpoints: Sequence[PciDevice]
) -> list[str]:
    host = context.host
    if not endpoints:
        return [f"IOMMU group {group.id} holds only bridges: nothing to pass through"]
    problems = []
    node = host.group_node(endpoints[0].bdf) or ""
    if node.rsplit("/", 1)[-1].startswith("noiommu-"):
        problems.append(f"IOMMU group {group.id} is a no-IOMMU group: no DMA protection")
    if group.verdict == "unknown":
        # Never more optimistic than the kernel: a member, or the member list, that cannot be
        # read may hide a driver that makes the kernel refuse the group.
        problems += unknown_reasons(group)
        problems += [
            f"{b.bdf}: {blocker_reason(b)}"
            for b in group.blockers
            if b.breaks_viability and b.kind != "unknown"
        ]
    elif not group.viable:
        blockers = [
            b
            for b in group.blockers
            if b.breaks_viability and not (context.bind_on_prepare and b.kind == "host-driver")
        ]
        if blockers or not context.bind_on_prepare:
            problems += [f"{b.bdf}: {blocker_reason(b)}" for b in blockers] or [
                f"IOMMU group {group.id} is not viable"
            ]
    if context.bind_on_prepare:
        return problems
    problems += [
        f"{d.bdf} is {'unbound' if d.driver is None else f'on {d.driver}'}, not on a vfio "
        f"driver (kata-vfio bind --group {group.id})"
        for d in endpoints
        if not d.is_vfio_bound and not _blocked_for_viability(group, d.bdf)
    ]
    return problems


def _blocked_for_viability(group: IommuGroup, bdf: Bdf) -> bool:
    return any(b.bdf == bdf and b.breaks_viability for b in group.blockers)


def _nodes(
    context: _Context, group: IommuGroup, endpoints: Sequence[PciDevice]
) -> tuple[tuple[str, ...], list[str]]:
    if not endpoints:
        return (), []
    registered = context.nodes
    # Binding creates the nodes of a group that is not on vfio yet.
    pending = context.bind_on_prepare and not all(d.is_vfio_bound for d in endpoints)
    if context.mode == "legacy":
        node = context.host.group_node(endpoints[0].bdf) or f"/dev/vfio/{group.id}"
        problem = None if pending else registered.problem(node)
        return (node,), [] if problem is None else [problem]
    if pending:
        return (), []
    paths = []
    problems = []
    for device in endpoints:
        if device.vfio_cdev is None:
            if device.is_vfio_bound:
                problems.append(f"{device.bdf} has no VFIO cdev (iommufd mode needs one)")
            continue
        path = f"/dev/vfio/devices/{device.vfio_cdev}"
        paths.append(path)
        problem = registered.problem(path)
        if problem is not None:
            problems.append(problem)
    if len(paths) < len(endpoints):
        return (), problems
    return tuple(paths), problems


def _locality(primary: PciDevice, endpoints: Sequence[PciDevice]) -> Locality:
    numa = primary.numa_node
    if numa is None:
        numa = next((d.numa_node for d in endpoints if d.numa_node is not None), None)
    parts = primary.sysfs_path.split("/")
    root_complex = parts[1] if len(parts) > 1 and parts[0] == "devices" else ""
    upstream = primary.upstream
    return Locality(
        numa_node=numa,
        root_complex=root_complex,
        root_port=upstream[0] if upstream else None,
        switch=upstream[-2] if len(upstream) >= 2 else None,
    )


def _largest_bar(endpoints: Sequence[PciDevice]) -> int | None:
    sizes = []
    for device in endpoints:
        bars = device.bars
        if bars is None:
            return None
        sizes += [b.size for b in bars if not b.is_io]
    return max(sizes, default=0)


def _with_reasons(unit: Unit, reason: str, *, keep_nodes: bool) -> Unit:
    return dataclasses.replace(
        unit, reasons=(*unit.reasons, reason), nodes=unit.nodes if keep_nodes else ()
    )
