"""QEMU command lines as data: options with validated keys and ids, values escaped for
QEMU's option syntax, rendered to an argv list (never a shell string).

In ``-device driver,key=value,...`` (QemuOpts / keyval syntax) a comma inside a value is
written twice; that is the only escape QEMU knows. Keys and ids are checked against QEMU's
own rules (an id starts with a letter and holds letters, digits, ``-``, ``.`` and ``_``), and
no value may carry control characters, so nothing a caller passes can add an option.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from kata_vfio._echo import echo
from kata_vfio.errors import InvalidInputError

__all__ = [
    "QemuCommand",
    "QemuOpts",
    "Value",
    "escape_value",
    "format_size",
    "validate_id",
]

_ID = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}\Z")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_FLAG = re.compile(r"-[A-Za-z][A-Za-z0-9_-]*\Z")


def validate_id(value: str, what: str = "QEMU id") -> str:
    """Returns ``value`` if QEMU accepts it as a device/object id, else raises."""
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidInputError(
            f"{what} {echo(value)} is not a valid QEMU id",
            hint="an id starts with a letter and holds only letters, digits, '-', '.' and '_'",
        )
    return value


def escape_value(value: str) -> str:
    """Escapes one option value for QEMU's ``key=value,...`` syntax (commas doubled)."""
    _check_printable(value)
    return value.replace(",", ",,")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_printable(value: str) -> None:
    if not isinstance(value, str):
        raise InvalidInputError(f"QEMU option value {echo(value)} is not a string")
    if _CONTROL.search(value):
        raise InvalidInputError(
            f"QEMU option value {echo(value)} contains a control character",
            hint="remove newlines, tabs and other control characters",
        )


def format_size(size: int) -> str:
    """A byte count in QEMU's size syntax, exact (``64G``, ``512M``, ``4096``)."""
    if size < 0:
        raise InvalidInputError(f"size {size} is negative")
    for suffix, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size and size % (1 << shift) == 0:
            return f"{size >> shift}{suffix}"
    return str(size)


@dataclass(frozen=True)
class QemuOpts:
    """One ``head,key=value,...`` option value (``-device``, ``-object``, ``-machine``, ...).

    ``head`` is the implied first value (a driver, a QOM type, a machine type), None for
    options without one (``-blockdev``, ``-fw_cfg``); ``props`` keep their order. Build with
    :meth:`of`, which validates every key and the ``id``.
    """

    head: str | None
    props: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, head: str | None, *props: tuple[str, object | None]) -> QemuOpts:
        """Validated options; props whose value is None are left out, bools become on/off,
        ints are written in decimal."""
        if head is not None and not _KEY.match(head):
            raise InvalidInputError(f"QEMU driver or type {echo(head)} is not valid")
        rendered: list[tuple[str, str]] = []
        seen: set[str] = set()
        for key, value in props:
            if value is None:
                continue
            if not _KEY.match(key):
                raise InvalidInputError(f"QEMU property name {echo(key)} is not valid")
            if key in seen:
                raise InvalidInputError(
                    f"QEMU property {echo(key)} given twice for {head or 'option'}"
                )
            seen.add(key)
            text = _render_value(value)
            if key == "id":
                validate_id(text)
            _check_printable(text)
            rendered.append((key, text))
        return cls(head, tuple(rendered))

    def get(self, key: str) -> str | None:
        """The value of ``key``, or None."""
        for name, value in self.props:
            if name == key:
                return value
        return None

    @property
    def id(self) -> str | None:
        """The ``id`` property, if any."""
        return self.get("id")

    def with_props(self, *props: tuple[str, object | None]) -> QemuOpts:
        """A copy with props set (replaced in place, appended when new, removed for None)."""
        current = dict(self.props)
        order = [key for key, _ in self.props]
        for key, value in props:
            if value is None:
                current.pop(key, None)
                if key in order:
                    order.remove(key)
                continue
            if key not in current:
                order.append(key)
            current[key] = _render_value(value)
        return QemuOpts.of(self.head, *((key, current[key]) for key in order))

    def with_head(self, head: str) -> QemuOpts:
        """A copy with another driver/type and the same props."""
        return QemuOpts.of(head, *self.props)

    def render(self) -> str:
        """The option value as QEMU parses it."""
        parts = [] if self.head is None else [self.head]
        parts.extend(f"{key}={escape_value(value)}" for key, value in self.props)
        return ",".join(parts)


def _render_value(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise InvalidInputError(f"QEMU property value {echo(value)} has unsupported type")


Value = str | QemuOpts | None


@dataclass(frozen=True)
class QemuCommand:
    """A QEMU invocation: the binary and its options in order.

    Each option is ``(flag, value)``; a :class:`QemuOpts` value is rendered with escaping, a
    plain string is passed as one argv element (QEMU takes it verbatim: ``-kernel``,
    ``-append``, ``-m``), None means a flag without value.
    """

    binary: str
    options: tuple[tuple[str, Value], ...] = ()

    def __post_init__(self) -> None:
        if not self.binary.startswith("/") and "/" in self.binary:
            raise InvalidInputError(
                f"QEMU binary {echo(self.binary)} must be an absolute path or a bare name"
            )
        _check_printable(self.binary)
        for flag, value in self.options:
            if not _FLAG.match(flag):
                raise InvalidInputError(f"QEMU flag {echo(flag)} is not valid")
            if isinstance(value, str):
                _check_printable(value)

    def add(self, flag: str, value: Value = None) -> QemuCommand:
        """A copy with one more option at the end."""
        return replace(self, options=(*self.options, (flag, value)))

    def extend(self, options: Iterable[tuple[str, Value]]) -> QemuCommand:
        """A copy with more options at the end."""
        return replace(self, options=(*self.options, *options))

    def argv(self) -> list[str]:
        """The argument vector to exec (first element the binary)."""
        argv = [self.binary]
        for flag, value in self.options:
            argv.append(flag)
            if isinstance(value, QemuOpts):
                argv.append(value.render())
            elif value is not None:
                argv.append(value)
        return argv

    def opts(self, flag: str) -> tuple[QemuOpts, ...]:
        """The structured values of every ``flag`` option (e.g. all ``-device``)."""
        return tuple(v for f, v in self.options if f == flag and isinstance(v, QemuOpts))

    def values(self, flag: str) -> tuple[Value, ...]:
        """The values of every ``flag`` option, in order."""
        return tuple(v for f, v in self.options if f == flag)

    def map_opts(self, flag: str, change: Callable[[QemuOpts], QemuOpts | None]) -> QemuCommand:
        """A copy where each structured ``flag`` value is replaced by ``change(value)``
        (None drops the option). Used to swap a vfio-pci for an emulated device in tests."""
        options: list[tuple[str, Value]] = []
        for f, value in self.options:
            if f == flag and isinstance(value, QemuOpts):
                new = change(value)
                if new is None:
                    continue
                options.append((f, new))
            else:
                options.append((f, value))
        return replace(self, options=tuple(options))

    def without(self, flags: Sequence[str]) -> QemuCommand:
        """A copy without any option whose flag is in ``flags``."""
        return replace(self, options=tuple((f, v) for f, v in self.options if f not in flags))
