"""Running the host tools the lab needs, with errors that say what was missing."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from kvlab.errors import LabError, LabUnavailableError

# Which Debian package gives each tool, for the "install it" hint.
_PACKAGE_OF = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg": "dpkg",
    "depmod": "kmod",
    "busybox": "busybox-static",
    "make": "make",
    "gcc": "gcc",
    "bc": "bc",
    "flex": "flex",
    "bison": "bison",
    "tar": "tar",
    "xz": "xz-utils",
    "zstd": "zstd",
    "qemu-system-x86_64": "qemu-system-x86",
}


def require_tool(name: str) -> str:
    """The absolute path of ``name`` on PATH, or LabUnavailableError naming its package."""
    found = shutil.which(name)
    if found is None:
        package = _PACKAGE_OF.get(name, name)
        raise LabUnavailableError(
            f"{name} is not installed", hint=f"install the Debian package {package}"
        )
    return found


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    what: str,
    log: Path | None = None,
    nice: int = 0,
) -> str:
    """Run ``argv`` (no shell), return stdout; on failure raise LabError saying ``what`` failed.

    With ``log``, stdout and stderr go to that file instead (long builds), and the error quotes
    its tail.
    """
    tool = require_tool(argv[0])
    full = [tool, *argv[1:]]
    if nice:
        full = [require_tool("nice"), "-n", str(nice), *full]
    if log is not None:
        with log.open("ab") as sink:
            logged = subprocess.run(
                full, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, check=False
            )
        if logged.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise LabError(
                f"{what} failed (exit {logged.returncode}); last lines of {log}:\n"
                + "\n".join(tail)
            )
        return ""
    done = subprocess.run(full, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout
