"""Field-by-field comparison of two scans of one host: the Rust core's and the reference
scanner's (or two Rust scans). Addresses compare as text; read problems, blocker kinds and
fixes compare as data; prose (status reasons) is left out since each implementation words it
its own way."""

from __future__ import annotations

from typing import Any

DEVICE_FIELDS = (
    "vendor",
    "device",
    "subsystem_vendor",
    "subsystem_device",
    "class_code",
    "revision",
    "driver",
    "driver_override",
    "iommu_group",
    "numa_node",
    "sriov_totalvfs",
    "sriov_numvfs",
    "is_pcie",
    "vfio_cdev",
    "sysfs_path",
    "is_bridge",
    "is_host_bridge",
    "is_endpoint",
    "is_vfio_bound",
    "boot_vga",
    "platform_function",
    "has_details",
)
STATUS_FIELDS = (
    "enabled",
    "group_count",
    "iommu_class",
    "firmware_tables",
    "cmdline",
    "cpu_vendor",
    "vfio_module",
    "vfio_pci_driver",
    "iommufd_module",
    "vfio_container_node",
    "iommufd_node",
    "noiommu",
    "unreadable",
)


def _text(value: Any) -> Any:
    """Addresses as text, tuples of addresses as tuples of text."""
    if isinstance(value, tuple):
        return tuple(str(v) for v in value)
    return None if value is None else str(value)


def problem_view(problem: Any) -> tuple[str, str, str]:
    """A read problem as (address, attribute, reason)."""
    return (str(problem.bdf), problem.attribute, problem.reason)


def fix_view(fix: Any) -> tuple[Any, ...]:
    """A structured fix as plain values."""
    bdf = None if fix.bdf is None else str(fix.bdf)
    return (fix.action, fix.group, bdf, fix.because, fix.platform_function)


def device_view(dev: Any) -> dict[str, Any]:
    """The comparable fields of a Rust ``PciDevice`` or a ``RefDevice``."""
    view = {name: getattr(dev, name) for name in DEVICE_FIELDS}
    view["bdf"] = str(dev.bdf)
    view["physfn"] = _text(dev.physfn)
    view["virtfns"] = _text(dev.virtfns)
    view["upstream"] = _text(dev.upstream)
    bars = dev.bars
    view["bars"] = (
        None
        if bars is None
        else tuple((b.index, b.start, b.size, b.is_io, b.is_64bit, b.prefetchable) for b in bars)
    )
    view["large_bar"] = dev.large_bar
    view["problems"] = tuple(sorted(problem_view(p) for p in dev.problems))
    view["reset_methods"] = None if dev.reset_methods is None else tuple(dev.reset_methods)
    link = dev.link
    view["link"] = (
        None
        if link is None
        else (link.current_speed, link.current_width, link.max_speed, link.max_width)
    )
    return view


def group_view(group: Any) -> dict[str, Any]:
    """The comparable fields of an IOMMU group, blockers and fixes as data."""
    return {
        "id": group.id,
        "devices": _text(group.devices),
        "endpoints": _text(group.endpoints),
        "viable": group.viable,
        "assignable": group.assignable,
        "verdict": group.verdict,
        "listing_problem": group.listing_problem,
        "unplaced": _text(group.unplaced),
        "blockers": tuple(
            (
                str(b.bdf),
                b.driver,
                b.kind,
                b.breaks_viability,
                fix_view(b.fix),
                None if b.problem is None else problem_view(b.problem),
            )
            for b in group.blockers
        ),
    }


def status_view(status: Any) -> dict[str, Any]:
    """The comparable fields of the IOMMU status (the reasons are prose)."""
    view = {name: getattr(status, name) for name in STATUS_FIELDS}
    for name in ("iommu_class", "firmware_tables", "cmdline", "unreadable"):
        if view[name] is not None:
            view[name] = tuple(view[name])
    return view


def assert_same_host(rust: Any, ref: Any) -> None:
    """Field by field: devices, groups and IOMMU status of both scans agree."""
    rust_devices = [device_view(d) for d in rust.devices]
    ref_devices = [device_view(d) for d in ref.devices]
    assert [d["bdf"] for d in rust_devices] == [d["bdf"] for d in ref_devices]
    for got, want in zip(rust_devices, ref_devices, strict=True):
        diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
        assert not diff, f"{want['bdf']}: rust vs reference {diff}"
    rust_groups = [group_view(g) for g in rust.groups]
    ref_groups = [group_view(g) for g in ref.groups]
    assert [g["id"] for g in rust_groups] == [g["id"] for g in ref_groups]
    for got, want in zip(rust_groups, ref_groups, strict=True):
        assert got == want, f"group {want['id']}"
    assert status_view(rust.iommu) == status_view(ref.iommu)
    assert [problem_view(p) for p in rust.unreadable] == [problem_view(p) for p in ref.unreadable]
