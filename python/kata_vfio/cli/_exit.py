"""The exit-code contract of ``kata-vfio``, defined once, and the one handler that keeps it.

=====  ===================================================================================
code   meaning
=====  ===================================================================================
0      ok: done, or the answer is yes
1      a finding: something not ready, a warning-level result, a refused plan, or a system
       call the host refused (the message says which)
2      bad usage or bad input: an unknown option, a malformed or out-of-range value, a path
       that does not exist or is of the wrong kind, a device that is not on this host or
       cannot be named there (a bridge for ``bind``); the message names the input
130    interrupted (Ctrl-C), the shell's convention
=====  ===================================================================================

Never a traceback: an error this package does not know (a bug) is reported in one line as an
internal error, exit 1; ``KATA_VFIO_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable
from typing import TextIO

from kata_vfio._echo import echo
from kata_vfio.errors import DeviceNotFoundError, InvalidInputError, KataVfioError

__all__ = ["ExitCode", "exit_code_for", "guarded", "report"]

_DEBUG_VARIABLE = "KATA_VFIO_DEBUG"


class ExitCode(enum.IntEnum):
    """The exit codes of every ``kata-vfio`` command (see the module docstring)."""

    OK = 0
    FINDING = 1
    USAGE = 2
    INTERRUPTED = 130


def exit_code_for(exc: BaseException) -> ExitCode:
    """The code an error ends the command with: the input's fault (malformed, out of range,
    naming something this host does not have) is usage, everything else a finding."""
    if isinstance(exc, InvalidInputError | DeviceNotFoundError):
        return ExitCode.USAGE
    return ExitCode.FINDING


def report(exc: BaseException, stream: TextIO | None = None) -> ExitCode:
    """Prints an error (and its hint) in the command's words; returns its exit code."""
    out = stream or sys.stderr
    if isinstance(exc, KataVfioError):
        out.write(f"kata-vfio: error: {exc}\n")
        if exc.hint:
            out.write(f"kata-vfio: hint: {exc.hint}\n")
        return exit_code_for(exc)
    if isinstance(exc, OSError):
        # A system call outside the package's own wrappers: say which file and why.
        where = f" {echo(exc.filename)}" if exc.filename is not None else ""
        out.write(f"kata-vfio: error:{where} {exc.strerror or exc}\n")
        return ExitCode.FINDING
    out.write(
        f"kata-vfio: internal error: {type(exc).__name__}: {echo(str(exc), limit=200)} "
        f"(a bug in kata-vfio; {_DEBUG_VARIABLE}=1 shows the traceback)\n"
    )
    return ExitCode.FINDING


def guarded(func: Callable[[], int]) -> int:
    """Runs ``func()`` under the contract: every error becomes its message and code."""
    try:
        return int(func())
    except BrokenPipeError:
        # The reader went away (``| head``): nothing more to say to it.
        return ExitCode.OK
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Exception as exc:
        if os.environ.get(_DEBUG_VARIABLE) and not isinstance(exc, KataVfioError):
            raise
        return report(exc)
