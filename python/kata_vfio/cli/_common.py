"""What every subcommand shares: global options, the host paths, output and error handling."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, TextIO

from kata_vfio import HostPaths
from kata_vfio._echo import echo
from kata_vfio._numbers import decimal_digits
from kata_vfio.errors import InvalidInputError, KataVfioError

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Raised by the parser instead of exiting, so main() owns the exit code."""


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)")


_MAX_SECONDS = 7 * 24 * 3600.0
_MAX_COUNT = 1 << 16


def seconds(text: str) -> float:
    """argparse type for a timeout: a finite number of seconds above 0, at most a week."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= _MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{echo(text)} is not a number of seconds (above 0, at most {_MAX_SECONDS:g})"
        )
    return value


def count(text: str) -> int:
    """argparse type for a count: decimal digits, at most 65536."""
    value = decimal_digits(text.strip(), max_value=_MAX_COUNT)
    if value is None:
        raise argparse.ArgumentTypeError(f"{echo(text)} is not a count (0..{_MAX_COUNT})")
    return value


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """Options that go before the subcommand and apply to all of them."""
    parser.add_argument(
        "--sysfs-root", metavar="DIR", default=None, help="sysfs to read (default /sys)"
    )
    parser.add_argument(
        "--dev-root", metavar="DIR", default=None, help="devfs to read (default /dev)"
    )
    parser.add_argument(
        "--proc-root", metavar="DIR", default=None, help="procfs to read (default /proc)"
    )
    parser.add_argument(
        "--sample",
        action="store_true",
        help="use the bundled sample host (an 8-GPU server) instead of this machine",
    )


def add_spec_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--spec-dir DIR`` (repeatable): the CDI spec directories, lowest priority first."""
    parser.add_argument(
        "--spec-dir",
        action="append",
        dest="spec_dirs",
        metavar="DIR",
        help="a CDI spec directory; repeat in priority order, last wins "
        "(default: /etc/cdi then /var/run/cdi)",
    )


def add_command(
    subparsers: Any, name: str, handler: Handler, help_text: str
) -> argparse.ArgumentParser:
    """Adds a subcommand with ``--json`` and its handler."""
    sub: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text
    )
    sub.add_argument("--json", action="store_true", help="print stable JSON")
    sub.set_defaults(handler=handler)
    return sub


def add_subcommand(
    commands: Any, name: str, handler: Handler, help_text: str
) -> argparse.ArgumentParser:
    """Adds a subcommand to a command family (``kata-vfio cdi list``) with its own ``--json``.

    Both ``cdi --json list`` and ``cdi list --json`` work: the subcommand's ``--json`` has no
    default, so it never resets the family's.
    """
    sub: argparse.ArgumentParser = commands.add_parser(name, help=help_text, description=help_text)
    sub.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print stable JSON"
    )
    sub.set_defaults(handler=handler)
    return sub


def host_paths(args: argparse.Namespace) -> HostPaths:
    """The host the global options name (``--sample`` builds the sample host). A copied or
    fake sysfs tree is read with the devfs and procfs beside it unless they are given, never
    with this machine's, which would mix two hosts."""
    if args.sample:
        if args.sysfs_root or args.dev_root or args.proc_root:
            raise InvalidInputError(
                "--sample cannot be combined with --sysfs-root, --dev-root or --proc-root",
                hint="use either the sample host or explicit roots",
            )
        # Imported only here: building the sample host is not needed by any other command.
        from kata_vfio.samples import sample_host  # noqa: PLC0415

        return sample_host().paths
    for option, value in (
        ("--sysfs-root", args.sysfs_root),
        ("--dev-root", args.dev_root),
        ("--proc-root", args.proc_root),
    ):
        if value is not None and not os.path.isdir(value):
            raise InvalidInputError(
                f"{option} {value!r} is not a directory",
                hint="give the directory that holds the tree (e.g. a copied /sys)",
            )
    paths = HostPaths() if args.sysfs_root is None else HostPaths.for_tree(args.sysfs_root)
    return paths.replace(devfs=args.dev_root, procfs=args.proc_root)


def print_json(document: Any, stream: TextIO | None = None) -> None:
    """Stable JSON: sorted keys, two-space indent, trailing newline."""
    out = stream or sys.stdout
    json.dump(document, out, indent=2, sort_keys=True)
    out.write("\n")


def print_table(
    headers: Sequence[str] | None,
    rows: Iterable[Sequence[object]],
    stream: TextIO | None = None,
) -> None:
    """A plain left-aligned table (no header line when ``headers`` is None); None cells
    print as '-'."""
    out = stream or sys.stdout
    text_rows = [["-" if cell is None else str(cell) for cell in row] for row in rows]
    columns = max([len(headers or [])] + [len(row) for row in text_rows])
    widths = [0] * columns
    for row in [list(headers or []), *text_rows]:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    for row in [list(headers), *text_rows] if headers else text_rows:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
        out.write(line.rstrip() + "\n")


def report_error(exc: KataVfioError, stream: TextIO | None = None) -> int:
    """Prints an error and its hint; returns the exit code it deserves."""
    out = stream or sys.stderr
    out.write(f"kata-vfio: error: {exc}\n")
    if exc.hint:
        out.write(f"kata-vfio: hint: {exc.hint}\n")
    return EXIT_USAGE if isinstance(exc, InvalidInputError) else EXIT_FINDING


def run(args: argparse.Namespace) -> int:
    """Runs the chosen handler; project errors become messages, never tracebacks."""
    handler: Handler = args.handler
    try:
        return handler(args)
    except KataVfioError as exc:
        return report_error(exc)
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
