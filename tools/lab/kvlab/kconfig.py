"""Kernel .config files: parse them and check that a fragment really landed.

``make olddefconfig`` silently drops an option whose dependencies are not met; the lab must
notice, or it boots a kernel without iommufd and the tests fail far from the cause.
"""

from __future__ import annotations

import re
from pathlib import Path

from kvlab.errors import LabError

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def parse(text: str, *, source: str) -> dict[str, str]:
    """Map each option to its value ("y", "m", a quoted string, a number, or "n" when unset)."""
    options: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if match := _SET.match(line):
            options[match.group(1)] = match.group(2)
        elif match := _UNSET.match(line):
            options[match.group(1)] = "n"
        elif not line.startswith("#"):
            raise LabError(
                f"{source}:{number}: not a kernel config line: {line!r}",
                hint="use CONFIG_NAME=value or '# CONFIG_NAME is not set'",
            )
    return options


def missing(wanted: dict[str, str], got: dict[str, str]) -> list[str]:
    """One line per option of ``wanted`` whose value in ``got`` differs, in option order."""
    return [
        f"{name}: wanted {value}, got {got.get(name, 'n')}"
        for name, value in sorted(wanted.items())
        if got.get(name, "n") != value
    ]


def fragment_path() -> Path:
    """The lab kernel's config fragment shipped beside this module."""
    return Path(__file__).with_name("lab-kernel.config")
