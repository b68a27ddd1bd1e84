"""The options of every command that plans a sandbox (``sandbox plan``, ``qemu run``), and
the plan they ask for."""

from __future__ import annotations

import argparse
import dataclasses
import os

from kata_vfio import oci, scan
from kata_vfio.cdi import DevfsLookup, Registry
from kata_vfio.cli import _common
from kata_vfio.errors import InvalidInputError
from kata_vfio.k8s.allocation import SandboxLookup, functions_via, sandbox_devices
from kata_vfio.kata.config import (
    DEFAULT_CONFIG_PATHS,
    KataConfig,
    load_config,
    load_default_config,
)
from kata_vfio.kata.kinds import KindRule, parse_kind_rule
from kata_vfio.kata.sandbox import RUNTIME_BASE, SandboxPlan, default_runtime_dir, plan_sandbox


def add_plan_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that plans a sandbox takes."""
    parser.add_argument(
        "--bundle",
        required=True,
        type=_common.bundle_dir,
        metavar="DIR",
        help="the sandbox's bundle",
    )
    parser.add_argument(
        "--config",
        type=_common.input_file,
        metavar="FILE",
        help="Kata configuration (default: the first of " + ", ".join(DEFAULT_CONFIG_PATHS) + ")",
    )
    _common.add_spec_dir_option(parser)
    parser.add_argument(
        "--device",
        action="append",
        dest="devices",
        type=_common.cdi_device_name,
        metavar="NAME",
        help="CDI device to cold-plug instead of the cdi.k8s.io/ annotations, as the kubelet's "
        "Pod Resources API names it (repeatable)",
    )
    parser.add_argument(
        "--pod-resources",
        type=_common.socket_or_missing,
        metavar="SOCKET",
        help="the kubelet's Pod Resources socket: cold-plug what the kubelet allocated to the "
        "pod (named by the io.kubernetes.cri.sandbox-name/-namespace annotations); "
        "cdi.k8s.io/ annotations must then name none but those (default: the configuration's "
        "pod_resource_api_sock when cold_plug_vfio is on)",
    )
    parser.add_argument(
        "--no-pod-resources",
        action="store_true",
        help="ignore pod_resource_api_sock: take the cdi.k8s.io/ annotations, trusted",
    )
    parser.add_argument(
        "--device-sources",
        choices=("both", "device-plugin", "dra"),
        default="both",
        help="which of the kubelet's allocations count: device plugins, DRA claims or both "
        "(default both)",
    )
    parser.add_argument(
        "--runtime-dir",
        type=_common.absolute_path,
        metavar="DIR",
        help=f"the VM's private runtime directory (default: {RUNTIME_BASE}/<sandbox>)",
    )
    parser.add_argument(
        "--accel", choices=("kvm", "tcg"), default="kvm", help="QEMU accelerator (default kvm)"
    )
    parser.add_argument(
        "--guest-kind",
        action="append",
        dest="guest_kinds",
        type=_guest_kind,
        default=[],
        metavar="VVVV:CC[SS]=KIND",
        help="a guest CDI kind for the inner cdi.k8s.io/vfio<N> annotations, tried before the "
        "built-in table: vendor id and PCI class (base, or base and subclass) in hex, e.g. "
        "8086:0200=example.com/nic (repeatable)",
    )


def _guest_kind(text: str) -> KindRule:
    try:
        return parse_kind_rule(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(f"{exc.message} ({exc.hint})") from None


def plan_from_args(args: argparse.Namespace) -> tuple[str, SandboxPlan]:
    """Plans the sandbox the options name; returns the path of the bundle's config.json and
    the plan."""
    path, spec = oci.load_bundle(args.bundle)
    config = load_config(args.config) if args.config is not None else load_default_config()
    paths = _common.host_paths(args)
    host = scan(paths, details=True)
    lookup = DevfsLookup(paths.devfs, paths.sysfs) if (args.sample or args.dev_root) else None
    registry = Registry(args.spec_dirs or None, device_lookup=lookup)
    runtime_dir = args.runtime_dir or default_runtime_dir(oci.annotations(spec))
    kubelet = SandboxLookup(None)
    if args.devices is None:
        kubelet = sandbox_devices(
            oci.annotations(spec),
            _pod_resources_socket(args, config),
            policy=args.device_sources,
            functions_of=functions_via(registry, host),
        )
    plan = plan_sandbox(
        spec,
        host=host,
        config=config,
        registry=registry,
        cdi_names=args.devices,
        kubelet_devices=kubelet.devices,
        accel=args.accel,
        runtime_dir=os.path.abspath(runtime_dir),
        guest_kinds=args.guest_kinds,
    )
    if kubelet.note:
        plan = dataclasses.replace(plan, warnings=(kubelet.note, *plan.warnings))
    return path, plan


def _pod_resources_socket(args: argparse.Namespace, config: KataConfig) -> str:
    """``--pod-resources``, else Kata's ``pod_resource_api_sock`` (used only with cold-plug on,
    as Kata does), else none."""
    if args.no_pod_resources:
        return ""
    if args.pod_resources is not None:
        return str(args.pod_resources)
    return config.pod_resource_api_sock if config.cold_plug else ""
