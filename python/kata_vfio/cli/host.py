"""``kata-vfio scan | groups | check | doctor``: what this host has and whether it is ready."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kata_vfio import Bdf, Host, IommuGroup, scan, vfio
from kata_vfio.cli import _common
from kata_vfio.errors import InvalidInputError
from kata_vfio.host import doctor, readiness, report
from kata_vfio.host.memlock import MIN_VM_MEMORY
from kata_vfio.units import parse_size

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
        _common.print_json({"devices": [report.device_dict(d, host) for d in host.devices]})
        return _common.EXIT_OK
    rows = []
    for device in host.devices:
        entry = report.device_dict(device, host)
        rows.append(
            [
                entry["bdf"],
                entry["class_name"],
                f"{entry['vendor']}:{entry['device']}",
                entry["driver"],
                entry["iommu_group"],
                entry["numa_node"],
                _yes_no(entry["pcie"]),
                _yes_no(entry["assignable"]) if device.is_endpoint else "-",
            ]
        )
    _common.print_table(
        ["BDF", "CLASS", "ID", "DRIVER", "GROUP", "NUMA", "PCIE", "ASSIGNABLE"], rows
    )
    if not host.devices:
        print(f"no PCI devices under {host.sysfs_root}/bus/pci/devices", file=sys.stderr)
    return _common.EXIT_OK


def _verdict(group: IommuGroup) -> str:
    if group.assignable:
        return "assignable"
    if not group.endpoints:
        return "no endpoints (bridges only)"
    if group.viable:
        return "viable, not ready"
    return "NOT VIABLE"


def _cmd_groups(args: argparse.Namespace) -> int:
    host = _scan(args)
    if args.json:
        _common.print_json(
            {
                "groups": [report.group_dict(g) for g in host.groups],
                "iommu": report.iommu_dict(host.iommu),
            }
        )
        return _common.EXIT_OK if host.iommu.enabled else _common.EXIT_FINDING
    if not host.groups:
        print(f"no IOMMU groups on this host: {'; '.join(host.iommu.reasons)}")
        print("run `kata-vfio doctor` for what to change, or `kata-vfio --sample groups`")
        return _common.EXIT_FINDING
    shown = [g for g in host.groups if args.all or g.endpoints]
    for group in shown:
        _print_group(host, group)
    hidden = len(host.groups) - len(shown)
    ready = sum(1 for g in host.groups if g.assignable)
    with_endpoints = sum(1 for g in host.groups if g.endpoints)
    summary = f"{ready} of {with_endpoints} groups with endpoints are assignable"
    if hidden:
        summary += f"; {hidden} groups with only bridges not shown (--all shows them)"
    print(summary)
    return _common.EXIT_OK


def _print_group(host: Host, group: IommuGroup) -> None:
    print(f"group {group.id}: {_verdict(group)}")
    blocked = {b.bdf for b in group.blockers}
    rows = []
    for bdf in group.devices:
        device = host.find_device(bdf)
        if device is None:
            rows.append([f"  {bdf}", "(not scanned)", "", "", "", ""])
            continue
        rows.append(
            [
                f"  {bdf}",
                device.class_name,
                f"{device.vendor:04x}:{device.device:04x}",
                device.driver or "(no driver)",
                "endpoint" if device.is_endpoint else "bridge, stays",
                "<- blocks" if bdf in blocked else "",
            ]
        )
    _common.print_table(None, rows)
    for blocker in group.blockers:
        print(f"  {blocker.bdf}: {blocker.reason}")
    for fix in dict.fromkeys(b.fix for b in group.blockers):
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
                    print(f"  blocker {blocker.bdf} ({blocker.driver or 'no driver'}): ")
                    print(f"    {blocker.reason}")
                    print(f"    fix: {blocker.fix}")
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
    if args.json:
        _common.print_json(
            {
                "checks": [
                    {"name": c.name, "status": c.status, "detail": c.detail, "hint": c.hint}
                    for c in checks
                ]
            }
        )
    else:
        for c in checks:
            print(f"[{c.status:4}] {c.name}: {c.detail}")
            if c.hint and c.status != "pass":
                print(f"       hint: {c.hint}")
    failed = any(c.status == "fail" for c in checks)
    return _common.EXIT_FINDING if failed else _common.EXIT_OK


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
