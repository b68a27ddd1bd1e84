"""The ``kata-vfio`` command: parse arguments, call the public API, print.

Each command family lives in its own module that exposes ``register(subparsers)``; the module
list below is the only place that knows them all. Exit codes (kata_vfio.cli._exit, the one
place that defines them): 0 ok, 1 a finding, 2 bad usage or bad input; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from kata_vfio.cli import _common
from kata_vfio.cli._exit import ExitCode, guarded, report

# Modules that add subcommands, in the order their commands appear in --help.
_COMMAND_MODULES: tuple[str, ...] = ("host", "bind", "cdi", "sandbox", "qemu", "k8s")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (global options, then one subcommand)."""
    parser = _common.ArgumentParser(
        prog="kata-vfio",
        description="Host side of VFIO passthrough into Kata Containers sandboxes.",
    )
    _common.add_global_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"kata_vfio.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _common.UsageError as exc:
        print(f"kata-vfio: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except SystemExit as done:
        # --help: argparse printed it and exits 0.
        return done.code if isinstance(done.code, int) else ExitCode.USAGE
    except Exception as exc:  # an argument type that failed in a way argparse does not catch
        return report(exc)
    return guarded(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
