"""OCI runtime spec helpers: load and check a bundle's ``config.json``, read its parts, write it.

The spec stays a plain ``dict`` (the JSON document), so fields this project does not know pass
through untouched. :func:`check_oci_spec` checks the type of every field that CDI injection and
annotation stripping read or write, so an edit never meets a surprise half way and never
leaves a half-edited spec.
"""

# No "from __future__ import annotations": this module defines a function of that name.
import copy
import json
import os
import stat
from collections.abc import Mapping
from typing import Any, NoReturn

from kata_vfio._atomic import atomic_write, read_regular_file
from kata_vfio._echo import echo
from kata_vfio._json import DuplicateKeyError, JsonValueError, no_duplicate_keys, strict_loads
from kata_vfio.errors import HostIOError, OciSpecError

__all__ = [
    "CONFIG_FILE",
    "HOOK_LIFECYCLES",
    "MAX_OCI_SPEC_BYTES",
    "DuplicateKeyError",
    "annotations",
    "bundle_config_path",
    "check_oci_spec",
    "dump_oci_spec",
    "linux_devices",
    "load_bundle",
    "load_oci_spec",
    "no_duplicate_keys",
    "parse_oci_spec",
    "with_annotations",
    "write_oci_spec",
]

CONFIG_FILE = "config.json"
"""The OCI spec's file name inside a bundle directory."""

HOOK_LIFECYCLES: tuple[str, ...] = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)

MAX_OCI_SPEC_BYTES = 64 * 1024 * 1024

_HINT = "fix the field named in the message (see the OCI runtime spec, config.md)"


def bundle_config_path(bundle: str | os.PathLike[str]) -> str:
    """``<bundle>/config.json``."""
    return os.path.join(os.fspath(bundle), CONFIG_FILE)


def load_bundle(bundle: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """The path of a bundle's ``config.json`` and its checked content."""
    path = bundle_config_path(bundle)
    return path, load_oci_spec(path)


def load_oci_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads and checks an OCI runtime spec file.

    Raises :class:`OciSpecError` for malformed content and :class:`HostIOError` when the file
    cannot be read.
    """
    text_path = os.fspath(path)
    return parse_oci_spec(
        read_regular_file(text_path, limit=MAX_OCI_SPEC_BYTES, what="OCI spec"), source=text_path
    )


def parse_oci_spec(data: bytes | str, *, source: str = "<oci spec>") -> dict[str, Any]:
    """Parses OCI spec JSON and checks it with :func:`check_oci_spec`: repeated keys,
    ``NaN``/``Infinity``, numbers that overflow and integers beyond 64 bits are refused (Go's
    decoder in the runtime refuses them too)."""
    try:
        document = strict_loads(data)
    except DuplicateKeyError as exc:
        raise OciSpecError(
            f"OCI spec {source}: duplicate key {echo(exc.key)}", hint="each key may appear once"
        ) from None
    except JsonValueError as exc:
        raise OciSpecError(
            f"OCI spec {source}: {exc}", hint="write plain finite numbers that fit in 64 bits"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise OciSpecError(
            f"OCI spec {source} is not valid JSON: {exc}", hint="the file must be one JSON object"
        ) from None
    check_oci_spec(document, source=source)
    result: dict[str, Any] = document
    return result


def check_oci_spec(spec: object, *, source: str = "OCI spec", require_version: bool = True) -> None:
    """Checks the types of every field that injection and stripping touch.

    ``ociVersion`` must be a string (and present unless ``require_version`` is false: CDI
    injection, like the reference's, edits any spec object, ``{}`` included); ``process``,
    ``linux``, ``mounts``, ``hooks`` and ``annotations`` must have their OCI shapes where
    present. Raises :class:`OciSpecError` naming the field.
    """
    if not isinstance(spec, dict):
        _fail(source, "", f"must be a JSON object, not {_kind(spec)}")
    version = spec.get("ociVersion")
    if not isinstance(version, str) and (require_version or version is not None):
        _fail(source, "ociVersion", "is required and must be a string")
    _check_annotations(spec, source)
    _check_process(spec, source)
    _check_linux(spec, source)
    _check_entries(spec, "mounts", "mounts", source, required="destination")
    hooks = _optional(spec, "hooks", dict, source, "hooks")
    for lifecycle in HOOK_LIFECYCLES:
        _check_entries(hooks or {}, lifecycle, f"hooks.{lifecycle}", source)


def annotations(spec: Mapping[str, Any]) -> dict[str, str]:
    """A copy of the spec's annotations (empty when it has none)."""
    found = spec.get("annotations")
    return dict(found) if isinstance(found, dict) else {}


def with_annotations(spec: Mapping[str, Any], new: Mapping[str, str]) -> dict[str, Any]:
    """A deep copy of ``spec`` whose annotations are ``new`` (removed when empty)."""
    result = copy.deepcopy(dict(spec))
    if new:
        result["annotations"] = dict(new)
    else:
        result.pop("annotations", None)
    return result


def linux_devices(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A copy of ``linux.devices`` (empty when absent)."""
    linux = spec.get("linux")
    devices = linux.get("devices") if isinstance(linux, dict) else None
    return copy.deepcopy(devices) if isinstance(devices, list) else []


def dump_oci_spec(spec: Mapping[str, Any]) -> bytes:
    """The spec as JSON text: two-space indent, key order kept, trailing newline."""
    return (json.dumps(spec, indent=2, ensure_ascii=False) + "\n").encode()


def write_oci_spec(path: str | os.PathLike[str], spec: Mapping[str, Any]) -> None:
    """Replaces the spec file atomically, keeping the existing file's permission bits
    (0600 for a new file) and, when running as root, its owner (a rootless bundle stays its
    user's). The spec is checked first, so a malformed one is never written."""
    text_path = os.fspath(path)
    check_oci_spec(spec, source=text_path)
    mode = 0o600
    owner = None
    try:
        st = os.stat(text_path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise HostIOError(
            f"cannot inspect {text_path}: {exc.strerror}", errno=exc.errno, path=text_path
        ) from exc
    else:
        mode = stat.S_IMODE(st.st_mode)
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            owner = (st.st_uid, st.st_gid)
    atomic_write(text_path, dump_oci_spec(spec), mode=mode, owner=owner)


def _check_annotations(spec: Mapping[str, Any], source: str) -> None:
    found = _optional(spec, "annotations", dict, source, "annotations")
    for key, value in (found or {}).items():
        if not isinstance(value, str):
            _fail(source, f"annotations[{echo(key)}]", "must be a string")


def _check_process(spec: Mapping[str, Any], source: str) -> None:
    process = _optional(spec, "process", dict, source, "process")
    if process is None:
        return
    for index, entry in enumerate(_optional(process, "env", list, source, "process.env") or ()):
        if not isinstance(entry, str):
            _fail(source, f"process.env[{index}]", "must be a string")
    user = _optional(process, "user", dict, source, "process.user")
    if user is None:
        return
    for name in ("uid", "gid"):
        value = user.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            _fail(source, f"process.user.{name}", "must be an integer")
    gids = _optional(user, "additionalGids", list, source, "process.user.additionalGids")
    for index, gid in enumerate(gids or ()):
        if isinstance(gid, bool) or not isinstance(gid, int):
            _fail(source, f"process.user.additionalGids[{index}]", "must be an integer")


def _check_linux(spec: Mapping[str, Any], source: str) -> None:
    linux = _optional(spec, "linux", dict, source, "linux")
    if linux is None:
        return
    _check_entries(linux, "devices", "linux.devices", source, required="path")
    resources = _optional(linux, "resources", dict, source, "linux.resources")
    _optional(resources or {}, "devices", list, source, "linux.resources.devices")
    _optional(linux, "netDevices", dict, source, "linux.netDevices")
    _check_entries(linux, "namespaces", "linux.namespaces", source)


def _check_entries(
    container: Mapping[str, Any], key: str, where: str, source: str, *, required: str = ""
) -> None:
    """A list of objects where present, each with the string field ``required`` if named."""
    for index, entry in enumerate(_optional(container, key, list, source, where) or ()):
        if not isinstance(entry, dict):
            _fail(source, f"{where}[{index}]", "must be an object")
        if required and not isinstance(entry.get(required), str):
            _fail(source, f"{where}[{index}].{required}", "is required and must be a string")


def _optional(container: Mapping[str, Any], key: str, kind: type, source: str, where: str) -> Any:
    value = container.get(key)
    if value is not None and not isinstance(value, kind):
        _fail(
            source,
            where,
            f"must be {'an object' if kind is dict else 'a list'}, not {_kind(value)}",
        )
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _fail(source: str, where: str, problem: str) -> NoReturn:
    field = f" field {where}" if where else ""
    raise OciSpecError(f"OCI spec {source}:{field} {problem}", hint=_HINT)
