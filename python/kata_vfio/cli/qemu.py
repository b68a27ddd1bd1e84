"""``kata-vfio qemu run | hotplug | unplug | ports``: start the planned VM, change it over QMP.

``run`` plans the sandbox (as ``sandbox plan``), starts QEMU in the foreground with QMP in
the runtime directory, hot-plugs the devices the plan leaves for hot-plug, and stops QEMU
softly on Ctrl-C or SIGTERM; ``--dry-run`` only prints the command; ``--user`` runs QEMU as
that unprivileged user (:func:`kata_vfio.kata.run.run_sandbox` passes the VFIO cdevs as fds).
``hotplug`` and ``unplug`` act on a running QEMU through its QMP socket (``hotplug`` hands a
cdev group's fds to QEMU over QMP).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import signal
import sys
from types import FrameType
from typing import Any

from kata_vfio import scan
from kata_vfio._echo import echo
from kata_vfio.cli import _common
from kata_vfio.cli._plan import add_plan_options, plan_from_args
from kata_vfio.kata.hotplug import node_hotplug
from kata_vfio.kata.run import run_sandbox
from kata_vfio.qemu.argv import validate_id
from kata_vfio.qemu.hotplug import plug_group, unplug_group
from kata_vfio.qemu.privileges import resolve_user
from kata_vfio.qemu.qmp import QmpSession, list_ports, port_occupancy, resume, unplug
from kata_vfio.qemu.run import VmStarted
from kata_vfio.vm.hotplug import HotplugGroup

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Adds ``qemu`` and its subcommands."""
    qemu = _common.add_command(
        subparsers, "qemu", _cmd_missing, "run the planned VM, hot-plug and unplug over QMP"
    )
    commands = qemu.add_subparsers(dest="qemu_command", metavar="SUBCOMMAND")
    commands.required = True

    sub = _common.add_subcommand(
        commands, "run", _cmd_run, "start the planned sandbox VM (foreground)"
    )
    add_plan_options(sub)
    sub.add_argument(
        "--dry-run", action="store_true", help="print the command it would run, start nothing"
    )
    sub.add_argument(
        "--paused",
        action="store_true",
        help="start the guest's CPUs stopped (QEMU -S) until `kata-vfio qemu resume`",
    )
    sub.add_argument(
        "--start-timeout",
        type=_common.seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long QEMU may take to answer on QMP (default 30)",
    )
    sub.add_argument(
        "--user",
        type=_common.checked(resolve_user),
        metavar="USER",
        help="run QEMU as this unprivileged user (NAME, UID or UID:GID); VFIO cdevs are "
        "opened here and passed to it",
    )

    sub = _common.add_subcommand(
        commands, "hotplug", _cmd_hotplug, "hot-plug a VFIO device into a free port"
    )
    _qmp_option(sub)
    sub.add_argument(
        "--device",
        required=True,
        type=_vfio_node,
        metavar="NODE",
        help="/dev/vfio/<group> or /dev/vfio/devices/vfioN (the whole group is plugged)",
    )
    sub.add_argument(
        "--port",
        action="append",
        dest="ports",
        type=_qemu_id,
        metavar="ID",
        help="port(s) to choose from, in order (default: every free port, numeric order)",
    )

    sub = _common.add_subcommand(
        commands, "unplug", _cmd_unplug, "unplug a device and its iommufd object"
    )
    _qmp_option(sub)
    target = sub.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--device", type=_vfio_node, metavar="NODE", help="the VFIO node it was plugged from"
    )
    target.add_argument(
        "--id",
        action="append",
        dest="ids",
        type=_qemu_id,
        metavar="ID",
        help="QEMU device id (repeatable)",
    )
    sub.add_argument(
        "--iommufd", type=_qemu_id, metavar="ID", help="iommufd object to delete with --id"
    )
    sub.add_argument(
        "--timeout",
        type=_common.seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long the guest may take to release the device (default 30)",
    )

    sub = _common.add_subcommand(
        commands, "ports", _cmd_ports, "list the VM's PCIe ports and what is on them"
    )
    _qmp_option(sub)

    sub = _common.add_subcommand(
        commands, "resume", _cmd_resume, "let a VM started with --paused run (QMP cont)"
    )
    _qmp_option(sub)


# The nodes the kernel makes for VFIO: /dev/vfio/<group> and /dev/vfio/devices/vfio<N>.
_VFIO_NODE = re.compile(r"/dev/vfio/(?:devices/vfio)?(?:0|[1-9][0-9]{0,9})\Z")


def _vfio_node(text: str) -> str:
    if not _VFIO_NODE.match(text):
        raise argparse.ArgumentTypeError(
            f"{echo(text)} is not a VFIO node (/dev/vfio/<group> or /dev/vfio/devices/vfio<N>)"
        )
    return text


_qemu_id = _common.checked(validate_id)


def _qmp_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--qmp",
        required=True,
        type=_common.unix_socket,
        metavar="SOCKET",
        help="the VM's QMP unix socket",
    )
    parser.add_argument(
        "--qmp-timeout",
        type=_common.seconds,
        default=10.0,
        metavar="SECONDS",
        help="per QMP command",
    )


def _cmd_missing(args: argparse.Namespace) -> int:
    del args
    print("kata-vfio: qemu needs a subcommand (see: kata-vfio qemu --help)", file=sys.stderr)
    return _common.EXIT_USAGE


def _json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def _cmd_run(args: argparse.Namespace) -> int:
    _path, plan = plan_from_args(args)
    if args.dry_run:
        argv = [*plan.qemu_argv, "-S"] if args.paused else plan.qemu_argv
        if _json(args):
            _common.print_json(
                {"dry_run": True, "qemu_argv": argv, "runtime_dir": plan.runtime_dir}
            )
        else:
            print("would run (QMP sockets added at start):")
            print(shlex.join(argv))
        return _common.EXIT_OK

    def started(vm: VmStarted) -> None:
        plugged: list[dict[str, Any]] = [
            {"group": p.group, "ports": list(p.result.ports), "ids": list(p.result.ids)}
            for p in vm.hotplugged
        ]
        if _json(args):
            _common.print_json(
                {
                    "pid": vm.pid,
                    "runtime_dir": vm.runtime_dir,
                    "qmp": vm.qmp_socket,
                    "hotplugged": plugged,
                    "paused": vm.paused,
                }
            )
        else:
            print(f"QEMU running, pid {vm.pid}, QMP {vm.qmp_socket}")
            if vm.paused:
                print(f"guest paused: resume it with kata-vfio qemu resume --qmp {vm.qmp_socket}")
            for entry in plugged:
                print(f"hot-plugged group {entry['group']} into {', '.join(entry['ports'])}")
        sys.stdout.flush()

    user = args.user  # resolved (and refused when bad) while parsing
    with contextlib.suppress(_Stop), _stop_on_signals():
        run_sandbox(
            plan,
            start_timeout=args.start_timeout,
            on_started=started,
            user=user,
            paths=_common.host_paths(args),
            paused=args.paused,
        )
    return _common.EXIT_OK


class _Stop(Exception):
    """SIGINT or SIGTERM arrived: leave the VM's wait, which stops QEMU softly."""


class _stop_on_signals:
    def __enter__(self) -> None:
        self._previous = {
            sig: signal.signal(sig, self._raise) for sig in (signal.SIGINT, signal.SIGTERM)
        }

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @staticmethod
    def _raise(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        raise _Stop


def _session(args: argparse.Namespace) -> QmpSession:
    return QmpSession(args.qmp, timeout=args.qmp_timeout).connect()


def _group(args: argparse.Namespace) -> HotplugGroup:
    host = scan(_common.host_paths(args))
    return node_hotplug(host, args.device)


def _cmd_hotplug(args: argparse.Namespace) -> int:
    group = _group(args)
    with _session(args) as session:
        result = plug_group(session, group, paths=_common.host_paths(args), ports=args.ports)
    document = {
        "ports": list(result.ports),
        "ids": list(result.ids),
        "iommufd": result.iommufd,
        "guest_pci_paths": list(result.paths),
    }
    if _json(args):
        _common.print_json(document)
    else:
        for port, path in zip(result.ports, result.paths, strict=True):
            print(f"plugged {args.device} into {port} (guest PCI path {path})")
        print(f"device ids: {', '.join(result.ids)}")
    return _common.EXIT_OK


def _cmd_unplug(args: argparse.Namespace) -> int:
    if args.device is not None:
        group = _group(args)
        ids, iommufd = list(group.device_ids), group.iommufd
        with _session(args) as session:
            unplug_group(session, group, timeout=args.timeout)
    else:
        ids, iommufd = list(args.ids), args.iommufd
        with _session(args) as session:
            unplug(session, ids, iommufd=iommufd, timeout=args.timeout)
    if _json(args):
        _common.print_json({"removed": ids, "iommufd_deleted": iommufd})
    else:
        print(f"removed {', '.join(ids)}" + (f" and iommufd object {iommufd}" if iommufd else ""))
    return _common.EXIT_OK


def _cmd_resume(args: argparse.Namespace) -> int:
    with _session(args) as session:
        status = resume(session)
    if _json(args):
        _common.print_json({"status": status})
    else:
        print(f"resumed: the VM is {status}")
    return _common.EXIT_OK


def _cmd_ports(args: argparse.Namespace) -> int:
    with _session(args) as session:
        ports = list_ports(session)
        occupancy = port_occupancy(session)
    rows = [(port, ", ".join(occupancy.get(port, ())) or None) for port in ports]
    if _json(args):
        _common.print_json(
            {"ports": [{"id": port, "devices": list(occupancy.get(port, ()))} for port in ports]}
        )
    else:
        _common.print_table(["PORT", "DEVICES"], rows)
    return _common.EXIT_OK
