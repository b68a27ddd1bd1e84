"""``kata-vfio sandbox plan | container``: the sandbox and container device flows.

``plan`` shows what creating the pod's VM does with a bundle: the CDI devices injected, the
outer ``cdi.k8s.io/`` annotations removed, the devices cold-plugged and where, the PCIe ports,
and the QEMU command line; ``--write`` stores the edited config.json atomically. ``container``
plans a workload container against a stored sandbox plan (``plan --json`` output): the inner
annotations for the guest and the agent's device list.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any

from kata_vfio import oci
from kata_vfio._core import scan
from kata_vfio._json import strict_loads
from kata_vfio.cdi import DevfsLookup, Registry
from kata_vfio.cli import _common
from kata_vfio.errors import ConfigError, HostIOError, InvalidInputError
from kata_vfio.kata.config import KataConfig, load_config
from kata_vfio.kata.container import SandboxView, plan_container
from kata_vfio.kata.sandbox import SandboxPlan, plan_sandbox, vm_name

__all__ = ["DEFAULT_CONFIGS", "RUNTIME_BASE", "add_plan_options", "plan_from_args", "register"]

# Where Kata looks for its configuration, in order (the first that exists is used).
DEFAULT_CONFIGS = (
    "/etc/kata-containers/configuration.toml",
    "/opt/kata/share/defaults/kata-containers/configuration.toml",
    "/usr/share/defaults/kata-containers/configuration.toml",
)
RUNTIME_BASE = "/run/kata-vfio"
_MAX_PLAN_BYTES = 64 * 1024 * 1024


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
    sub.add_argument("--bundle", required=True, metavar="DIR", help="the container's bundle")
    sub.add_argument(
        "--sandbox-plan",
        required=True,
        metavar="FILE",
        help="the sandbox plan (the output of 'kata-vfio sandbox plan --json')",
    )
    sub.add_argument(
        "--write", action="store_true", help="store the edited config.json (atomically)"
    )


def add_plan_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that plans a sandbox takes."""
    parser.add_argument("--bundle", required=True, metavar="DIR", help="the sandbox's bundle")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="Kata configuration (default: the first of " + ", ".join(DEFAULT_CONFIGS) + ")",
    )
    parser.add_argument(
        "--spec-dir",
        action="append",
        dest="spec_dirs",
        metavar="DIR",
        help="a CDI spec directory; repeat in priority order, last wins "
        "(default: /etc/cdi then /var/run/cdi)",
    )
    parser.add_argument(
        "--device",
        action="append",
        dest="devices",
        metavar="NAME",
        help="CDI device to cold-plug instead of the cdi.k8s.io/ annotations, as the kubelet's "
        "Pod Resources API names it (repeatable)",
    )
    parser.add_argument(
        "--runtime-dir",
        metavar="DIR",
        help=f"the VM's private runtime directory (default: {RUNTIME_BASE}/<sandbox>)",
    )
    parser.add_argument(
        "--accel", choices=("kvm", "tcg"), default="kvm", help="QEMU accelerator (default kvm)"
    )


def plan_from_args(args: argparse.Namespace) -> tuple[str, SandboxPlan]:
    """Loads the bundle, configuration, CDI registry and host, and plans the sandbox;
    returns the path of the bundle's config.json and the plan."""
    path, spec = oci.load_bundle(args.bundle)
    config = _load_config(args.config)
    roots = _common.host_roots(args)
    host = scan(roots.sysfs_root, roots.dev_root, roots.proc_root, details=True)
    lookup = (
        DevfsLookup(roots.dev_root, roots.sysfs_root) if (args.sample or args.dev_root) else None
    )
    registry = Registry(args.spec_dirs or None, device_lookup=lookup)
    runtime_dir = args.runtime_dir or os.path.join(RUNTIME_BASE, vm_name(oci.annotations(spec)))
    plan = plan_sandbox(
        spec,
        host=host,
        config=config,
        registry=registry,
        cdi_names=args.devices,
        accel=args.accel,
        runtime_dir=os.path.abspath(runtime_dir),
    )
    return path, plan


def _load_config(path: str | None) -> KataConfig:
    if path is not None:
        return load_config(path)
    for candidate in DEFAULT_CONFIGS:
        if os.path.isfile(candidate):
            return load_config(candidate)
    raise ConfigError(
        "no Kata configuration found in " + ", ".join(DEFAULT_CONFIGS),
        hint="pass one with --config",
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
    view = SandboxView.from_document(_read_plan(args.sandbox_plan), source=args.sandbox_plan)
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


def _read_plan(path: str) -> Any:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise HostIOError(
            f"cannot read sandbox plan {path}: {exc.strerror}",
            errno=exc.errno,
            path=path,
            hint="save it first: kata-vfio sandbox plan --bundle DIR --json > plan.json",
        ) from exc
    if len(data) > _MAX_PLAN_BYTES:
        raise InvalidInputError(f"sandbox plan {path} is larger than 64 MiB")
    try:
        return strict_loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(
            f"sandbox plan {path} is not valid JSON: {exc}",
            hint="pass the output of 'kata-vfio sandbox plan --json'",
        ) from exc
