"""The options of every command that plans a sandbox (``sandbox plan``, ``qemu run``), and
the plan they ask for."""

from __future__ import annotations

import argparse
import os

from kata_vfio import oci, scan
from kata_vfio.cdi import DevfsLookup, Registry
from kata_vfio.cli import _common
from kata_vfio.kata.config import DEFAULT_CONFIG_PATHS, load_config, load_default_config
from kata_vfio.kata.sandbox import RUNTIME_BASE, SandboxPlan, default_runtime_dir, plan_sandbox


def add_plan_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that plans a sandbox takes."""
    parser.add_argument("--bundle", required=True, metavar="DIR", help="the sandbox's bundle")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="Kata configuration (default: the first of " + ", ".join(DEFAULT_CONFIG_PATHS) + ")",
    )
    _common.add_spec_dir_option(parser)
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
    """Plans the sandbox the options name; returns the path of the bundle's config.json and
    the plan."""
    path, spec = oci.load_bundle(args.bundle)
    config = load_config(args.config) if args.config is not None else load_default_config()
    paths = _common.host_paths(args)
    host = scan(paths, details=True)
    lookup = DevfsLookup(paths.devfs, paths.sysfs) if (args.sample or args.dev_root) else None
    registry = Registry(args.spec_dirs or None, device_lookup=lookup)
    runtime_dir = args.runtime_dir or default_runtime_dir(oci.annotations(spec))
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
