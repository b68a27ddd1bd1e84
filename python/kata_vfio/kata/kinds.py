"""Which guest CDI kind a PCI function is, from its vendor and class code.

Inside the guest, vendor tooling (``nvidia-ctk cdi generate`` and friends) writes a CDI spec
whose device names are indices in PCI order; the runtime points containers at those devices
with ``cdi.k8s.io/vfio<N>: <kind>=<index>``. Functions without a kind (audio companions,
NVSwitches, NVMe) get no inner annotation.

The table is Kata runtime-rs's; a site whose guests carry a CDI spec for another kind of
device adds its own rules (:func:`parse_kind_rule`, ``kata-vfio sandbox plan --guest-kind``),
which come before the built-in ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kata_vfio._echo import echo
from kata_vfio.cdi.names import kind_problem
from kata_vfio.errors import InvalidInputError

__all__ = ["KIND_RULES", "KindRule", "cdi_kind", "kind_lookup", "parse_kind_rule"]

# PCI base classes and subclasses (PCI Code and ID Assignment Specification).
_DISPLAY = 0x03  # 0x0300 VGA, 0x0302 3D controller, 0x0380 other display
_NETWORK = 0x02  # 0x0200 Ethernet, 0x0207 InfiniBand
_ACCELERATOR = 0x12  # 0x1200 processing accelerator (AMD Instinct MI300 and later)


@dataclass(frozen=True)
class KindRule:
    """Functions of ``vendor`` whose class base (and subclass, when given) match."""

    vendor: int
    base_class: int
    subclasses: frozenset[int] | None
    kind: str

    def matches(self, vendor: int, class_code: int) -> bool:
        """Whether a function with these IDs is of this kind."""
        base = (class_code >> 16) & 0xFF
        sub = (class_code >> 8) & 0xFF
        return (
            vendor == self.vendor
            and base == self.base_class
            and (self.subclasses is None or sub in self.subclasses)
        )


KIND_RULES: tuple[KindRule, ...] = (
    KindRule(0x10DE, _DISPLAY, None, "nvidia.com/gpu"),
    KindRule(0x1002, _DISPLAY, None, "amd.com/gpu"),
    KindRule(0x1002, _ACCELERATOR, frozenset({0x00}), "amd.com/gpu"),
    KindRule(0x8086, _DISPLAY, None, "intel.com/gpu"),
    # Mellanox (now NVIDIA networking) ConnectX / BlueField: Ethernet and InfiniBand.
    KindRule(0x15B3, _NETWORK, frozenset({0x00, 0x07}), "nvidia.com/nic"),
)


def cdi_kind(vendor: int, class_code: int) -> str | None:
    """The guest CDI kind of a function, or None when it has none."""
    for rule in KIND_RULES:
        if rule.matches(vendor, class_code):
            return rule.kind
    return None


_RULE = re.compile(r"([0-9a-fA-F]{4}):([0-9a-fA-F]{2})([0-9a-fA-F]{2})?=(.+)\Z")
_RULE_HINT = (
    "write VENDOR:CLASS=KIND with the vendor id and the class (base, or base and subclass) in "
    "hex, e.g. 8086:0200=example.com/nic"
)


def parse_kind_rule(text: str) -> KindRule:
    """A rule from ``VVVV:BB=kind`` or ``VVVV:BBSS=kind`` (vendor id, PCI base class and
    optional subclass in hex; ``kind`` a CDI kind ``vendor.com/class``)."""
    match = _RULE.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInputError(f"invalid guest kind rule {echo(text)}", hint=_RULE_HINT)
    vendor, base, sub, kind = match.groups()
    problem = kind_problem(kind)
    if problem is not None:
        raise InvalidInputError(f"invalid guest kind rule {echo(text)}: {problem}", hint=_RULE_HINT)
    return KindRule(
        vendor=int(vendor, 16),
        base_class=int(base, 16),
        subclasses=None if sub is None else frozenset({int(sub, 16)}),
        kind=kind,
    )


def kind_lookup(extra: Sequence[KindRule] = ()) -> Callable[[int, int], str | None]:
    """``kind_of(vendor, class_code)`` trying ``extra`` first, then :data:`KIND_RULES`."""
    rules = (*extra, *KIND_RULES)

    def kind_of(vendor: int, class_code: int) -> str | None:
        for rule in rules:
            if rule.matches(vendor, class_code):
                return rule.kind
        return None

    return kind_of
