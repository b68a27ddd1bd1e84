"""``kata-vfio bind | unbind | restore | info | memlock``: move devices to vfio and back,
show what a bound device offers, and check the memlock limit for a VM size.

The journal lives in ``--state-dir`` (default ``/run/kata-vfio`` for the real ``/sys``; with
``--sysfs-root DIR`` it defaults to ``run/kata-vfio`` beside DIR, so a fake tree never
touches the real journal).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, NamedTuple

from kata_vfio import Bdf, Host, HostPaths, binding, scan, vfio
from kata_vfio._echo import echo
from kata_vfio.binding import BindReport
from kata_vfio.cli import _common
from kata_vfio.errors import InvalidInputError
from kata_vfio.host import memlock
from kata_vfio.units import parse_count

_MAX_GROUP = (1 << 32) - 1  # the kernel numbers IOMMU groups with an int

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Adds the binding, info and memlock commands."""
    sub = _common.add_command(
        subparsers, "bind", _cmd_bind, "bind devices (whole IOMMU groups) to vfio-pci"
    )
    _add_devices(sub, required=True)
    _add_group_choice(sub)
    sub.add_argument(
        "--driver", metavar="NAME", help="bind to this driver instead of vfio-pci/the variant"
    )
    sub.add_argument("--force", action="store_true", help="also take devices the host is using")
    _add_common(sub)
    sub.add_argument(
        "--modules-root",
        type=_common.input_dir,
        metavar="DIR",
        default="/",
        help="root holding lib/modules/<release>/modules.alias (default /)",
    )
    sub.add_argument(
        "--kernel-release",
        type=_kernel_release,
        metavar="RELEASE",
        help="kernel release for modules.alias",
    )

    sub = _common.add_command(
        subparsers, "unbind", _cmd_unbind, "take devices off vfio, back to their host driver"
    )
    _add_devices(sub, required=True)
    _add_group_choice(sub)
    _add_force_back(sub)
    _add_common(sub)

    sub = _common.add_command(
        subparsers, "restore", _cmd_restore, "put journaled devices back as they were"
    )
    _add_devices(sub, required=False)
    sub.add_argument("--list", action="store_true", help="only list the journal")
    _add_force_back(sub)
    _add_common(sub)

    sub = _common.add_command(
        subparsers, "info", _cmd_info, "open a vfio-bound device and list its regions and IRQs"
    )
    sub.add_argument("bdf", metavar="BDF", help="PCI address, e.g. 0000:01:00.0")
    sub.add_argument("--iommufd", action="store_true", help="open through the cdev and /dev/iommu")

    sub = _common.add_command(
        subparsers, "memlock", _cmd_memlock, "is RLIMIT_MEMLOCK enough for a VM of this size?"
    )
    sub.add_argument("vm_memory", metavar="SIZE", help="VM memory: 16G, 16384M or bytes")
    sub.add_argument(
        "--devices", type=_common.count, default=1, metavar="N", help="VFIO devices (default 1)"
    )
    sub.add_argument("--viommu", action="store_true", help="the guest has a virtual IOMMU")
    sub.add_argument("--iommufd", action="store_true", help="devices use iommufd")


def _add_devices(sub: argparse.ArgumentParser, *, required: bool) -> None:
    sub.add_argument(
        "bdfs",
        nargs="+" if required else "*",
        metavar="BDF|GROUP",
        help="PCI address (0000:01:00.0), or an IOMMU group number for its whole group",
    )


def _add_group_choice(sub: argparse.ArgumentParser) -> None:
    choice = sub.add_mutually_exclusive_group()
    choice.add_argument(
        "--group",
        action="store_const",
        const=True,
        dest="group",
        help="always the whole IOMMU group (the default when it has several endpoints)",
    )
    choice.add_argument(
        "--only",
        action="store_const",
        const=False,
        dest="group",
        help="only the named devices (leaves a shared group not viable)",
    )


def _add_force_back(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--force",
        action="store_true",
        help="act even on a device whose state does not match its journal entry, that the "
        "host is using, or whose group a process holds open (the output says what it overrode)",
    )


def _add_common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--dry-run", action="store_true", help="print the sysfs writes only")
    sub.add_argument(
        "--state-dir", type=_common.directory_or_missing, metavar="DIR", help="journal directory"
    )


# What `uname -r` prints: one path component (it names lib/modules/<release>).
_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}\Z")


def _kernel_release(text: str) -> str:
    if not _RELEASE.match(text):
        raise argparse.ArgumentTypeError(
            f"{echo(text)} is not a kernel release (like 6.8.0-48-generic: letters, digits, "
            "'.', '_', '+', '~' and '-', no '/')"
        )
    return text


class _Where(NamedTuple):
    """The host binding works on and its journal directory."""

    paths: HostPaths
    state_dir: str


def _where(args: argparse.Namespace) -> _Where:
    # The sample host is shared (cached per user): plans and listings only.
    if args.sample and not (args.dry_run or getattr(args, "list", False)):
        raise InvalidInputError(
            "the sample host is read-only: it cannot be bound or restored",
            hint="add --dry-run to see the writes, or build a fake host with kata_vfio.testing",
        )
    paths = _common.host_paths(args)
    return _Where(paths, args.state_dir or binding.default_state_dir(paths))


def _bdfs(texts: list[str]) -> list[Bdf]:
    return [Bdf(text) for text in texts]  # a malformed address is a usage error (exit 2)


def _targets(args: argparse.Namespace, paths: HostPaths) -> tuple[list[Bdf], bool | None]:
    """The addresses named, with each group number (``12``) replaced by its endpoints, and
    the group mode (a group number means the whole group)."""
    numbers = [text for text in args.bdfs if text.isascii() and text.isdecimal()]
    if numbers and args.group is False:
        raise InvalidInputError(
            f"--only cannot take a group number ({', '.join(n[:20] for n in numbers)})",
            hint="name the devices, or drop --only",
        )
    bdfs = _bdfs([text for text in args.bdfs if text not in numbers])
    host = scan(paths)
    _refuse_bridges(host, bdfs)
    if numbers:
        for number in numbers:
            group = parse_count(number, what="IOMMU group", maximum=_MAX_GROUP)
            endpoints = host.group(group).endpoints  # DeviceNotFoundError if unknown
            if not endpoints:
                raise InvalidInputError(
                    f"IOMMU group {number} holds only bridges",
                    hint="bridges are never bound; `kata-vfio groups` lists the groups",
                )
            bdfs.extend(endpoints)
    return bdfs, True if numbers else args.group


def _refuse_bridges(host: Host, bdfs: list[Bdf]) -> None:
    """A bridge named is bad input (exit 2): bridges are never bound, their endpoints are."""
    for bdf in bdfs:
        device = host.find_device(bdf)
        if device is not None and not device.is_endpoint:
            raise InvalidInputError(
                f"{bdf} is a {device.class_name.lower()}: bridges are never bound or unbound",
                hint="name the endpoints behind it (`kata-vfio groups` lists them); bridges "
                "do not block a group's viability",
            )


def _action_text(report: BindReport, action: str) -> str:
    if report.dry_run and action in ("bound", "restored", "unbound"):
        return f"would be {action}"
    return action


def _print_report(report: BindReport, args: argparse.Namespace, state_dir: str) -> None:
    if args.json:
        document = binding.report_dict(report)
        document["state_dir"] = state_dir
        _common.print_json(document)
        return
    for message in report.messages:
        print(message)
    for reason in report.overridden:
        print(f"--force: {reason}")
    if report.devices:
        _common.print_table(
            ["BDF", "GROUP", "DRIVER BEFORE", "DRIVER AFTER", "ACTION"],
            [
                [
                    str(d.bdf),
                    d.group,
                    d.driver_before or "(none)",
                    d.driver_after or "(none)",
                    _action_text(report, d.action),
                ]
                for d in report.devices
            ],
        )
    if report.dry_run:
        print("sysfs writes (not made):" if report.writes else "no sysfs writes needed")
        for write in report.writes:
            print(f"  {binding.describe_write(write)}")
    else:
        print(f"{len(report.writes)} sysfs writes; journal: {state_dir}")
    _print_problems(report.problems)


def _print_problems(problems: tuple[str, ...]) -> None:
    for problem in problems:
        print(f"kata-vfio: warning: {problem}", file=sys.stderr)


def _exit_code(problems: tuple[str, ...]) -> int:
    """Damaged journal files are a finding: the rest was done, these need a look."""
    return _common.EXIT_FINDING if problems else _common.EXIT_OK


def _cmd_bind(args: argparse.Namespace) -> int:
    where = _where(args)
    bdfs, group = _targets(args, where.paths)
    report = binding.bind(
        bdfs,
        group=group,
        driver=args.driver,
        force=args.force,
        dry_run=args.dry_run,
        modules_root=args.modules_root,
        kernel_release=args.kernel_release,
        paths=where.paths,
        state_dir=where.state_dir,
    )
    _print_report(report, args, where.state_dir)
    return _common.EXIT_OK


def _cmd_unbind(args: argparse.Namespace) -> int:
    where = _where(args)
    bdfs, group = _targets(args, where.paths)
    report = binding.unbind(
        bdfs,
        group=group,
        force=args.force,
        dry_run=args.dry_run,
        paths=where.paths,
        state_dir=where.state_dir,
    )
    _print_report(report, args, where.state_dir)
    return _exit_code(report.problems)


def _cmd_restore(args: argparse.Namespace) -> int:
    where = _where(args)
    if args.list:
        journal = binding.read_journal(where.state_dir)
        _print_journal(journal, args, where.state_dir)
        return _exit_code(journal.problems)
    devices = _bdfs(args.bdfs) if args.bdfs else None
    report = binding.restore(
        devices,
        force=args.force,
        dry_run=args.dry_run,
        paths=where.paths,
        state_dir=where.state_dir,
    )
    if not report.devices and not args.json:
        print(f"nothing to restore (journal {where.state_dir} has no usable entry)")
    _print_report(report, args, where.state_dir)
    return _exit_code(report.problems)


def _print_journal(journal: binding.Journal, args: argparse.Namespace, state_dir: str) -> None:
    entries = journal.entries
    if args.json:
        rows = [
            {
                "bdf": str(e.bdf),
                "group": e.group,
                "driver": e.driver,
                "driver_override": e.driver_override,
                "target": e.target,
            }
            for e in entries
        ]
        _common.print_json(
            {"state_dir": state_dir, "entries": rows, "problems": list(journal.problems)}
        )
        return
    if entries:
        _common.print_table(
            ["BDF", "GROUP", "ORIGINAL DRIVER", "ORIGINAL OVERRIDE", "BOUND TO"],
            [[str(e.bdf), e.group, e.driver, e.driver_override, e.target] for e in entries],
        )
    else:
        print(f"nothing to restore (journal {state_dir} has no usable entry)")
    _print_problems(journal.problems)


def _size_text(size: int) -> str:
    return f"{memlock.format_size(size)} ({size:#x})" if size else "0"


def _cmd_info(args: argparse.Namespace) -> int:
    if args.sample:
        raise InvalidInputError(
            "the sample host has no real VFIO nodes to open",
            hint="run `kata-vfio info` on a host with the device bound to vfio-pci",
        )
    report = vfio.device_report(
        Bdf(args.bdf),
        mode="iommufd" if args.iommufd else "legacy",
        paths=_common.host_paths(args),
    )
    if args.json:
        _common.print_json(report.to_dict())
        return _common.EXIT_OK
    info = report.info
    kinds = [n for n, on in (("reset", info.can_reset), ("pci", info.is_pci)) if on]
    print(
        f"{report.bdf} ({report.mode}): flags={info.flags:#x} ({', '.join(kinds) or '-'}), "
        f"{info.num_regions} regions, {info.num_irqs} IRQ indexes"
    )
    _common.print_table(
        ["REGION", "NAME", "SIZE", "OFFSET", "ACCESS"],
        [
            [
                r.index,
                vfio.region_name(r.index),
                _size_text(r.size),
                f"{r.offset:#x}",
                ",".join(
                    n for n, on in (("r", r.readable), ("w", r.writable), ("mmap", r.mmap)) if on
                )
                or "-",
            ]
            for r in report.regions
        ],
    )
    _common.print_table(
        ["IRQ", "NAME", "COUNT", "FLAGS"],
        [[q.index, vfio.irq_name(q.index), q.count, f"{q.flags:#x}"] for q in report.irqs],
    )
    if report.hot_reset is None:
        print("hot reset: not supported (no bus or slot reset)")
    else:
        touched = ", ".join(str(d.bdf) for d in report.hot_reset)
        print(f"hot reset also resets: {touched}")
    return _common.EXIT_OK


def _cmd_memlock(args: argparse.Namespace) -> int:
    diagnosis = memlock.diagnose(
        memlock.parse_size(args.vm_memory, what="VM memory size", minimum=memlock.MIN_VM_MEMORY),
        devices=args.devices,
        viommu=args.viommu,
        iommufd=args.iommufd,
    )
    if args.json:
        _common.print_json(diagnosis.to_dict())
    else:
        print(f"{'ok' if diagnosis.ok else 'TOO LOW'}: {diagnosis.detail}")
        if diagnosis.hint:
            print(f"hint: {diagnosis.hint}")
    return _common.EXIT_OK if diagnosis.ok else _common.EXIT_FINDING
