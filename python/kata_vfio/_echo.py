"""How outside input is quoted in messages: its ``repr``, cut short when it is long.

A hostile or broken input can be megabytes long; an error that repeats it whole buries the
message (and the terminal). The head is enough to recognise it, the length says the rest.
"""

from __future__ import annotations

__all__ = ["echo"]

_LIMIT = 72


def echo(value: object, *, limit: int = _LIMIT) -> str:
    """``repr(value)``, or its first ``limit`` characters and the full length when longer."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = repr(value)
    if len(text) > limit:
        return f"{text[:limit]}... ({len(text)} characters)"
    return text
