"""The CDI registry: spec directories, the devices they define, injection, writing specs.

Rules from the reference cache (``pkg/cdi/cache.go``, ``spec-dirs.go``):

* directories are scanned in order (default ``/etc/cdi`` then ``/var/run/cdi``); a file's
  priority is its directory's index, so later directories win;
* only ``*.json`` and ``*.yaml`` files are read (not ``.yml``), in file-name order, without
  recursion; a missing directory is skipped;
* a device defined by a higher-priority file replaces the lower one; two files of the *same*
  directory defining it is a conflict: the device is dropped (even if another directory also
  defines it) and both files get the error, their other devices stay;
* injection resolves every name first, adds each spec's own edits once (before its first
  device) and each device's edits in request order.

Fixed flaws of the reference: a spec file or directory that anyone but root or the caller
could have written (owned by another user, writable by its group or others, or below such a
directory) is refused and reported, since the hooks a spec adds run as root; an unreadable
directory is reported and the other directories are still loaded (the reference silently stops
there); an injection never changes the registry's
specs (they are immutable records) and never half-edits the OCI spec; spec files are written
with mode 0644 (the reference writes 0600, unreadable for rootless consumers).

:meth:`Registry.refresh` is cheap when nothing changed: it lists the directories and compares
each file's identity, size and timestamps with what it parsed before, re-parsing only new and
changed files (and files modified within the last two seconds, whose timestamps cannot be
trusted to change again on the next write).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kata_vfio._atomic import atomic_write, remove_file
from kata_vfio._echo import echo
from kata_vfio._numbers import natural_key
from kata_vfio._trust import untrusted_path, untrusted_reason
from kata_vfio.cdi.encode import dump_spec, format_for_path
from kata_vfio.cdi.goquote import go_quote
from kata_vfio.cdi.hostdev import DeviceLookup
from kata_vfio.cdi.inject import InjectionResult, inject_edits, is_applied
from kata_vfio.cdi.loader import parse_spec, read_spec_fd
from kata_vfio.cdi.model import ContainerEdits, Device, Spec
from kata_vfio.cdi.names import is_qualified_name, parse_qualifier, qualified_name
from kata_vfio.cdi.validate import validate_spec
from kata_vfio.errors import (
    CdiError,
    CdiInjectionError,
    CdiSpecError,
    HostIOError,
    InvalidInputError,
)
from kata_vfio.oci import check_oci_spec

__all__ = [
    "DEFAULT_SPEC_DIRS",
    "DYNAMIC_SPEC_DIR",
    "STATIC_SPEC_DIR",
    "LoadedSpec",
    "RefreshReport",
    "RegisteredDevice",
    "Registry",
    "spec_file_name",
    "spec_file_name_for",
    "transient_spec_file_name",
    "transient_spec_file_name_for",
]

STATIC_SPEC_DIR = "/etc/cdi"
DYNAMIC_SPEC_DIR = "/var/run/cdi"
DEFAULT_SPEC_DIRS: tuple[str, ...] = (STATIC_SPEC_DIR, DYNAMIC_SPEC_DIR)

_SPEC_EXTENSIONS = (".json", ".yaml")
_DEFAULT_EXTENSION = ".yaml"
# Names that look like specs but that the reference ignores; say why instead of staying silent.
_IGNORED_LOOKALIKES = {
    ".yml": "the '.yml' extension is not read by CDI (only .yaml and .json); rename the file",
    ".YAML": "extensions are case-sensitive: only .yaml and .json are read; rename the file",
    ".YML": "only .yaml and .json are read by CDI; rename the file",
    ".JSON": "extensions are case-sensitive: only .yaml and .json are read; rename the file",
}
_RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class LoadedSpec:
    """A valid spec file in the registry: content, path and priority (directory index)."""

    spec: Spec
    path: str
    priority: int

    @property
    def vendor(self) -> str:
        """The spec's vendor."""
        return self.spec.vendor

    @property
    def cls(self) -> str:
        """The spec's class."""
        return self.spec.cls


@dataclass(frozen=True, slots=True)
class RegisteredDevice:
    """A resolvable device: its qualified name, its record and the spec file defining it."""

    name: str
    device: Device
    source: LoadedSpec

    @property
    def path(self) -> str:
        """The spec file that defines the device."""
        return self.source.path

    @property
    def priority(self) -> int:
        """The priority of that spec file (its directory's index)."""
        return self.source.priority

    def to_document(self) -> dict[str, Any]:
        """``{"name", "spec", "priority"}`` as ``kata-vfio cdi list --json`` prints it."""
        return {"name": self.name, "spec": self.path, "priority": self.priority}


@dataclass(frozen=True, slots=True)
class RefreshReport:
    """What a refresh found: spec files added, changed and removed since the previous one,
    how many were unchanged (not re-parsed), every current error, and ignored look-alikes."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: int = 0
    errors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ignored: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no spec file or directory has an error."""
        return not self.errors


@dataclass(frozen=True, slots=True)
class _FileState:
    signature: tuple[int, ...] | None
    read_at_ns: int
    spec: Spec | None
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    devices: Mapping[str, RegisteredDevice]
    specs: tuple[LoadedSpec, ...]
    errors: Mapping[str, tuple[str, ...]]
    dir_errors: Mapping[str, str]
    ignored: Mapping[str, str]


_EMPTY_SNAPSHOT = _Snapshot(
    MappingProxyType({}), (), MappingProxyType({}), MappingProxyType({}), MappingProxyType({})
)


class Registry:
    """CDI spec directories and the devices they define.

    ``spec_dirs`` lists the directories in priority order (later wins); None means
    ``/etc/cdi`` then ``/var/run/cdi``. ``device_lookup`` completes device nodes during
    injection (``lstat`` of the host path by default). The first query loads the directories;
    :meth:`refresh` rescans them. Safe to share between threads.
    """

    def __init__(
        self,
        spec_dirs: Iterable[str | os.PathLike[str]] | None = None,
        *,
        device_lookup: DeviceLookup | None = None,
    ) -> None:
        dirs = DEFAULT_SPEC_DIRS if spec_dirs is None else tuple(spec_dirs)
        self._spec_dirs = tuple(_clean_dir(d) for d in dirs)
        self._lookup = device_lookup
        self._lock = threading.RLock()
        self._files: dict[str, _FileState] = {}
        self._order: tuple[tuple[int, str], ...] = ()
        self._snapshot = _EMPTY_SNAPSHOT
        self._loaded = False

    @property
    def spec_dirs(self) -> tuple[str, ...]:
        """The directories, lowest priority first."""
        return self._spec_dirs

    def refresh(self) -> RefreshReport:
        """Rescans the directories; re-parses only new and changed files."""
        with self._lock:
            return self._refresh()

    def list_devices(self) -> tuple[RegisteredDevice, ...]:
        """Every resolvable device, by qualified name (numbers in names in numeric order)."""
        snapshot = self._current()
        return tuple(snapshot.devices[name] for name in sorted(snapshot.devices, key=natural_key))

    def device_names(self) -> tuple[str, ...]:
        """The qualified names of :meth:`list_devices`."""
        return tuple(device.name for device in self.list_devices())

    def get_device(self, name: str) -> RegisteredDevice | None:
        """The device with this qualified name, or None."""
        return self._current().devices.get(name)

    def list_specs(self, vendor: str | None = None) -> tuple[LoadedSpec, ...]:
        """Every valid spec file (conflicting ones included), in scan order."""
        specs = self._current().specs
        return specs if vendor is None else tuple(s for s in specs if s.vendor == vendor)

    def list_vendors(self) -> tuple[str, ...]:
        """Vendors with at least one valid spec file, sorted."""
        return tuple(sorted({s.vendor for s in self._current().specs}))

    @property
    def errors(self) -> Mapping[str, tuple[str, ...]]:
        """Problems by spec file path (and by directory for unreadable directories)."""
        return dict(self._current().errors)

    @property
    def dir_errors(self) -> Mapping[str, str]:
        """Directories that could not be read, with the reason."""
        return dict(self._current().dir_errors)

    @property
    def ignored(self) -> Mapping[str, str]:
        """Files that look like specs but are not read, with the reason (``x.yml``)."""
        return dict(self._current().ignored)

    def inject(
        self,
        spec: Mapping[str, Any],
        names: Sequence[str],
        *,
        device_lookup: DeviceLookup | None = None,
    ) -> InjectionResult:
        """Injects the named devices into a copy of the OCI spec ``spec``.

        Raises :class:`CdiInjectionError` listing every name no spec defines (``unresolved``)
        or saying which device node could not be completed; :class:`OciSpecError` for a
        malformed OCI spec. ``spec`` is never changed.
        """
        check_oci_spec(spec, require_version=False)
        devices = self._current().devices
        # In request order, repeats kept, as the reference lists them.
        unresolved = tuple(name for name in names if name not in devices)
        if unresolved:
            raise CdiInjectionError(
                f"unresolvable CDI devices {', '.join(unresolved)}",
                unresolved=unresolved,
                hint=self._unresolved_hint(unresolved),
            )
        edits: list[ContainerEdits] = []
        seen: set[tuple[str, int]] = set()
        for name in names:
            found = devices[name]
            key = (found.source.path, found.source.priority)
            if key not in seen:
                seen.add(key)
                edits.append(found.source.spec.container_edits)
            edits.append(found.device.container_edits)
        return inject_edits(spec, edits, devices=tuple(names), lookup=device_lookup or self._lookup)

    def already_injected(
        self,
        spec: Mapping[str, Any],
        names: Sequence[str],
        *,
        device_lookup: DeviceLookup | None = None,
    ) -> tuple[str, ...]:
        """The ``names`` whose every edit is already in ``spec`` (an earlier injection of
        them): injecting them again would repeat entries, so a re-run skips them. A name that
        cannot be injected is not among them (:meth:`inject` then says why)."""
        present = []
        for name in dict.fromkeys(names):
            try:
                result = self.inject(spec, [name], device_lookup=device_lookup)
            except CdiInjectionError:
                continue
            if is_applied(spec, result.added):
                present.append(name)
        return tuple(present)

    def write_spec(
        self,
        spec: Spec,
        name: str | None = None,
        *,
        overwrite: bool = True,
    ) -> str:
        """Validates ``spec`` and writes it atomically (mode 0644) into the highest-priority
        directory, creating it if needed; returns the path.

        ``name`` defaults to ``<vendor>-<class>``; ``.yaml`` is appended unless it ends in
        ``.yaml`` or ``.json`` (which also picks the format).
        """
        path = self._spec_path(name if name is not None else spec_file_name_for(spec))
        validate_spec(spec, source=path)
        atomic_write(
            path,
            dump_spec(spec, format_for_path(path)),
            mode=0o644,
            overwrite=overwrite,
            create_parents=True,
        )
        return path

    def remove_spec(self, name: str) -> bool:
        """Removes a spec file from the highest-priority directory; False if it was absent."""
        return remove_file(self._spec_path(name))

    # Internals.

    def _current(self) -> _Snapshot:
        with self._lock:
            if not self._loaded:
                self._refresh()
            return self._snapshot

    def _spec_path(self, name: str) -> str:
        if not self._spec_dirs:
            raise CdiError("no CDI spec directories to write to", hint="give a spec directory")
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise InvalidInputError(
                f"invalid CDI spec file name {echo(name)}",
                hint="give a plain file name such as vendor.com-class.yaml",
            )
        if _go_ext(name) not in _SPEC_EXTENSIONS:
            name += _DEFAULT_EXTENSION
        return os.path.join(self._spec_dirs[-1], name)

    def _unresolved_hint(self, requested: Sequence[str]) -> str:
        unresolved = tuple(dict.fromkeys(requested))
        malformed = [name for name in unresolved if not is_qualified_name(name)]
        if malformed:
            what = "is not a qualified name" if len(malformed) == 1 else "are not qualified names"
            return f"{', '.join(malformed)} {what} (write vendor.com/class=name)"
        return (
            f"no spec in {', '.join(self._spec_dirs) or 'no directory'} defines "
            f"{'it' if len(unresolved) == 1 else 'them'}; `kata-vfio cdi list` shows the known "
            "devices (the device plugin and the spec must use the same names)"
        )

    def _refresh(self) -> RefreshReport:
        order: list[tuple[int, str]] = []
        files: dict[str, _FileState] = {}
        dir_errors: dict[str, str] = {}
        ignored: dict[str, str] = {}
        added: list[str] = []
        changed: list[str] = []
        unchanged = 0
        for priority, directory in enumerate(self._spec_dirs):
            for name, is_dir in _list_dir(directory, dir_errors):
                path = os.path.join(directory, name)
                ext = _go_ext(name)
                if is_dir:
                    continue
                if ext not in _SPEC_EXTENSIONS:
                    if ext in _IGNORED_LOOKALIKES:
                        ignored[path] = _IGNORED_LOOKALIKES[ext]
                    continue
                order.append((priority, path))
                if path in files:
                    continue
                old = self._files.get(path)
                state = _load_file(path, old)
                files[path] = state
                if old is None:
                    added.append(path)
                elif state is old:
                    unchanged += 1
                elif (state.signature, state.spec, state.errors) != (
                    old.signature,
                    old.spec,
                    old.errors,
                ):
                    changed.append(path)
                else:
                    unchanged += 1
        removed = tuple(path for path in self._files if path not in files)
        same = (
            self._loaded
            and not added
            and not changed
            and not removed
            and tuple(order) == self._order
            and dir_errors == dict(self._snapshot.dir_errors)
        )
        self._files = files
        self._order = tuple(order)
        if not same:
            self._snapshot = _build_snapshot(files, self._order, dir_errors, ignored)
        elif dict(self._snapshot.ignored) != ignored:
            self._snapshot = _Snapshot(
                self._snapshot.devices,
                self._snapshot.specs,
                self._snapshot.errors,
                self._snapshot.dir_errors,
                MappingProxyType(ignored),
            )
        self._loaded = True
        return RefreshReport(
            added=tuple(added),
            changed=tuple(changed),
            removed=removed,
            unchanged=unchanged,
            errors=dict(self._snapshot.errors),
            ignored=dict(self._snapshot.ignored),
        )


def spec_file_name(vendor: str, cls: str) -> str:
    """``<vendor>-<class>``, the file name for a vendor's spec (no extension)."""
    return f"{vendor}-{cls}"


def transient_spec_file_name(vendor: str, cls: str, transient_id: str) -> str:
    """``<vendor>-<class>_<id>`` for a spec tied to one container (``/`` in the id is ``_``)."""
    return f"{spec_file_name(vendor, cls)}_{transient_id.replace('/', '_')}"


def spec_file_name_for(spec: Spec) -> str:
    """:func:`spec_file_name` from the spec's kind; :class:`CdiSpecError` without a ``/``."""
    vendor, cls = parse_qualifier(spec.kind)
    if not vendor:
        raise CdiSpecError(
            f"invalid vendor/class {go_quote(spec.kind)} in Spec", hint="kind is vendor.com/class"
        )
    return spec_file_name(vendor, cls)


def transient_spec_file_name_for(spec: Spec, transient_id: str) -> str:
    """:func:`transient_spec_file_name` from the spec's kind."""
    vendor, cls = parse_qualifier(spec.kind)
    if not vendor:
        raise CdiSpecError(
            f"invalid vendor/class {go_quote(spec.kind)} in Spec", hint="kind is vendor.com/class"
        )
    return transient_spec_file_name(vendor, cls, transient_id)


def _clean_dir(directory: str | os.PathLike[str]) -> str:
    text = os.fspath(directory)
    if not text or "\0" in text:
        raise InvalidInputError(
            f"invalid CDI spec directory {echo(text)}", hint="give a directory path"
        )
    cleaned = os.path.normpath(text)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _go_ext(name: str) -> str:
    """Go's ``filepath.Ext``: from the last dot of the base name (``.yaml`` for ``.yaml``)."""
    dot = name.rfind(".")
    return name[dot:] if dot >= 0 else ""


def _list_dir(directory: str, dir_errors: dict[str, str]) -> list[tuple[str, bool]]:
    """``(name, is_dir)`` sorted by name; like the reference's ``DirEntry.IsDir()``, a
    symlink to a directory is not a directory (reading it then fails and is reported).
    An untrusted directory is reported and lists nothing."""
    problem = _untrusted_directory(directory)
    if problem is not None:
        dir_errors[directory] = problem
        return []
    try:
        with os.scandir(directory) as entries:
            found = [(entry.name, _entry_is_dir(entry)) for entry in entries]
        return sorted(found)
    except FileNotFoundError:
        return []
    except OSError as exc:
        dir_errors[directory] = (
            f"cannot read CDI spec directory {directory}: {exc.strerror or exc}; "
            "its specs are not loaded"
        )
        return []


def _untrusted_directory(directory: str) -> str | None:
    """Why specs in ``directory`` cannot be trusted (others could write or replace them)."""
    try:
        st = os.stat(directory)
    except OSError:
        return None  # missing or unreadable: the listing says so
    reason = untrusted_reason(st)
    where = directory
    if reason is None:
        above = untrusted_path(directory)
        if above is None:
            return None
        where, reason = above
    return (
        f"refusing CDI spec directory {directory}: "
        + ("" if where == directory else f"the directory {where} above it: ")
        + f"{reason}; its specs are not loaded (a spec can make the runtime run hooks as root: "
        f"make {where} owned by root and not writable by its group or others)"
    )


def _untrusted_file(path: str, st: os.stat_result) -> tuple[str, ...] | None:
    reason = untrusted_reason(st)
    if reason is None:
        return None
    return (
        f"refusing CDI spec {path}: {reason} (a spec can make the runtime run hooks as root: "
        f"make it owned by root and not writable by its group or others)",
    )


def _entry_is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _signature(st: os.stat_result) -> tuple[int, ...]:
    return (
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_mode,
        st.st_uid,
    )


def _trusted(state: _FileState) -> bool:
    """A cached parse is trusted when the file was not modified shortly before it was read
    (filesystem timestamps are coarse: a second write in the same tick looks unchanged)."""
    if state.signature is None:
        return False
    newest = max(state.signature[3], state.signature[4])
    return state.read_at_ns - newest > _RACY_WINDOW_NS


def _load_file(path: str, old: _FileState | None) -> _FileState:
    try:
        st = os.stat(path)
    except OSError as exc:
        return _FileState(None, 0, None, (f"cannot read CDI spec {path}: {exc.strerror}",))
    untrusted = _untrusted_file(path, st)
    if untrusted is not None:
        return _FileState(None, 0, None, untrusted)
    if old is not None and old.signature == _signature(st) and _trusted(old):
        return old
    read_at = time.time_ns()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return _FileState(None, 0, None, (f"cannot read CDI spec {path}: {exc.strerror}",))
    try:
        st = os.fstat(fd)
        # Checked again on what was opened: the file may have been replaced since the stat.
        untrusted = _untrusted_file(path, st)
        if untrusted is not None:
            return _FileState(None, 0, None, untrusted)
        signature = _signature(st)
        data = read_spec_fd(fd, path)
    except HostIOError as exc:
        return _FileState(None, 0, None, (str(exc),))
    except OSError as exc:
        return _FileState(None, 0, None, (f"cannot read CDI spec {path}: {exc.strerror}",))
    finally:
        os.close(fd)
    try:
        spec = parse_spec(data, source=path)
        validate_spec(spec, source=path)
    except CdiSpecError as exc:
        return _FileState(signature, read_at, None, exc.problems)
    return _FileState(signature, read_at, spec, ())


def _build_snapshot(
    files: Mapping[str, _FileState],
    order: Sequence[tuple[int, str]],
    dir_errors: Mapping[str, str],
    ignored: Mapping[str, str],
) -> _Snapshot:
    devices: dict[str, RegisteredDevice] = {}
    conflicts: set[str] = set()
    errors: dict[str, list[str]] = {path: list(s.errors) for path, s in files.items() if s.errors}
    specs: list[LoadedSpec] = []
    for priority, path in order:
        state = files[path]
        if state.spec is None:
            continue
        loaded = LoadedSpec(state.spec, path, priority)
        specs.append(loaded)
        vendor, cls = parse_qualifier(state.spec.kind)
        for device in state.spec.devices:
            name = qualified_name(vendor, cls, device.name)
            other = devices.get(name)
            if other is not None and priority <= other.priority:
                if priority == other.priority:
                    message = (
                        f"conflicting device {go_quote(name)} "
                        f"(specs {go_quote(path)}, {go_quote(other.path)})"
                    )
                    errors.setdefault(path, []).append(message)
                    errors.setdefault(other.path, []).append(message)
                    conflicts.add(name)
                continue
            devices[name] = RegisteredDevice(name, device, loaded)
    for name in conflicts:
        devices.pop(name, None)
    all_errors = {path: tuple(messages) for path, messages in errors.items()}
    all_errors.update({directory: (reason,) for directory, reason in dir_errors.items()})
    return _Snapshot(
        MappingProxyType(devices),
        tuple(specs),
        MappingProxyType(dict(sorted(all_errors.items()))),
        MappingProxyType(dict(dir_errors)),
        MappingProxyType(dict(ignored)),
    )
