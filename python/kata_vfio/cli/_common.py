"""What every subcommand shares: global options, the host paths, output and error handling."""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, TextIO, TypeVar

from kata_vfio import HostPaths
from kata_vfio._echo import echo
from kata_vfio.cdi import is_qualified_name
from kata_vfio.cli._exit import ExitCode
from kata_vfio.errors import InvalidInputError
from kata_vfio.units import parse_count, parse_seconds

# The contract's codes under the names the command modules use (kata_vfio.cli._exit).
EXIT_OK = ExitCode.OK
EXIT_FINDING = ExitCode.FINDING
EXIT_USAGE = ExitCode.USAGE

Handler = Callable[[argparse.Namespace], int]
_T = TypeVar("_T")


class UsageError(InvalidInputError):
    """Raised by the parser instead of exiting, so main() owns the exit code."""


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{_shorten_quoted(message)} (see: {self.prog} --help)")


# argparse quotes the values it refuses whole; a huge one is cut as kata_vfio._echo does.
_QUOTED = re.compile(r"'((?:[^'\\]|\\.){73,})'")
_MAX_MESSAGE = 1000


def _shorten_quoted(message: str) -> str:
    short = _QUOTED.sub(lambda m: echo(m.group(1)), message)
    return short if len(short) <= _MAX_MESSAGE else f"{short[:_MAX_MESSAGE]}..."


_MAX_SECONDS = 7 * 24 * 3600.0
_MAX_COUNT = 1 << 16


def seconds(text: str) -> float:
    """argparse type for a timeout: a finite number of seconds above 0, at most a week."""
    try:
        return parse_seconds(text, what="timeout", maximum=_MAX_SECONDS)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def count(text: str) -> int:
    """argparse type for a count: decimal digits, at most 65536."""
    try:
        return parse_count(text, what="count", maximum=_MAX_COUNT)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


_NAME_MAX = 255  # bytes in one path component (Linux)
_PATH_MAX = 4095  # bytes in a whole path, without the NUL


def _kind_of(text: str) -> str | None:
    """What is at ``text``: 'file', 'directory', 'socket', 'other', None when nothing is, or
    'bad path' when ``text`` cannot name a file at all (empty, NUL, too long)."""
    encoded = os.fsencode(text)
    if (
        not text
        or b"\0" in encoded
        or len(encoded) > _PATH_MAX
        or any(len(part) > _NAME_MAX for part in encoded.split(b"/"))
    ):
        return "bad path"
    try:
        mode = os.stat(text).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"path this user cannot follow ({exc.strerror})"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    return "socket" if stat.S_ISSOCK(mode) else "other"


def _refuse_path(text: str, expected: str) -> NoReturn:
    found = _kind_of(text)
    if not text:
        what = "is empty"
    elif found == "bad path":
        what = "is not a usable path (too long, or a NUL in it)"
    elif found is None:
        what = "does not exist"
    else:
        what = f"is a {found}, not a {expected}"
    raise argparse.ArgumentTypeError(f"{echo(text)} {what}")


def input_file(text: str) -> str:
    """argparse type for a file to read: it must exist and be a regular file."""
    if _kind_of(text) != "file":
        _refuse_path(text, "file")
    return text


def input_dir(text: str) -> str:
    """argparse type for a directory to read: it must exist and be a directory."""
    if _kind_of(text) != "directory":
        _refuse_path(text, "directory")
    return text


def directory_or_missing(text: str) -> str:
    """argparse type for a directory that may not exist yet (one to write into, or a CDI spec
    directory, empty until something is written there): a directory or nothing, never a file
    and never an unusable path."""
    if _kind_of(text) not in ("directory", None):
        _refuse_path(text, "directory")
    return text


def bundle_dir(text: str) -> str:
    """argparse type for an OCI bundle: a directory holding a regular ``config.json``."""
    input_dir(text)
    if _kind_of(os.path.join(text, "config.json")) != "file":
        raise argparse.ArgumentTypeError(f"{echo(text)} holds no config.json: not an OCI bundle")
    return text


def unix_socket(text: str) -> str:
    """argparse type for a unix socket to connect to: it must exist and be a socket."""
    if _kind_of(text) != "socket":
        _refuse_path(text, "socket")
    return text


def socket_or_missing(text: str) -> str:
    """argparse type for a socket that may not be there (yet): a socket or nothing, never a
    file or directory and never an unusable path."""
    if _kind_of(text) not in ("socket", None):
        _refuse_path(text, "socket")
    return text


def absolute_path(text: str) -> str:
    """argparse type for a path that will be created or used later: absolute and usable."""
    if not text.startswith("/") or _kind_of(text) == "bad path":
        raise argparse.ArgumentTypeError(
            f"{echo(text)} is not an absolute path (start it with '/', no NUL, not too long)"
        )
    return text


def checked(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """An argparse type from a parser that raises InvalidInputError: its message becomes the
    argument's error (argparse would otherwise print only 'invalid value')."""

    def convert(text: str) -> _T:
        try:
            return parse(text)
        except InvalidInputError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


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


def cdi_device_name(text: str) -> str:
    """argparse type for a qualified CDI device name (vendor.com/class=name)."""
    if not is_qualified_name(text):
        raise argparse.ArgumentTypeError(
            f"{echo(text)} is not a qualified CDI device name (vendor.com/class=name, "
            "e.g. nvidia.com/pgpu=0)"
        )
    return text


def add_spec_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--spec-dir DIR`` (repeatable): the CDI spec directories, lowest priority first."""
    parser.add_argument(
        "--spec-dir",
        action="append",
        type=directory_or_missing,
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
                f"{option} {echo(value)} is not a directory",
                hint="give the directory that holds the tree (e.g. a copied /sys)",
            )
    if args.sysfs_root is not None and not os.path.isdir(
        os.path.join(args.sysfs_root, "bus", "pci")
    ):
        raise InvalidInputError(
            f"--sysfs-root {echo(args.sysfs_root)} has no bus/pci: it is not a sysfs tree",
            hint="give the directory that holds bus/ and devices/ (a copied /sys, or the "
            "sys/ of a fake host)",
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
