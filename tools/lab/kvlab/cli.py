"""The lab's command line: fetch/build kernels and images, boot a command in the guest.

tools/lab/lab prepare                 fetch the Debian kernel, build the lab kernel, images
tools/lab/lab kernel debian|lab       just one kernel
tools/lab/lab run [--kernel K] -- CMD run CMD (from the current directory) in the guest
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from kvlab import cache, initramfs, kernels, vm
from kvlab.errors import LabError, LabUnavailableError

KERNEL_NAMES = ("debian", "lab")


def get_kernel(name: str) -> kernels.Kernel:
    """The kernel called ``name`` ("debian" or "lab"), from the cache or freshly made."""
    return kernels.debian_kernel() if name == "debian" else kernels.lab_kernel()


def _cmd_kernel(args: argparse.Namespace) -> int:
    kernel = get_kernel(args.kernel)
    print(f"{kernel.name}: {kernel.image} ({kernel.release})")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    unknown = [name for name in args.kernels if name not in KERNEL_NAMES]
    if unknown:
        print(f"lab prepare: unknown kernels {unknown}; choose from {list(KERNEL_NAMES)}")
        return 2
    for name in args.kernels or KERNEL_NAMES:
        started = time.monotonic()
        kernel = get_kernel(name)
        guest = initramfs.guest_image(kernel)
        inner = initramfs.inner_image(kernel)
        seed = initramfs.seed_image(kernel)
        took = time.monotonic() - started
        print(
            f"{name}: {kernel.image} ({kernel.release}) {guest.name} {inner.name} {seed.name} "
            f"[{took:.0f} s]"
        )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    kernel = get_kernel(args.kernel)
    out = args.out or Path(tempfile.mkdtemp(dir=cache.cache_root(), prefix="run-"))
    config = vm.VmConfig(
        kernel=kernel,
        initrd=initramfs.guest_image(kernel),
        out_dir=out.resolve(),
        memory_mib=args.memory,
        timeout_s=args.timeout,
        cpu=args.cpu,
    )
    result = vm.boot(config, args.argv or ["true"], cwd=Path.cwd())
    print(result.console, end="")
    started = "?" if result.command_started_s is None else f"{result.command_started_s:.1f}"
    print(
        f"lab: {kernel.release}: rc={result.returncode} wall={result.wall_s:.1f}s "
        f"command started at {started}s of guest uptime; output in {out}",
        file=sys.stderr,
    )
    if result.timed_out:
        return 124
    return 255 if result.returncode is None else result.returncode


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``tools/lab/lab``."""
    parser = argparse.ArgumentParser(
        prog="lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    kernel = sub.add_parser("kernel", help="fetch or build one lab kernel into the cache")
    kernel.add_argument("kernel", choices=KERNEL_NAMES)
    kernel.set_defaults(handler=_cmd_kernel)
    prepare = sub.add_parser("prepare", help="make every kernel and image the tests use")
    # No `choices=` here: argparse checks the empty default list against the choices and
    # refuses a bare `prepare` (Python 3.11); the names are checked in the handler instead.
    prepare.add_argument("kernels", nargs="*", metavar="{" + ",".join(KERNEL_NAMES) + "}")
    prepare.set_defaults(handler=_cmd_prepare)
    run = sub.add_parser("run", help="boot the lab guest and run a command in it")
    run.add_argument("--kernel", choices=KERNEL_NAMES, default="debian")
    run.add_argument("--out", type=Path, help="results directory (default: a new one)")
    run.add_argument("--memory", type=int, default=2048, help="guest memory in MiB")
    run.add_argument("--timeout", type=float, default=900.0, help="seconds before giving up")
    run.add_argument("--cpu", default="max", help="QEMU CPU model of the guest (default max)")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="the command (after --)")
    run.set_defaults(handler=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2: prerequisite missing, 1: lab failure)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "argv", None) and args.argv[0] == "--":
        args.argv = args.argv[1:]
    try:
        return int(args.handler(args))
    except LabUnavailableError as exc:
        print(f"lab: unavailable: {exc}", file=sys.stderr)
        return 2
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
