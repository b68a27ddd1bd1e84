"""CDI annotations: the ``cdi.k8s.io/`` keys that request devices, and their removal.

Semantics follow the reference library (``pkg/cdi/annotations.go``):

* a key is ``cdi.k8s.io/`` plus ``<plugin>_<device id>`` (``/`` in the id becomes ``_``), at
  most 63 characters after the prefix, alphanumeric at both ends, ``[A-Za-z0-9_.-]`` between;
* a value is a comma-separated list of qualified device names, with no spaces and no empty
  entries; parsing is all or nothing;
* any key that starts with ``cdi.k8s.io/`` is a request when parsing, whatever follows the
  prefix (Kata's ``cdi.k8s.io/vfio12`` included).

Where Go leaves the order to map iteration, this module is deterministic: keys are visited in
sorted order and each value's names in the order written.

Stripping is the fix this project exists for: once the sandbox's devices are injected, every
``cdi.k8s.io/`` key is removed so container creation cannot inject them a second time. The
runtime then adds *inner* keys for the guest itself, ``cdi.k8s.io/vfio<N>`` (N is the host
group or cdev number); ``keep_inner=True`` keeps keys of that exact shape, so stripping can run
before or after the runtime adds them. An outer key of that same shape cannot be told apart:
name outer requests otherwise (``cdi.k8s.io/vfio`` or ``cdi.k8s.io/<plugin>_<id>``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from kata_vfio._echo import echo
from kata_vfio.cdi.goquote import go_quote
from kata_vfio.cdi.names import is_qualified_name, parse_qualified_name
from kata_vfio.errors import CdiNameError

__all__ = [
    "ANNOTATION_PREFIX",
    "INNER_ANNOTATION_PATTERN",
    "StripResult",
    "annotation_key",
    "annotation_value",
    "is_inner_annotation",
    "parse_annotations",
    "strip_annotations",
    "update_annotations",
]

ANNOTATION_PREFIX = "cdi.k8s.io/"
"""Every key that requests CDI devices starts with this."""

INNER_ANNOTATION_PATTERN = re.compile(r"cdi\.k8s\.io/vfio[0-9]+")
"""The keys the runtime adds for the guest's own CDI injection (``cdi.k8s.io/vfio<N>``)."""

_MAX_NAME_LEN = 63
_KEY_MIDDLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_KEY_HINT = (
    "the plugin name and device id together (joined by '_') must be at most 63 characters, "
    "alphanumeric at both ends, with only letters, digits, '_', '.' and '-' between"
)


@dataclass(frozen=True, slots=True)
class StripResult:
    """Annotations after stripping, and the ``cdi.k8s.io/`` entries that were removed."""

    annotations: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)


def annotation_key(plugin: str, device_id: str) -> str:
    """The annotation key for one allocation by a device plugin (``vendor.device-type``).

    Raises :class:`CdiNameError` when a part is empty or the resulting name breaks the rules.
    """
    if not plugin:
        raise CdiNameError("invalid plugin name, empty", hint="give the device plugin's name")
    if not device_id:
        raise CdiNameError("invalid deviceID, empty", hint="give the allocated device's id")
    name = plugin + "_" + device_id.replace("/", "_")
    if len(name) > _MAX_NAME_LEN:
        raise CdiNameError(f"invalid plugin+deviceID {go_quote(name)}, too long", hint=_KEY_HINT)
    if name[0] not in _ALNUM:
        raise CdiNameError(
            f"invalid name {go_quote(name)}, first '{name[0]}' should be alphanumeric",
            hint=_KEY_HINT,
        )
    for char in name[1:-1]:
        if char not in _KEY_MIDDLE:
            raise CdiNameError(
                f"invalid name {go_quote(name)}, invalid character '{char}'", hint=_KEY_HINT
            )
    if name[-1] not in _ALNUM:
        raise CdiNameError(
            f"invalid name {go_quote(name)}, last '{name[-1]}' should be alphanumeric",
            hint=_KEY_HINT,
        )
    return ANNOTATION_PREFIX + name


def annotation_value(names: Iterable[str]) -> str:
    """Joins qualified device names with ``,`` after checking each (order and repeats kept)."""
    checked = []
    for name in names:
        parse_qualified_name(name)
        checked.append(name)
    return ",".join(checked)


def update_annotations(
    annotations: Mapping[str, str] | None, plugin: str, device_id: str, names: Sequence[str]
) -> dict[str, str]:
    """A copy of ``annotations`` with one more request key for ``names``.

    Refuses a key that is already present. The input is never changed; on error nothing is
    returned and :class:`CdiNameError` says why.
    """
    try:
        key = annotation_key(plugin, device_id)
    except CdiNameError as exc:
        raise CdiNameError(f"CDI annotation failed: {exc}", hint=exc.hint) from exc
    current = dict(annotations or {})
    if key in current:
        raise CdiNameError(
            f"CDI annotation failed, key {go_quote(key)} used",
            hint="use another device id, or remove the existing request first",
        )
    try:
        value = annotation_value(names)
    except CdiNameError as exc:
        raise CdiNameError(f"CDI annotation failed: {exc}", hint=exc.hint) from exc
    current[key] = value
    return current


def parse_annotations(annotations: Mapping[str, str] | None) -> tuple[list[str], list[str]]:
    """The request keys and the device names they ask for, all or nothing.

    Keys that do not start with ``cdi.k8s.io/`` are ignored. Keys come back sorted; devices
    in key order, then in the order each value lists them (repeats kept, as the reference
    does). One malformed name anywhere raises :class:`CdiNameError` naming it and its key.
    """
    keys: list[str] = []
    devices: list[str] = []
    if not annotations:
        return keys, devices
    for key in sorted(k for k in annotations if k.startswith(ANNOTATION_PREFIX)):
        value = annotations[key]
        if not isinstance(value, str):
            raise CdiNameError(
                f"annotation {echo(key)}: value must be a string, got {type(value).__name__}",
                hint="write the devices as one comma-separated string",
            )
        for name in value.split(","):
            if not is_qualified_name(name):
                raise CdiNameError(
                    f"invalid CDI device name {go_quote(name)} in annotation {go_quote(key)}",
                    hint="the value is a comma-separated list of vendor.com/class=name, "
                    "with no spaces and no empty entries",
                )
            devices.append(name)
        keys.append(key)
    return keys, devices


def is_inner_annotation(key: str) -> bool:
    """True for ``cdi.k8s.io/vfio<N>``, the keys the runtime adds for the guest."""
    return INNER_ANNOTATION_PATTERN.fullmatch(key) is not None


def strip_annotations(
    annotations: Mapping[str, str] | None,
    *,
    keep_inner: bool = False,
    keep: Iterable[str] = (),
) -> StripResult:
    """Removes every ``cdi.k8s.io/`` key and keeps all others, in their order.

    ``keep_inner`` keeps the runtime's own ``cdi.k8s.io/vfio<N>`` keys; ``keep`` names further
    keys to keep exactly (for a runtime that knows which keys it added). Idempotent: stripping
    the result again removes nothing. The input is never changed.
    """
    kept_keys = frozenset(keep)
    result: dict[str, str] = {}
    removed: dict[str, str] = {}
    for key, value in (annotations or {}).items():
        if (
            key.startswith(ANNOTATION_PREFIX)
            and key not in kept_keys
            and not (keep_inner and is_inner_annotation(key))
        ):
            removed[key] = value
        else:
            result[key] = value
    return StripResult(result, removed)
