"""``kata-vfio sandbox plan | container``: the sandbox and container device flows.

``plan`` shows what creating the pod's VM does with a bundle: the CDI devices injected, the
outer ``cdi.k8s.io/`` annotations removed, the devices cold-plugged and where, the PCIe ports,
and the QEMU command line; ``--write`` stores the edited config.json atomically. ``container``
plans a workload container against a stored sandbox plan (``plan --json`` output): the inner
annotations for the guest and the agent's device list.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from kata_vfio import oci
from kata_vfio.cli import _common
from kata_vfio.cli._plan import add_plan_options, plan_from_args
from kata_vfio.kata.container import load_sandbox_view, plan_container
from kata_vfio.kata.sandbox import SandboxPlan

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Adds ``sandbox`` and its subcommands."""
    sandbox = _common.add_command(
        subparsers, "sandbox", _cmd_missing, "plan sandbox and container device flows (Kata)"
    )
    commands = sandbox.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND")
    commands.required = True

    sub = _common.add_subcommand(
        commands, "plan", _cmd_plan, "plan the sandbox VM: CDI devices, ports, QEMU command"
    )
    add_plan_options(sub)
    sub.add_argument(
        "--write", action="store_true", help="store the edited config.json (atomically)"
    )

    sub = _common.add_subcommand(
        commands, "container", _cmd_container, "plan a container in a planned sandbox"
    )
    sub.add_argument(
        "--bundle",
        required=True,
        type=_common.bundle_dir,
        metavar="DIR",
        help="the container's bundle",
    )
    sub.add_argument(
        "--sandbox-plan",
        required=True,
        type=_common.input_file,
        metavar="FILE",
        help="the sandbox plan (the output of 'kata-vfio sandbox plan --json')",
    )
    sub.add_argument(
        "--write", action="store_true", help="store the edited config.json (atomically)"
    )


def _cmd_missing(args: argparse.Namespace) -> int:
    del args
    print("kata-vfio: sandbox needs a subcommand (see: kata-vfio sandbox --help)", file=sys.stderr)
    return _common.EXIT_USAGE


def _cmd_plan(args: argparse.Namespace) -> int:
    path, plan = plan_from_args(args)
    if args.write and plan.spec != oci.load_oci_spec(path):
        oci.write_oci_spec(path, plan.spec)
    if getattr(args, "json", False):
        _common.print_json(plan.to_document())
    else:
        _print_plan(plan)
        if args.write:
            print(f"\nwrote {path}")
    for warning in plan.warnings:
        print(f"kata-vfio: warning: {warning}", file=sys.stderr)
    return _common.EXIT_OK


def _print_plan(plan: SandboxPlan) -> None:
    print(f"configuration: {plan.config.source or 'built-in defaults'}")
    print(
        f"cold_plug_vfio={plan.config.cold_plug_vfio} hot_plug_vfio={plan.config.hot_plug_vfio} "
        f"vfio_mode={plan.config.vfio_mode} enable_iommu={str(plan.config.enable_iommu).lower()}"
    )
    print(f"CDI devices from: {plan.device_source}")
    print(f"CDI devices injected: {', '.join(plan.cdi_devices) or 'none'}")
    print(f"annotations removed: {', '.join(plan.annotations_removed) or 'none'}")
    print()
    rows = [
        (
            node.path,
            d.group,
            str(f.bdf),
            f"{f.vendor:04x}:{f.device:04x}",
            f"{f.class_code:06x}",
            f.kind,
            d.plug,
            f.port,
            f"00.{f.guest_function}",
            f.guest_pci_path,
        )
        for d in plan.devices
        for f in d.functions
        for node in d.nodes[:1]
    ]
    _common.print_table(
        ["NODE", "GROUP", "BDF", "ID", "CLASS", "KIND", "PLUG", "PORT", "ADDR", "GUEST PATH"],
        rows,
    )
    if not rows:
        print("no VFIO devices")
    used = set(plan.topology.assignments)
    free = [p.id for p in plan.topology.ports if p.id not in used]
    print(
        f"\nports: {len(plan.topology.ports)} {plan.topology.kind}"
        + (f" ({len(free)} free for hot-plug: {', '.join(free)})" if free else "")
    )
    if plan.topology.pci_hole64:
        print(f"64-bit PCI hole: {plan.topology.pci_hole64 >> 30} GiB")
    print("\nQEMU command line:")
    print(shlex.join(plan.qemu_argv))


def _cmd_container(args: argparse.Namespace) -> int:
    path, spec = oci.load_bundle(args.bundle)
    view = load_sandbox_view(args.sandbox_plan)
    plan = plan_container(spec, view)
    if args.write and plan.spec != spec:
        oci.write_oci_spec(path, plan.spec)
    if getattr(args, "json", False):
        _common.print_json(plan.to_document())
        return _common.EXIT_OK
    if plan.sandbox_container:
        print("pause (sandbox) container: no devices, no inner annotations")
    for key in plan.annotations_removed:
        print(f"removed annotation {key}")
    for key, value in plan.annotations_added.items():
        print(f"added annotation {key}: {value}")
    for device in plan.agent_devices:
        print(
            f"agent device {device.id} ({device.type}) {device.container_path}: "
            f"{' '.join(device.options)}"
        )
    for node in plan.removed_devices:
        print(f"removed from the container spec: {node}")
    for node in plan.hotplug:
        print(f"to hot-plug: {node} (kata-vfio qemu hotplug --qmp SOCKET --device {node})")
    if args.write:
        print(f"wrote {path}")
    return _common.EXIT_OK
