"""The one strict JSON reader for documents that become plans, specs and QEMU arguments.

Python's ``json`` accepts what JSON does not: ``NaN``, ``Infinity`` and ``-Infinity``, numbers
that overflow a float into ``inf`` (``1e999``), and repeated keys (the last one silently wins).
It also hands integers of any length to ``int()``, which raises a bare ``ValueError`` past
4,300 digits. Here each of these is a :class:`JsonValueError` (a ``ValueError``) that says
what was refused; integers are limited to 64 bits, which is all that Go's decoders (runc,
containerd, Kata) accept.
"""

from __future__ import annotations

import json
import math
from typing import Any

from kata_vfio._echo import echo
from kata_vfio.errors import InvalidInputError

__all__ = ["DuplicateKeyError", "JsonValueError", "no_duplicate_keys", "strict_loads"]

_MAX_INT_DIGITS = 20  # 2**64 has 20 digits


class JsonValueError(InvalidInputError):
    """A JSON document holds something that is not a plain, finite JSON value (a
    ``ValueError``, under ``KataVfioError`` like every error of the package)."""


class DuplicateKeyError(JsonValueError):
    """A JSON object repeats a key (raised by :func:`no_duplicate_keys`)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {echo(key)}")
        self.key = key


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads` that refuses repeated keys (Go's decoder
    would silently keep the last one)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(key)
        result[key] = value
    return result


def strict_loads(data: bytes | str) -> Any:
    """Parses JSON, refusing non-finite numbers, integers beyond 64 bits and repeated keys.

    Raises :class:`JsonValueError` naming where the first refused value is
    (``linux.resources.cpu.quota: NaN is not a JSON number``), ``ValueError``
    (``json.JSONDecodeError``) for bad syntax and ``RecursionError`` for absurd nesting.
    """
    refused: list[_Refused] = []

    def integer(text: str) -> int | _Refused:
        digits = text.lstrip("-").lstrip("0")
        if len(digits) <= _MAX_INT_DIGITS:
            value = int(text)
            if -(1 << 63) <= value < 1 << 64:
                return value
        return refuse(text, "is an integer that does not fit in 64 bits")

    def finite(text: str) -> float | _Refused:
        value = float(text)
        return value if math.isfinite(value) else refuse(text, "is too large for a float")

    def constant(name: str) -> _Refused:
        return refuse(name, "is not a JSON number (only finite numbers are)")

    def refuse(text: str, why: str) -> _Refused:
        found = _Refused(text, why)
        refused.append(found)
        return found

    document = json.loads(
        data,
        object_pairs_hook=no_duplicate_keys,
        parse_int=integer,
        parse_float=finite,
        parse_constant=constant,
    )
    if refused:
        first = refused[0]
        where = _path_to(document, first) or "top level"
        raise JsonValueError(f"{where}: {echo(first.text, limit=40)} {first.why}")
    return document


class _Refused:
    """Stands in the document for a value that was refused, until its place is found."""

    __slots__ = ("text", "why")

    def __init__(self, text: str, why: str) -> None:
        self.text = text
        self.why = why


def _path_to(document: Any, target: _Refused) -> str | None:
    """The JSON path (``a.b[2].c``) of ``target`` in ``document``, depth-first."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        value, path = stack.pop()
        if value is target:
            return path
        if isinstance(value, dict):
            stack.extend(
                (item, f"{path}.{key}" if path else str(key))
                for key, item in reversed(value.items())
            )
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in reversed(list(enumerate(value))))
    return None
