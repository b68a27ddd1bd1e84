"""``kata-vfio scan | groups | check | doctor``: what this host has and whether it is ready."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kata_vfio import Bdf, Host, IommuGroup, scan, vfio
from kata_vfio.cli import _common
from kata_vfio.errors import InvalidInputError
from kata_vfio.host import doctor, readiness, render, report
from kata_vfio.host.memlock import MIN_VM_MEMORY
from kata_vfio.units import format_size, parse_size

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Adds the host commands."""
    sub = _common.add_command(subparsers, "scan", _cmd_scan, "list the host's PCI devices")
    sub.add_argument(
        "--details", action="store_true", help="also read BARs, reset methods and link speed"
    )
    sub = _common.add_command(
        subparsers, "groups", _cmd_groups, "list IOMMU groups with a verdict for each"
    )
    sub.add_argument("--all", action="store_true", help="also list groups that hold only bridges")
    sub = _common.add_command(
        subparsers, "check", _cmd_check, "can these devices be passed through now?"
    )
    sub.add_argument("bdfs", nargs="+", metavar="BDF", help="PCI address, e.g. 0000:01:00.0")
    _add_open_options(sub)
    sub = _common.add_command(
        subparsers, "doctor", _cmd_doctor, "check that this host is ready for VFIO passthrough"
    )
    sub.add_argument(
        "--vm-memory",
        metavar="SIZE",
        default=None,
        help="size of the VM to start, for the memlock check (16G, 16384M or bytes)",
    )


def _scan(args: argparse.Namespace, *, details: bool = False) -> Host:
    return scan(_common.host_paths(args), details=details)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _cmd_scan(args: argparse.Namespace) -> int:
    host = _scan(args, details=args.details)
    if args.json:
        _common.print_json(
            {
                "devices": [report.device_dict(d, host) for d in host.devices],
                "unreadable": [report.problem_dict(p) for p in host.unreadable],
            }
        )
        return _common.EXIT_FINDING if host.unreadable else _common.EXIT_OK
    rows = []
    for device in host.devices:
        entry = report.device_dict(device, host)
        row = [
            entry["bdf"],
            entry["class_name"],
            f"{entry['vendor']}:{entry['device']}",
            entry["driver"],
            entry["iommu_group"],
            entry["numa_node"],
            _yes_no(entry["pcie"]),
            _yes_no(entry["assignable"]) if device.is_endpoint else "-",
        ]
        rows.append([*row, *_detail_cells(entry)] if args.details else row)
    headers = ["BDF", "CLASS", "ID", "DRIVER", "GROUP", "NUMA", "PCIE", "ASSIGNABLE"]
    _common.print_table([*headers, *_DETAIL_HEADERS] if args.details else headers, rows)
    for problem in host.unreadable:
        print(render.device_unreadable_hint(problem), file=sys.stderr)
    if not host.devices and not host.unreadable:
        print(f"no PCI devices under {host.sysfs_root}/bus/pci/devices", file=sys.stderr)
    return _common.EXIT_FINDING if host.unreadable else _common.EXIT_OK


_DETAIL_HEADERS = ["BARS", "LARGE", "RESET", "LINK"]


def _detail_cells(entry: dict[str, Any]) -> list[str]:
    """``scan --details`` columns: memory BAR sizes, the large-BAR flag, reset methods and
    the current link; ``unknown`` where the kernel's file could not be read."""
    bars = entry.get("bars")
    sizes = (
        "unknown"
        if bars is None
        else ",".join(format_size(b["size"]).replace(" ", "") for b in bars if not b["is_io"])
    )
    link = entry.get("link")
    link_text = "-"
    if link and link.get("current_speed"):
        width = link.get("current_width")
        link_text = link["current_speed"].removesuffix(" PCIe") + (f" x{width}" if width else "")
    large = entry.get("large_bar")
    return [
        sizes or "-",
        "unknown" if large is None else _yes_no(large),
        ",".join(entry.get("reset_methods") or ()) or "-",
        link_text,
    ]


def _cmd_groups(args: argparse.Namespace) -> int:
    host = _scan(args)
    if args.json:
        _common.print_json(
            {
                "groups": [report.group_dict(g) for g in host.groups],
                "iommu": report.iommu_dict(host.iommu),
                "unreadable": [report.problem_dict(p) for p in host.unreadable],
            }
        )
        doubtful = bool(host.unreadable) or any(g.verdict == "unknown" for g in host.groups)
        return _common.EXIT_OK if host.iommu.enabled and not doubtful else _common.EXIT_FINDING
    if not host.groups:
        print(f"no IOMMU groups on this host: {'; '.join(host.iommu.reasons)}")
        print("run `kata-vfio doctor` for what to change, or `kata-vfio --sample groups`")
        return _common.EXIT_FINDING
    platform_only = {g.id for g in host.groups if _platform_only(host, g)}
    shown = [
        g
        for g in host.groups
        if args.all or g.verdict == "unknown" or (g.endpoints and g.id not in platform_only)
    ]
    for group in shown:
        _print_group(host, group)
    hidden = len(host.groups) - len(shown)
    ready = sum(1 for g in host.groups if g.assignable)
    with_endpoints = sum(1 for g in host.groups if g.endpoints)
    unknown = sum(1 for g in host.groups if g.verdict == "unknown")
    summary = f"{ready} of {with_endpoints} groups with endpoints are assignable"
    if unknown:
        summary += f"; {unknown} unknown (a member cannot be read)"
    if hidden:
        summary += (
            f"; {hidden} groups with only bridges or platform functions not shown "
            "(--all shows them)"
        )
    print(summary)
    for problem in host.unreadable:
        print(render.device_unreadable_hint(problem), file=sys.stderr)
    return _common.EXIT_FINDING if unknown or host.unreadable else _common.EXIT_OK


def _platform_only(host: Host, group: IommuGroup) -> bool:
    """Every endpoint is a function the platform needs (CPU uncore, the PCH's LPC/SMBus)."""
    devices = [host.find_device(b) for b in group.endpoints]
    return bool(devices) and all(d is not None and d.platform_function for d in devices)


def _role_text(host: Host, bdf: Bdf) -> list[str]:
    device = host.find_device(bdf)
    if device is None:
        return ["(cannot be read)", "", "", ""]
    role = "endpoint" if device.is_endpoint else "bridge, stays"
    if device.platform_function is not None:
        role += f", platform ({device.platform_function})"
    return [
        device.class_name,
        f"{device.vendor:04x}:{device.device:04x}",
        render.driver_text(device),
        role,
    ]


def _print_group(host: Host, group: IommuGroup) -> None:
    print(f"group {group.id}: {render.verdict_text(group)}")
    blocked = {b.bdf for b in group.blockers}
    rows = [
        [f"  {bdf}", *_role_text(host, bdf), "<- blocks" if bdf in blocked else ""]
        for bdf in group.devices
    ]
    if rows:
        _common.print_table(None, rows)
    listing = render.listing_text(group)
    if listing is not None:
        print(f"  {listing}")
    for blocker in group.blockers:
        print(f"  {blocker.bdf}: {render.blocker_reason(blocker)}")
    for fix in dict.fromkeys(render.fix_text(b) for b in group.blockers):
        print(f"  fix: {fix}")


def _cmd_check(args: argparse.Namespace) -> int:
    bdfs = [Bdf(text) for text in args.bdfs]  # a bad address is a usage error (exit 2)
    host = _scan(args)
    results = readiness.check_devices(host, bdfs)
    opened = _open_checks(args, bdfs, host)  # None without --open
    if args.json:
        _common.print_json(
            {
                **({} if opened is None else {"open": [c.to_dict() for c in opened]}),
                "devices": [
                    {
                        "bdf": str(r.bdf),
                        "present": r.present,
                        "group": r.group,
                        "assignable": r.assignable,
                        "together": [str(b) for b in r.together],
                        "node": r.node,
                        "blockers": [report.blocker_dict(b) for b in r.blockers],
                        "hint": r.hint,
                        "state": r.state,
                        "problem": None if r.problem is None else report.problem_dict(r.problem),
                    }
                    for r in results
                ],
            }
        )
    else:
        for r in results:
            verdict = "assignable" if r.assignable else "NOT assignable"
            print(f"{r.bdf}: {verdict}")
            print(f"  {r.hint}")
            for blocker in r.blockers:
                if blocker.bdf != r.bdf or len(r.blockers) > 1:
                    print(f"  blocker {blocker.bdf} ({blocker.driver or blocker.kind}):")
                    print(f"    {render.blocker_reason(blocker)}")
                    print(f"    fix: {render.fix_text(blocker)}")
        if opened is not None:
            _print_open_checks(opened)
    ok = all(r.assignable for r in results) and all(c.ok for c in opened or ())
    return _common.EXIT_OK if ok else _common.EXIT_FINDING


def _cmd_doctor(args: argparse.Namespace) -> int:
    host = _scan(args)
    vm_memory = None
    if args.vm_memory is not None:
        vm_memory = parse_size(args.vm_memory, what="--vm-memory", minimum=MIN_VM_MEMORY)
    checks = doctor.diagnose(host, vm_memory=vm_memory)
    tree = {"sysfs": host.sysfs_root, "devfs": host.dev_root, "procfs": host.paths.procfs}
    if args.json:
        _common.print_json(
            {
                "host": tree,
                "checks": [
                    {"name": c.name, "status": c.status, "detail": c.detail, "hint": c.hint}
                    for c in checks
                ],
            }
        )
    else:
        print(f"host read: sysfs {tree['sysfs']}, devfs {tree['devfs']}, procfs {tree['procfs']}")
        for c in checks:
            print(f"[{c.status:4}] {c.name}: {c.detail}")
            if c.hint and c.status != "pass":
                print(f"       hint: {c.hint}")
    # A warning is a finding too: something to look at before a VM is started.
    clean = all(c.status == "pass" for c in checks)
    return _common.EXIT_OK if clean else _common.EXIT_FINDING


def _add_open_options(sub: argparse.ArgumentParser) -> None:
    """``--open`` and ``--iommufd`` for ``kata-vfio check``."""
    sub.add_argument(
        "--open",
        action="store_true",
        help="also open container, group and device exactly as QEMU will (needs root)",
    )
    sub.add_argument(
        "--iommufd", action="store_true", help="with --open: through the cdev and /dev/iommu"
    )


def _open_checks(
    args: argparse.Namespace, bdfs: list[Bdf], host: Host
) -> tuple[vfio.OpenCheck, ...] | None:
    """``check --open``: the preflight for each device (None without ``--open``)."""
    if not args.open:
        return None
    if args.sample:
        raise InvalidInputError(
            "the sample host has no real VFIO nodes to open",
            hint="drop --open, or run on a host with the devices bound to vfio-pci",
        )
    mode: vfio.Mode = "iommufd" if args.iommufd else "legacy"
    paths = _common.host_paths(args)
    return tuple(
        vfio.check_open(bdf, mode=mode, paths=paths, host=host)
        for bdf in bdfs
        if host.find_device(bdf) is not None
    )


def _print_open_checks(checks: tuple[vfio.OpenCheck, ...]) -> None:
    """The preflight as text: one line per step, then the error and its hint."""
    for check in checks:
        print(f"{check.bdf}: open ({check.mode}) {'OK' if check.ok else 'FAILED'}")
        for step in check.steps:
            detail = f": {step.detail}" if step.detail else ""
            print(f"  [{'ok' if step.ok else 'FAIL'}] {step.step}{detail}")
        if check.error and not any(not s.ok for s in check.steps):
            print(f"  error: {check.error}")
        if check.hint:
            print(f"  hint: {check.hint}")
