"""Reading CDI spec files strictly: bytes to a :class:`Spec`, every error naming file and field.

Like the reference, the content is read as YAML whatever the file's extension (JSON is YAML),
unknown keys are errors (a key differing from a field only in letter case is that field, as
Go's JSON decoder has it: ``CdiVersion`` is ``cdiVersion``), duplicate keys are errors, an
empty document is an error, only the first document of a file is read (a trailing ``---`` or a
second document is ignored, as go-yaml does), and YAML numbers or booleans given where a string
belongs become that string (``name: 0`` is ``"0"``).

Where this loader is stricter than the reference, on purpose:

* ``null`` inside a list of objects is refused (the reference crashes on it);
* NUL characters are refused in every string (no path can contain one);
* a document that expands far beyond its size through YAML aliases is refused.

Documents that start with ``{`` are tried with the JSON parser first, which reads them
identically and many times faster; anything it does not accept goes through YAML.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

import yaml

from kata_vfio._atomic import read_regular_fd, read_regular_file
from kata_vfio._echo import echo
from kata_vfio._json import DuplicateKeyError, no_duplicate_keys
from kata_vfio.cdi.model import (
    ContainerEdits,
    Device,
    DeviceNode,
    Hook,
    IntelRdt,
    Mount,
    NetDevice,
    Spec,
    frozen_mapping,
)
from kata_vfio.cdi.validate import validate_spec
from kata_vfio.cdi.yamlgo import go_parse_int, go_scalar_string, load_yaml
from kata_vfio.errors import CdiSpecError

__all__ = ["MAX_SPEC_BYTES", "load_spec", "parse_spec", "read_spec_bytes"]

MAX_SPEC_BYTES = 64 * 1024 * 1024
"""Spec files larger than this are refused rather than read into memory."""

_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT32 = (0, (1 << 32) - 1)
_T = TypeVar("_T")

_HINT = "fix the field named in the message; see the CDI spec (SPEC.md) for its format"
_DROPPED_FIELDS = {
    "enableCMT": "intelRdt.enableCMT was dropped in CDI 1.1.0; remove it",
    "enableMBM": "intelRdt.enableMBM was dropped in CDI 1.1.0; remove it",
}


class _Problem(Exception):
    """A conversion problem at a field; turned into CdiSpecError with the source."""

    def __init__(self, where: str, message: str, hint: str = _HINT) -> None:
        super().__init__(message)
        self.where = where
        self.message = message
        self.hint = hint


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Reads, parses and validates the spec file at ``path``.

    Raises :class:`CdiSpecError` for bad content and :class:`HostIOError` when the file
    cannot be read.
    """
    text_path = os.fspath(path)
    spec = parse_spec(read_spec_bytes(text_path), source=text_path)
    validate_spec(spec, source=text_path)
    return spec


def read_spec_bytes(path: str) -> bytes:
    """The content of a regular file no larger than :data:`MAX_SPEC_BYTES`."""
    return read_regular_file(path, limit=MAX_SPEC_BYTES, what="CDI spec")


def read_spec_fd(fd: int, path: str) -> bytes:
    """Reads an open spec file after checking it is a regular file of sane size."""
    return read_regular_fd(fd, path, limit=MAX_SPEC_BYTES, what="CDI spec")


def parse_spec(data: bytes | str, *, source: str = "<spec>") -> Spec:
    """Parses spec content into a :class:`Spec` without validating names or versions.

    Raises :class:`CdiSpecError` naming ``source`` and the field for syntax errors, unknown or
    duplicate keys, wrong types and empty documents.
    """
    raw = data.encode() if isinstance(data, str) else data
    document = _decode(raw, source)
    if document is None:
        raise CdiSpecError(
            f"failed to parse CDI Spec {source}, no Spec data",
            hint="the file is empty; write a spec or remove the file",
        )
    decoder = _Decoder(budget=16 * len(raw) + 4096)
    try:
        return decoder.spec(document)
    except _Problem as problem:
        where = f"{problem.where}: " if problem.where else "top level: "
        raise CdiSpecError(
            f"failed to parse CDI Spec {source}: {where}{problem.message}", hint=problem.hint
        ) from None
    except RecursionError:
        raise CdiSpecError(
            f"failed to parse CDI Spec {source}: the document nests too deeply "
            "(a recursive YAML alias?)",
            hint=_HINT,
        ) from None


def _decode(raw: bytes, source: str) -> Any:
    if raw.lstrip()[:1] == b"{":
        try:
            return _load_json(raw)
        except DuplicateKeyError as dup:
            raise CdiSpecError(
                f"failed to parse CDI Spec {source}: duplicate key {echo(dup.key)}",
                hint="each key may appear once in an object",
            ) from None
        except (ValueError, RecursionError):
            pass  # not strict JSON: YAML decides (flow-style YAML also starts with "{")
    try:
        return load_yaml(raw)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).replace('in "<byte string>", ', "").split())
        raise CdiSpecError(
            f"failed to parse CDI Spec {source}: {detail}",
            hint="fix the syntax at the line shown",
        ) from None
    except RecursionError:
        raise CdiSpecError(
            f"failed to parse CDI Spec {source}: the document nests too deeply", hint=_HINT
        ) from None


def _json_int(text: str) -> int | float | str:
    value = go_parse_int(text)
    return value if value is not None else _json_float(text)


def _json_float(text: str) -> float | str:
    # The reference reads JSON as YAML: a number that overflows a float64 stays a string.
    value = float(text)
    return text if math.isinf(value) else value


def _json_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _load_json(raw: bytes) -> Any:
    return json.loads(
        raw,
        object_pairs_hook=no_duplicate_keys,
        parse_int=_json_int,
        parse_float=_json_float,
        parse_constant=_json_constant,
    )


_SPEC_FIELDS = ("cdiVersion", "kind", "annotations", "devices", "containerEdits")
_DEVICE_FIELDS = ("name", "annotations", "containerEdits")
_EDITS_FIELDS = (
    "env",
    "deviceNodes",
    "netDevices",
    "hooks",
    "mounts",
    "intelRdt",
    "additionalGids",
)
_NODE_FIELDS = (
    "path",
    "hostPath",
    "type",
    "major",
    "minor",
    "fileMode",
    "permissions",
    "uid",
    "gid",
)
_MOUNT_FIELDS = ("hostPath", "containerPath", "options", "type")
_HOOK_FIELDS = ("hookName", "path", "args", "env", "timeout")
_RDT_FIELDS = ("closID", "l3CacheSchema", "memBwSchema", "schemata", "enableMonitoring")
_NET_FIELDS = ("hostInterfaceName", "name")
_KNOWN: dict[tuple[str, ...], frozenset[str]] = {
    fields: frozenset(fields)
    for fields in (
        _SPEC_FIELDS,
        _DEVICE_FIELDS,
        _EDITS_FIELDS,
        _NODE_FIELDS,
        _MOUNT_FIELDS,
        _HOOK_FIELDS,
        _RDT_FIELDS,
        _NET_FIELDS,
    )
}


# Go's encoding/json folds ASCII letters to upper case, and the few other letters whose
# lower-then-upper case is ASCII (Kelvin sign, long s, dotless i, dotted capital I).
_NON_ASCII_FOLDS = {"\u212a": "K", "\u017f": "S", "\u0131": "I", "\u0130": "I"}


def _go_fold(name: str) -> str:
    return "".join(c.upper() if c < "\x80" else _NON_ASCII_FOLDS.get(c, c) for c in name)


_FOLDED: dict[tuple[str, ...], dict[str, str]] = {
    fields: {_go_fold(field): field for field in fields} for fields in _KNOWN
}


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


class _Decoder:
    """Converts the generic document into records, checking types field by field.

    Field paths for messages are only built when something is wrong: most specs are fine, and
    building them for every field would cost more than the checks.
    """

    def __init__(self, budget: int) -> None:
        self._budget = budget

    def spec(self, doc: Any) -> Spec:
        fields = self._object(doc, "", _SPEC_FIELDS)
        return Spec(
            version=_string(fields, "cdiVersion", ""),
            kind=_string(fields, "kind", ""),
            devices=self._objects(fields.get("devices"), "devices", self.device),
            container_edits=self.edits(fields.get("containerEdits"), "containerEdits"),
            annotations=self._string_map(fields.get("annotations"), "annotations"),
        )

    def device(self, doc: Any, where: str) -> Device:
        fields = self._object(doc, where, _DEVICE_FIELDS)
        return Device(
            name=_string(fields, "name", where),
            container_edits=self.edits(fields.get("containerEdits"), _at(where, "containerEdits")),
            annotations=self._string_map(fields.get("annotations"), _at(where, "annotations")),
        )

    def edits(self, doc: Any, where: str) -> ContainerEdits:
        if doc is None:
            return ContainerEdits()
        fields = self._object(doc, where, _EDITS_FIELDS)
        rdt = fields.get("intelRdt")
        gids = fields.get("additionalGids")
        return ContainerEdits(
            env=self._strings(fields.get("env"), where, "env"),
            device_nodes=self._objects(
                fields.get("deviceNodes"), _at(where, "deviceNodes"), self.device_node
            ),
            net_devices=self._objects(
                fields.get("netDevices"), _at(where, "netDevices"), self.net_device
            ),
            hooks=self._objects(fields.get("hooks"), _at(where, "hooks"), self.hook),
            mounts=self._objects(fields.get("mounts"), _at(where, "mounts"), self.mount),
            intel_rdt=None if rdt is None else self.intel_rdt(rdt, _at(where, "intelRdt")),
            # Go decodes a null list item into a uint32 as 0 (then skipped at injection).
            additional_gids=tuple(
                0
                if gid is None
                else _checked_integer(
                    gid, f"{_at(where, 'additionalGids')}[{i}]", _UINT32, "uint32"
                )
                for i, gid in enumerate(self._list(gids, _at(where, "additionalGids")))
            ),
        )

    def device_node(self, doc: Any, where: str) -> DeviceNode:
        fields = self._object(doc, where, _NODE_FIELDS)
        return DeviceNode(
            path=_string(fields, "path", where),
            host_path=_string(fields, "hostPath", where),
            type=_string(fields, "type", where),
            major=_integer(fields, "major", where, _INT64, "int64") or 0,
            minor=_integer(fields, "minor", where, _INT64, "int64") or 0,
            file_mode=_integer(fields, "fileMode", where, _UINT32, "uint32"),
            permissions=_string(fields, "permissions", where),
            uid=_integer(fields, "uid", where, _UINT32, "uint32"),
            gid=_integer(fields, "gid", where, _UINT32, "uint32"),
        )

    def mount(self, doc: Any, where: str) -> Mount:
        fields = self._object(doc, where, _MOUNT_FIELDS)
        return Mount(
            host_path=_string(fields, "hostPath", where),
            container_path=_string(fields, "containerPath", where),
            options=self._strings(fields.get("options"), where, "options"),
            type=_string(fields, "type", where),
        )

    def hook(self, doc: Any, where: str) -> Hook:
        fields = self._object(doc, where, _HOOK_FIELDS)
        return Hook(
            hook_name=_string(fields, "hookName", where),
            path=_string(fields, "path", where),
            args=self._strings(fields.get("args"), where, "args"),
            env=self._strings(fields.get("env"), where, "env"),
            timeout=_integer(fields, "timeout", where, _INT64, "int"),
        )

    def intel_rdt(self, doc: Any, where: str) -> IntelRdt:
        fields = self._object(doc, where, _RDT_FIELDS)
        schemata = fields.get("schemata")
        enable = fields.get("enableMonitoring")
        if enable is not None and not isinstance(enable, bool):
            raise _Problem(
                _at(where, "enableMonitoring"), f"expected true or false, got {_describe(enable)}"
            )
        return IntelRdt(
            clos_id=_string(fields, "closID", where),
            l3_cache_schema=_string(fields, "l3CacheSchema", where),
            mem_bw_schema=_string(fields, "memBwSchema", where),
            schemata=None if schemata is None else self._strings(schemata, where, "schemata"),
            enable_monitoring=bool(enable),
        )

    def net_device(self, doc: Any, where: str) -> NetDevice:
        fields = self._object(doc, where, _NET_FIELDS)
        return NetDevice(
            host_interface_name=_string(fields, "hostInterfaceName", where),
            name=_string(fields, "name", where),
        )

    # Containers: objects, lists, string maps.

    def _spend(self, count: int, where: str) -> None:
        self._budget -= count
        if self._budget < 0:
            raise _Problem(
                where,
                "the document expands far beyond its size (YAML aliases repeated?)",
                "write the spec out without aliases",
            )

    def _object(self, doc: Any, where: str, known: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(doc, dict):
            raise _Problem(where, f"expected an object, got {_describe(doc)}")
        self._spend(len(doc) + 1, where)
        if doc.keys() <= _KNOWN[known]:
            return doc  # only known string keys: nothing to convert
        # The reference decodes with Go's encoding/json, from an object whose keys are sorted
        # (byte order): a key matches its field exactly or, failing that, case-insensitively
        # ("Kind" is kind), and of two keys for one field the later one wins.
        named = sorted(
            ((_key_name(key, where), value) for key, value in doc.items()),
            key=lambda item: item[0].encode("utf-8", "surrogatepass"),
        )
        fields: dict[str, Any] = {}
        for name, value in named:
            field = name if name in _KNOWN[known] else _FOLDED[known].get(_go_fold(name))
            if field is None:
                hint = _DROPPED_FIELDS.get(name, f"known fields here: {', '.join(known)}")
                raise _Problem(where, f"unknown field {echo(name)}", hint)
            fields[field] = value
        return fields

    def _list(self, doc: Any, where: str) -> list[Any]:
        if doc is None:
            return []
        if not isinstance(doc, list):
            raise _Problem(where, f"expected a list, got {_describe(doc)}")
        self._spend(len(doc) + 1, where)
        return doc

    def _objects(self, doc: Any, where: str, convert: Callable[[Any, str], _T]) -> tuple[_T, ...]:
        items = []
        for index, item in enumerate(self._list(doc, where)):
            at = f"{where}[{index}]"
            if item is None:
                raise _Problem(at, "expected an object, got null")
            items.append(convert(item, at))
        return tuple(items)

    def _strings(self, doc: Any, where: str, name: str) -> tuple[str, ...]:
        items = self._list(doc, _at(where, name))
        if all(type(item) is str and "\0" not in item for item in items):
            return tuple(items)
        return tuple(
            _as_string(item, f"{_at(where, name)}[{index}]") for index, item in enumerate(items)
        )

    def _string_map(self, doc: Any, where: str) -> Mapping[str, str]:
        if doc is None:
            return frozen_mapping(None)
        if not isinstance(doc, dict):
            raise _Problem(where, f"expected an object of strings, got {_describe(doc)}")
        self._spend(len(doc) + 1, where)
        result: dict[str, str] = {}
        for key, value in doc.items():
            name = _key_name(key, where)
            result[name] = _as_string(value, f"{where}[{echo(name)}]")
        return frozen_mapping(result)


def _string(fields: Mapping[str, Any], name: str, where: str) -> str:
    """A string field; absent or null is ""."""
    value = fields.get(name)
    if type(value) is str and "\0" not in value:
        return value
    return _as_string(value, _at(where, name))


def _as_string(value: Any, where: str) -> str:
    if isinstance(value, str):
        text = value
    elif value is None:
        return ""
    else:
        converted = go_scalar_string(value)
        if converted is None:
            raise _Problem(where, f"expected a string, got {_describe(value)}")
        text = converted
    if "\0" in text:
        raise _Problem(where, "a NUL character is not allowed")
    return text


def _integer(
    fields: Mapping[str, Any], name: str, where: str, bounds: tuple[int, int], type_name: str
) -> int | None:
    """An integer field; absent or null is None (callers turn that into 0 where Go has no
    pointer)."""
    value = fields.get(name)
    if value is None:
        return None
    return _checked_integer(value, _at(where, name), bounds, type_name)


def _key_name(key: Any, where: str) -> str:
    # YAML keys may be numbers or booleans; the reference turns them into strings.
    name = key if isinstance(key, str) else go_scalar_string(key)
    if name is None:
        raise _Problem(where, f"unsupported key {_describe(key)}")
    return name


def _checked_integer(doc: Any, where: str, bounds: tuple[int, int], type_name: str) -> int:
    if isinstance(doc, bool) or not isinstance(doc, int | float):
        raise _Problem(where, f"expected an integer ({type_name}), got {_describe(doc)}")
    # The reference passes YAML numbers through JSON, where 5.0 is written 5.
    if isinstance(doc, float) and not doc.is_integer():
        raise _Problem(where, f"expected an integer ({type_name}), got {echo(doc)}")
    value = int(doc)
    low, high = bounds
    if not low <= value <= high:
        raise _Problem(where, f"{echo(doc)} is out of range for {type_name} ({low}..{high})")
    return value


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {echo(value)}"
    if isinstance(value, int | float):
        return f"number {echo(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a YAML {type(value).__name__}"
