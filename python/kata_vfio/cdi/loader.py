"""Reading CDI spec files strictly: bytes to a :class:`Spec`, every error naming file and field.

Like the reference, the content is read as YAML whatever the file's extension (JSON is YAML),
unknown keys are errors, duplicate keys are errors, an empty document is an error, and YAML
numbers or booleans given where a string belongs become that string (``name: 0`` is ``"0"``).
Where this loader is stricter than the reference, on purpose:

* keys must match exactly (Go's decoder would also take ``CdiVersion`` for ``cdiVersion``);
* a file holds one document (the reference silently ignores any after the first);
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
    spec.validate(source=text_path)
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
        except _DuplicateKey as dup:
            raise CdiSpecError(
                f"failed to parse CDI Spec {source}: duplicate key {dup.key!r}",
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
            hint="fix the syntax at the line shown; a spec file holds exactly one document",
        ) from None
    except RecursionError:
        raise CdiSpecError(
            f"failed to parse CDI Spec {source}: the document nests too deeply", hint=_HINT
        ) from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


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
        object_pairs_hook=_json_pairs,
        parse_int=_json_int,
        parse_float=_json_float,
        parse_constant=_json_constant,
    )


class _Decoder:
    """Converts the generic document into records, checking types field by field."""

    def __init__(self, budget: int) -> None:
        self._budget = budget

    def spec(self, doc: Any) -> Spec:
        fields = self._object(
            doc, "", ("cdiVersion", "kind", "annotations", "devices", "containerEdits")
        )
        return Spec(
            version=self._string(fields.get("cdiVersion"), "cdiVersion"),
            kind=self._string(fields.get("kind"), "kind"),
            devices=self._objects(fields.get("devices"), "devices", self.device),
            container_edits=self.edits(fields.get("containerEdits"), "containerEdits"),
            annotations=self._string_map(fields.get("annotations"), "annotations"),
        )

    def device(self, doc: Any, where: str) -> Device:
        fields = self._object(doc, where, ("name", "annotations", "containerEdits"))
        return Device(
            name=self._string(fields.get("name"), f"{where}.name"),
            container_edits=self.edits(fields.get("containerEdits"), f"{where}.containerEdits"),
            annotations=self._string_map(fields.get("annotations"), f"{where}.annotations"),
        )

    def edits(self, doc: Any, where: str) -> ContainerEdits:
        if doc is None:
            return ContainerEdits()
        fields = self._object(
            doc,
            where,
            (
                "env",
                "deviceNodes",
                "netDevices",
                "hooks",
                "mounts",
                "intelRdt",
                "additionalGids",
            ),
        )
        rdt = fields.get("intelRdt")
        return ContainerEdits(
            env=self._strings(fields.get("env"), f"{where}.env"),
            device_nodes=self._objects(
                fields.get("deviceNodes"), f"{where}.deviceNodes", self.device_node
            ),
            net_devices=self._objects(
                fields.get("netDevices"), f"{where}.netDevices", self.net_device
            ),
            hooks=self._objects(fields.get("hooks"), f"{where}.hooks", self.hook),
            mounts=self._objects(fields.get("mounts"), f"{where}.mounts", self.mount),
            intel_rdt=None if rdt is None else self.intel_rdt(rdt, f"{where}.intelRdt"),
            additional_gids=tuple(
                self._integer(gid, f"{where}.additionalGids[{i}]", _UINT32, "uint32")
                for i, gid in enumerate(
                    self._list(fields.get("additionalGids"), f"{where}.additionalGids")
                )
            ),
        )

    def device_node(self, doc: Any, where: str) -> DeviceNode:
        fields = self._object(
            doc,
            where,
            ("path", "hostPath", "type", "major", "minor", "fileMode", "permissions", "uid", "gid"),
        )
        return DeviceNode(
            path=self._string(fields.get("path"), f"{where}.path"),
            host_path=self._string(fields.get("hostPath"), f"{where}.hostPath"),
            type=self._string(fields.get("type"), f"{where}.type"),
            major=self._integer(fields.get("major"), f"{where}.major", _INT64, "int64"),
            minor=self._integer(fields.get("minor"), f"{where}.minor", _INT64, "int64"),
            file_mode=self._optional_integer(
                fields.get("fileMode"), f"{where}.fileMode", _UINT32, "uint32"
            ),
            permissions=self._string(fields.get("permissions"), f"{where}.permissions"),
            uid=self._optional_integer(fields.get("uid"), f"{where}.uid", _UINT32, "uint32"),
            gid=self._optional_integer(fields.get("gid"), f"{where}.gid", _UINT32, "uint32"),
        )

    def mount(self, doc: Any, where: str) -> Mount:
        fields = self._object(doc, where, ("hostPath", "containerPath", "options", "type"))
        return Mount(
            host_path=self._string(fields.get("hostPath"), f"{where}.hostPath"),
            container_path=self._string(fields.get("containerPath"), f"{where}.containerPath"),
            options=self._strings(fields.get("options"), f"{where}.options"),
            type=self._string(fields.get("type"), f"{where}.type"),
        )

    def hook(self, doc: Any, where: str) -> Hook:
        fields = self._object(doc, where, ("hookName", "path", "args", "env", "timeout"))
        return Hook(
            hook_name=self._string(fields.get("hookName"), f"{where}.hookName"),
            path=self._string(fields.get("path"), f"{where}.path"),
            args=self._strings(fields.get("args"), f"{where}.args"),
            env=self._strings(fields.get("env"), f"{where}.env"),
            timeout=self._optional_integer(
                fields.get("timeout"), f"{where}.timeout", _INT64, "int"
            ),
        )

    def intel_rdt(self, doc: Any, where: str) -> IntelRdt:
        fields = self._object(
            doc,
            where,
            ("closID", "l3CacheSchema", "memBwSchema", "schemata", "enableMonitoring"),
        )
        schemata = fields.get("schemata")
        return IntelRdt(
            clos_id=self._string(fields.get("closID"), f"{where}.closID"),
            l3_cache_schema=self._string(fields.get("l3CacheSchema"), f"{where}.l3CacheSchema"),
            mem_bw_schema=self._string(fields.get("memBwSchema"), f"{where}.memBwSchema"),
            schemata=None if schemata is None else self._strings(schemata, f"{where}.schemata"),
            enable_monitoring=self._boolean(
                fields.get("enableMonitoring"), f"{where}.enableMonitoring"
            ),
        )

    def net_device(self, doc: Any, where: str) -> NetDevice:
        fields = self._object(doc, where, ("hostInterfaceName", "name"))
        return NetDevice(
            host_interface_name=self._string(
                fields.get("hostInterfaceName"), f"{where}.hostInterfaceName"
            ),
            name=self._string(fields.get("name"), f"{where}.name"),
        )

    # Generic field readers.

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
        fields: dict[str, Any] = {}
        for key, value in doc.items():
            name = _key_name(key, where)
            if name not in known:
                hint = _DROPPED_FIELDS.get(name, f"known fields here: {', '.join(known)}")
                raise _Problem(where, f"unknown field {name!r}", hint)
            fields[name] = value
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

    def _strings(self, doc: Any, where: str) -> tuple[str, ...]:
        return tuple(
            self._string(item, f"{where}[{index}]")
            for index, item in enumerate(self._list(doc, where))
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
            result[name] = self._string(value, f"{where}[{name!r}]")
        return frozen_mapping(result)

    @staticmethod
    def _string(doc: Any, where: str) -> str:
        if isinstance(doc, str):
            text = doc
        elif doc is None:
            return ""
        else:
            converted = go_scalar_string(doc)
            if converted is None:
                raise _Problem(where, f"expected a string, got {_describe(doc)}")
            text = converted
        if "\0" in text:
            raise _Problem(where, "a NUL character is not allowed")
        return text

    @staticmethod
    def _integer(doc: Any, where: str, bounds: tuple[int, int], type_name: str) -> int:
        return 0 if doc is None else _checked_integer(doc, where, bounds, type_name)

    @staticmethod
    def _optional_integer(
        doc: Any, where: str, bounds: tuple[int, int], type_name: str
    ) -> int | None:
        return None if doc is None else _checked_integer(doc, where, bounds, type_name)

    @staticmethod
    def _boolean(doc: Any, where: str) -> bool:
        if doc is None:
            return False
        if not isinstance(doc, bool):
            raise _Problem(where, f"expected true or false, got {_describe(doc)}")
        return doc


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
        raise _Problem(where, f"expected an integer ({type_name}), got {doc!r}")
    value = int(doc)
    low, high = bounds
    if not low <= value <= high:
        raise _Problem(where, f"{value} is out of range for {type_name} ({low}..{high})")
    return value


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a YAML {type(value).__name__}"
