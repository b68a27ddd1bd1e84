"""Sizes, one convention everywhere: bytes, or a number with a binary unit.

``17179869184``, ``16384M``, ``16G`` and ``16GiB`` are the same 16 GiB wherever a size is
asked for (``kata-vfio memlock``, ``doctor --vm-memory``, the library). Units are powers of
1024 whatever their spelling (``K``, ``KB``, ``KiB``; any letter case), a bare number is
bytes, and the digit count is checked before the number is converted.
"""

from __future__ import annotations

import re

from kata_vfio._echo import echo
from kata_vfio._numbers import decimal_digits
from kata_vfio.errors import InvalidInputError

__all__ = ["MAX_SIZE", "SIZE_FORMS", "format_size", "parse_size"]

MAX_SIZE = (1 << 63) - 1
"""The largest size accepted (a signed 64-bit byte count, as the kernel's limits are)."""

SIZE_FORMS = (
    "bytes or a number with a binary unit K, M, G, T or P "
    "(17179869184, 16384M, 16G and 16GiB are the same size)"
)
"""The accepted forms, for hints."""

_SIZE = re.compile(r"\s*([0-9]+)\s*(?:([KMGTP])(?:i?B)?|B)?\s*", re.IGNORECASE | re.ASCII)
_SHIFTS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}


def parse_size(text: str, *, what: str = "memory size", minimum: int = 0) -> int:
    """The size ``text`` names, in bytes (see the module docstring).

    ``what`` names the input in errors (``"--vm-memory"``); sizes below ``minimum`` bytes are
    refused (a VM of 4096 bytes is a unit mistake, not a VM).

    :raises kata_vfio.errors.InvalidInputError: anything else, naming the input and the forms.
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        raise InvalidInputError(f"{what} {echo(text)} is malformed", hint=f"write {SIZE_FORMS}")
    shift = _SHIFTS[(match.group(2) or "").upper()]
    number = decimal_digits(match.group(1), max_value=MAX_SIZE >> shift)
    if number is None:
        raise InvalidInputError(
            f"{what} {echo(text)} is too large (at most {format_size(MAX_SIZE)})",
            hint=f"write {SIZE_FORMS}",
        )
    size = number << shift
    if size < minimum:
        raise InvalidInputError(
            f"{what} {echo(text)} is {format_size(size)}, less than {format_size(minimum)}",
            hint=f"a bare number is bytes; write {SIZE_FORMS}",
        )
    return size


def format_size(size: int | None) -> str:
    """``16 GiB``, ``1.5 MiB``; ``unlimited`` for None."""
    if size is None:
        return "unlimited"
    for shift, unit in (
        (60, "EiB"),
        (50, "PiB"),
        (40, "TiB"),
        (30, "GiB"),
        (20, "MiB"),
        (10, "KiB"),
    ):
        if size >= 1 << shift:
            value = size / (1 << shift)
            text = f"{value:.1f}".removesuffix(".0")
            return f"{text} {unit}"
    return f"{size} B"
