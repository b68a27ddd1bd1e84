"""Go's ``%q`` quoting, for messages that keep the reference library's wording.

Callers and tools that match the reference's error texts (``invalid version "1.2.0"``,
``unqualified device "x", missing vendor``) see the same text from this implementation.
"""

from __future__ import annotations

__all__ = ["go_quote"]

_ESCAPES = {
    "\a": r"\a",
    "\b": r"\b",
    "\f": r"\f",
    "\n": r"\n",
    "\r": r"\r",
    "\t": r"\t",
    "\v": r"\v",
    "\\": r"\\",
    '"': r"\"",
}


def go_quote(text: str) -> str:
    """``text`` as Go's ``strconv.Quote`` writes it: double quotes, printable characters kept,
    the others escaped (``\\n``, ``\\x01``, ``\\u200b``)."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    out = ['"']
    for char in text:
        escape = _ESCAPES.get(char)
        if escape is not None:
            out.append(escape)
        elif char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            if code < 0x80:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)
