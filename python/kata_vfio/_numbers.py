"""Numbers from outside text, parsed with their digit count checked before ``int()`` sees them.

Python's ``int()`` refuses strings of more than 4,300 digits with a ``ValueError`` (and is
quadratic below that), so a hostile spec file, device name or annotation could otherwise crash
a command or stall it. Everything here decides from the length of a digit run first.
"""

from __future__ import annotations

import re

__all__ = ["decimal_digits", "natural_key"]

_DIGIT_RUN = re.compile(r"([0-9]+)")
_DECIMAL = re.compile(r"[0-9]+\Z")


def natural_key(text: str) -> tuple[tuple[int, int, str, str], ...]:
    """Sort key that orders ASCII digit runs by value (``gpu2`` before ``gpu10``).

    Runs are compared by their significant digit count, then as text: the same order as by
    value, without converting a run of any length to an integer. Equal values written with
    different leading zeros fall back to the text itself.
    """
    # split() with a group alternates text and digit runs: odd positions are the runs.
    return tuple(
        (1, len(part.lstrip("0")), part.lstrip("0"), part) if index % 2 else (0, 0, "", part)
        for index, part in enumerate(_DIGIT_RUN.split(text))
    )


def decimal_digits(text: str, *, max_value: int) -> int | None:
    """The value of ``text`` when it is ASCII decimal digits (leading zeros allowed) worth at
    most ``max_value``; None otherwise (signs, spaces, other digits, or too large)."""
    if not _DECIMAL.match(text):
        return None
    significant = text.lstrip("0")
    if len(significant) > len(str(max_value)):
        return None
    value = int(significant or "0")
    return value if value <= max_value else None
