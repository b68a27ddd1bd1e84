"""CDI specs for VFIO devices, generated from a host scan.

Two shapes, as the NVIDIA sandbox device plugin and k8s-kata-manager write them:

* legacy (group) mode: one device per assignable IOMMU group, whose edit is the group node
  ``/dev/vfio/<group>``; the container node ``/dev/vfio/vfio`` is a spec-level edit (added
  once per injection);
* cdev mode: one device per function bound to vfio-pci with a VFIO cdev, whose edit is
  ``/dev/vfio/devices/vfioN``; ``/dev/iommu`` is the spec-level edit.

Only group paths are written, no type or numbers: VFIO majors are given out at boot, so the
numbers are read from the host when the device is injected.

Device names are chosen explicitly, because a device plugin that reports device IDs and the
spec that resolves them must agree (Kata issue 12549 is exactly that mismatch):

* ``group``: the IOMMU group number (``14``);
* ``index``: the position in numeric PCI order, from 0;
* ``bdf``: the PCI address of the device's first function, as the kernel writes it
  (``0000:18:00.0``); ``:`` is allowed inside device names by the reference parser (SPEC.md
  prose omits it, but both reference libraries, Go and Rust, accept it), and it keeps the
  names equal to device IDs of plugins that use PCI addresses;
* ``cdev``: the VFIO cdev name (``vfio3``).

An ``all`` device carries every device's edits. The kind comes from the caller, or from
:data:`HOST_KIND_RULES` (``nvidia.com/pgpu`` for NVIDIA GPUs, ``nvidia.com/nvswitch`` for
NVSwitches, the names NVIDIA's plugin uses); ``cdiVersion`` is the minimum the spec needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from kata_vfio._core import Bdf, Host, PciDevice
from kata_vfio._echo import echo
from kata_vfio.cdi.model import ContainerEdits, Device, DeviceNode, Spec
from kata_vfio.cdi.names import kind_problem
from kata_vfio.cdi.registry import Registry
from kata_vfio.cdi.validate import validate_spec
from kata_vfio.cdi.versions import minimum_version
from kata_vfio.errors import CdiError, InvalidInputError

__all__ = [
    "ALL_DEVICE",
    "HOST_KIND_RULES",
    "NAMINGS",
    "Naming",
    "generate_vfio_spec",
    "generate_vfio_specs",
    "host_kind",
    "parse_pci_id",
    "write_vfio_spec",
]

Naming = Literal["group", "index", "bdf", "cdev"]
NAMINGS: tuple[Naming, ...] = ("group", "index", "bdf", "cdev")
ALL_DEVICE = "all"

VFIO_CONTAINER_NODE = "/dev/vfio/vfio"
IOMMUFD_NODE = "/dev/iommu"


@dataclass(frozen=True, slots=True)
class HostKindRule:
    """Functions of ``vendor`` whose class code starts with ``class_prefix`` (its top
    ``class_bits`` bits) are devices of ``kind`` on the host."""

    vendor: int
    class_prefix: int
    class_bits: int
    kind: str

    def matches(self, device: PciDevice) -> bool:
        """Whether ``device`` is of this kind."""
        shift = 24 - self.class_bits
        return device.vendor == self.vendor and device.class_code >> shift == self.class_prefix


HOST_KIND_RULES: tuple[HostKindRule, ...] = (
    HostKindRule(0x10DE, 0x03, 8, "nvidia.com/pgpu"),  # display controllers: VGA, 3D
    HostKindRule(0x10DE, 0x0680, 16, "nvidia.com/nvswitch"),  # "other bridge": NVSwitch
)
"""Host-side kinds known without ``kind=``: the aliases of NVIDIA's sandbox device plugin."""


@dataclass(frozen=True, slots=True)
class _Candidate:
    bdf: Bdf
    group: int
    node: str
    cdev: str | None
    kind: str | None


def host_kind(device: PciDevice) -> str | None:
    """The host CDI kind of a function from :data:`HOST_KIND_RULES`, or None."""
    for rule in HOST_KIND_RULES:
        if rule.matches(device):
            return rule.kind
    return None


def parse_pci_id(text: str) -> tuple[int, int | None]:
    """``VVVV`` or ``VVVV:DDDD`` (hex, as ``lspci -d`` takes it) as ``(vendor, device)``."""
    vendor_text, sep, device_text = text.partition(":")
    try:
        vendor = _hex16(vendor_text)
        device = _hex16(device_text) if sep else None
    except ValueError:
        raise InvalidInputError(
            f"invalid PCI id {echo(text)}",
            hint="write the vendor, or vendor:device, in hex: 10de:2330",
        ) from None
    return vendor, device


def generate_vfio_specs(
    host: Host,
    *,
    naming: Naming = "group",
    cdev: bool = False,
    include_all: bool = True,
    devices: Iterable[Bdf | str] | None = None,
    pci_ids: Iterable[str] = (),
) -> tuple[Spec, ...]:
    """One spec per host kind of :data:`HOST_KIND_RULES` that has assignable devices, in kind
    order. See :func:`generate_vfio_spec` for the options."""
    candidates = _candidates(host, cdev=cdev, devices=devices, pci_ids=pci_ids)
    kinds = sorted({c.kind for c in candidates if c.kind is not None})
    return tuple(
        _build(kind, [c for c in candidates if c.kind == kind], naming, cdev, include_all)
        for kind in kinds
    )


def generate_vfio_spec(
    host: Host,
    *,
    kind: str | None = None,
    naming: Naming = "group",
    cdev: bool = False,
    include_all: bool = True,
    devices: Iterable[Bdf | str] | None = None,
    pci_ids: Iterable[str] = (),
) -> Spec:
    """The CDI spec for the host's assignable VFIO devices of one kind.

    Without ``kind``, the host must have assignable devices of exactly one kind of
    :data:`HOST_KIND_RULES`. A ``kind`` from that table takes its devices; any other kind
    takes every assignable device. ``devices`` (PCI addresses) and ``pci_ids`` (``10de`` or
    ``10de:2330``) narrow the choice. ``cdev`` selects per-function cdev nodes instead of
    group nodes. Raises :class:`CdiError` when nothing fits, and
    :class:`InvalidInputError` for a bad kind or naming.
    """
    if naming not in NAMINGS:
        raise InvalidInputError(
            f"invalid device naming {echo(naming)}", hint=f"use one of {', '.join(NAMINGS)}"
        )
    candidates = _candidates(host, cdev=cdev, devices=devices, pci_ids=pci_ids)
    if kind is None:
        kinds = sorted({c.kind for c in candidates if c.kind is not None})
        if not kinds:
            table = ", ".join(sorted({rule.kind for rule in HOST_KIND_RULES}))
            raise CdiError(
                f"the host has no assignable VFIO {'cdev ' if cdev else ''}devices of a known "
                f"kind ({table})",
                hint="bind the devices to vfio-pci (kata-vfio groups shows how), or pass the "
                "kind for other devices (kata-vfio cdi generate --kind vendor.com/class)",
            )
        if len(kinds) > 1:
            raise CdiError(
                f"cannot choose the CDI kind: the host has devices of kinds {', '.join(kinds)}",
                hint="pass the kind (kata-vfio cdi generate --kind vendor.com/class)",
            )
        kind = kinds[0]
        chosen = [c for c in candidates if c.kind == kind]
    else:
        _check_kind(kind)
        known = {rule.kind for rule in HOST_KIND_RULES}
        chosen = [c for c in candidates if c.kind == kind] if kind in known else candidates
    return _build(kind, chosen, naming, cdev, include_all)


def write_vfio_spec(spec: Spec, output_dir: str) -> str:
    """Writes ``spec`` atomically as ``<output_dir>/<vendor>-<class>.yaml`` (mode 0644) and
    returns the path."""
    return Registry([output_dir]).write_spec(spec)


def _check_kind(kind: str) -> None:
    problem = kind_problem(kind)
    if problem is not None:
        raise InvalidInputError(
            f"invalid CDI kind {echo(kind)}: {problem}", hint="a kind is vendor.com/class"
        )


def _hex16(text: str) -> int:
    if not 1 <= len(text) <= 4 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(text)
    return int(text, 16)


def _candidates(
    host: Host,
    *,
    cdev: bool,
    devices: Iterable[Bdf | str] | None,
    pci_ids: Iterable[str],
) -> list[_Candidate]:
    wanted = None if devices is None else {Bdf(d) if isinstance(d, str) else d for d in devices}
    ids = [parse_pci_id(text) for text in pci_ids]

    def selected(device: PciDevice) -> bool:
        if wanted is not None and device.bdf not in wanted:
            return False
        return not ids or any(
            device.vendor == vendor and (dev is None or device.device == dev) for vendor, dev in ids
        )

    found: list[_Candidate] = []
    for group in host.groups:
        if not group.assignable or not group.endpoints:
            continue
        members = [host.device(bdf) for bdf in group.endpoints]
        if cdev:
            found.extend(
                _Candidate(
                    d.bdf, group.id, f"/dev/vfio/devices/{d.vfio_cdev}", d.vfio_cdev, host_kind(d)
                )
                for d in members
                if d.vfio_cdev and selected(d)
            )
            continue
        picked = [d for d in members if selected(d)]
        if not picked:
            continue
        # The group is named after its first function of a known kind (a GPU, not its audio).
        primary = next((d for d in picked if host_kind(d) is not None), picked[0])
        node = host.group_node(primary.bdf) or f"/dev/vfio/{group.id}"
        found.append(_Candidate(primary.bdf, group.id, node, primary.vfio_cdev, host_kind(primary)))
    found.sort(key=lambda c: c.bdf)
    return found


def _build(
    kind: str,
    chosen: Sequence[_Candidate],
    naming: Naming,
    cdev: bool,
    include_all: bool,
) -> Spec:
    if not chosen:
        raise CdiError(
            f"no assignable VFIO {'cdev ' if cdev else ''}devices for {kind}",
            hint="bind the devices' whole IOMMU groups to vfio-pci first (kata-vfio groups shows "
            "what blocks them)",
        )
    devices = [
        Device(
            name=_name(candidate, index, naming),
            container_edits=ContainerEdits(device_nodes=(DeviceNode(path=candidate.node),)),
        )
        for index, candidate in enumerate(chosen)
    ]
    _check_unique_names(devices, naming)
    if include_all:
        nodes = tuple(node for d in devices for node in d.container_edits.device_nodes)
        devices.append(Device(name=ALL_DEVICE, container_edits=ContainerEdits(device_nodes=nodes)))
    control = IOMMUFD_NODE if cdev else VFIO_CONTAINER_NODE
    spec = Spec(
        version="",
        kind=kind,
        devices=tuple(devices),
        container_edits=ContainerEdits(device_nodes=(DeviceNode(path=control),)),
    )
    spec = dataclasses.replace(spec, version=minimum_version(spec))
    validate_spec(spec, source=f"generated spec for {kind}")
    return spec


def _check_unique_names(devices: Sequence[Device], naming: Naming) -> None:
    # In cdev mode a group's functions are separate devices: a group number names several.
    seen: set[str] = set()
    for device in devices:
        if device.name in seen:
            raise CdiError(
                f"naming by {naming} gives several devices the name {echo(device.name)}",
                hint="with --cdev, name devices by cdev, bdf or index (an IOMMU group can hold "
                "several functions), or narrow the choice with --bdf or --pci-id",
            )
        seen.add(device.name)


def _name(candidate: _Candidate, index: int, naming: Naming) -> str:
    if naming == "group":
        return str(candidate.group)
    if naming == "index":
        return str(index)
    if naming == "bdf":
        return str(candidate.bdf)
    if candidate.cdev is None:
        raise CdiError(
            f"{candidate.bdf} has no VFIO cdev to name its device after",
            hint="use another naming (group, index, bdf), or a kernel with VFIO cdevs "
            "(CONFIG_VFIO_DEVICE_CDEV)",
        )
    return candidate.cdev
