"""Qualified CDI device names: ``vendor/class=name``, parsed exactly as the reference does.

The rules are those of the reference Go parser (``pkg/parser``), not the looser prose of
SPEC.md:

* vendor and class: an ASCII letter first, then letters, digits, ``_``, ``-`` or ``.``,
  ending in a letter or digit; a single letter is fine; no length limit;
* device name: an ASCII letter or digit first and last, with letters, digits, ``_``, ``-``,
  ``.`` and ``:`` between (``:`` is how MIG devices are named, ``0:1``, and how PCI addresses
  are spelled, ``0000:65:00.0``);
* the name is split on the *first* ``=`` and the kind on the *first* ``/``, so
  ``a/b/c=d`` has class ``b/c`` (invalid) and ``a/b=c=d`` has name ``c=d`` (invalid);
* nothing is trimmed: a leading space makes a name invalid.
"""

from __future__ import annotations

from dataclasses import dataclass

from kata_vfio.cdi.goquote import go_quote
from kata_vfio.errors import CdiNameError

__all__ = [
    "QualifiedName",
    "is_qualified_name",
    "kind_problem",
    "parse_device",
    "parse_qualified_name",
    "parse_qualifier",
    "qualified_name",
    "validate_class_name",
    "validate_device_name",
    "validate_vendor_name",
]

_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ALNUM = _LETTERS | frozenset("0123456789")
_VENDOR_CLASS_MIDDLE = _ALNUM | frozenset("_-.")
_DEVICE_MIDDLE = _VENDOR_CLASS_MIDDLE | frozenset(":")

_NAME_HINT = (
    "a CDI device is named vendor.com/class=name: vendor and class start with a letter, "
    "the name with a letter or digit; all three end with a letter or digit"
)


@dataclass(frozen=True, slots=True)
class QualifiedName:
    """A fully qualified CDI device name, ``vendor/class=device``."""

    vendor: str
    cls: str
    device: str

    @classmethod
    def parse(cls, name: str) -> QualifiedName:
        """Parses and validates ``name``; raises :class:`CdiNameError` naming the bad part."""
        return parse_qualified_name(name)

    @property
    def kind(self) -> str:
        """``vendor/class``, the ``kind`` of the spec that defines the device."""
        return f"{self.vendor}/{self.cls}"

    def __str__(self) -> str:
        return f"{self.vendor}/{self.cls}={self.device}"


def qualified_name(vendor: str, cls: str, device: str) -> str:
    """Joins the three parts as ``vendor/class=device`` (no validation)."""
    return f"{vendor}/{cls}={device}"


def parse_qualifier(kind: str) -> tuple[str, str]:
    """Splits ``vendor/class`` on the first ``/``; ``("", kind)`` when that is impossible."""
    vendor, sep, cls = kind.partition("/")
    if not sep or not vendor or not cls:
        return "", kind
    return vendor, cls


def parse_device(name: str) -> tuple[str, str, str]:
    """Splits a device name without validating it.

    Returns ``(vendor, class, device)``, or ``("", "", name)`` when ``name`` is empty, starts
    with ``/`` (a plain device path such as ``/dev/null``), or is not of the form
    ``vendor/class=device``.
    """
    if not name or name[0] == "/":
        return "", "", name
    qualifier, sep, device = name.partition("=")
    if not sep or not qualifier or not device:
        return "", "", name
    vendor, cls = parse_qualifier(qualifier)
    if not vendor:
        return "", "", name
    return vendor, cls, device


def parse_qualified_name(name: str) -> QualifiedName:
    """Parses and validates a qualified device name.

    Raises :class:`CdiNameError` whose message names the part that is wrong and the rule it
    broke, with the reference library's wording.
    """
    vendor, cls, device = parse_device(name)
    if not vendor:
        raise CdiNameError(f"unqualified device {go_quote(name)}, missing vendor", hint=_NAME_HINT)
    if not cls:
        raise CdiNameError(f"unqualified device {go_quote(name)}, missing class", hint=_NAME_HINT)
    if not device:
        raise CdiNameError(
            f"unqualified device {go_quote(name)}, missing device name", hint=_NAME_HINT
        )
    for check, part in (
        (vendor_name_problem, vendor),
        (class_name_problem, cls),
        (device_name_problem, device),
    ):
        problem = check(part)
        if problem is not None:
            raise CdiNameError(f"invalid device {go_quote(name)}: {problem}", hint=_NAME_HINT)
    return QualifiedName(vendor, cls, device)


def is_qualified_name(name: str) -> bool:
    """True when ``name`` is a valid ``vendor/class=device``."""
    vendor, cls, device = parse_device(name)
    return bool(
        vendor
        and cls
        and device
        and vendor_name_problem(vendor) is None
        and class_name_problem(cls) is None
        and device_name_problem(device) is None
    )


def validate_vendor_name(vendor: str) -> None:
    """Raises :class:`CdiNameError` unless ``vendor`` is a valid vendor name."""
    _raise_if(vendor_name_problem(vendor))


def validate_class_name(cls: str) -> None:
    """Raises :class:`CdiNameError` unless ``cls`` is a valid class name."""
    _raise_if(class_name_problem(cls))


def kind_problem(kind: str) -> str | None:
    """What is wrong with a kind ``vendor.com/class`` (its vendor or class part), or None."""
    vendor, cls = parse_qualifier(kind)
    return vendor_name_problem(vendor) or class_name_problem(cls)


def validate_device_name(device: str) -> None:
    """Raises :class:`CdiNameError` unless ``device`` is a valid (unqualified) device name."""
    _raise_if(device_name_problem(device))


def vendor_name_problem(vendor: str) -> str | None:
    """What is wrong with a vendor name, or None."""
    problem = _vendor_or_class_problem(vendor)
    return None if problem is None else f"invalid vendor. {problem}"


def class_name_problem(cls: str) -> str | None:
    """What is wrong with a class name, or None."""
    problem = _vendor_or_class_problem(cls)
    return None if problem is None else f"invalid class. {problem}"


def device_name_problem(device: str) -> str | None:
    """What is wrong with an unqualified device name, or None."""
    if not device:
        return "invalid (empty) device name"
    if device[0] not in _ALNUM:
        return f"invalid device name {go_quote(device)}, should start with a letter or digit"
    for char in device[1:-1]:
        if char not in _DEVICE_MIDDLE:
            return f"invalid character '{char}' in device name {go_quote(device)}"
    if device[-1] not in _ALNUM:
        return f"invalid device name {go_quote(device)}, should end with a letter or digit"
    return None


def _vendor_or_class_problem(name: str) -> str | None:
    if not name:
        return "empty name"
    if name[0] not in _LETTERS:
        return f"{go_quote(name)}, should start with letter"
    for char in name[1:-1]:
        if char not in _VENDOR_CLASS_MIDDLE:
            return f"invalid character '{char}' in name {go_quote(name)}"
    if name[-1] not in _ALNUM:
        return f"{go_quote(name)}, should end with a letter or digit"
    return None


def _raise_if(problem: str | None) -> None:
    if problem is not None:
        raise CdiNameError(problem, hint=_NAME_HINT)
