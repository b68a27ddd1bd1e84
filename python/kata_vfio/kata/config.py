"""The Kata configuration keys that matter for VFIO, loaded and validated like Kata does.

Reads ``configuration-*.toml`` (Go runtime or runtime-rs layout: one ``[hypervisor.<name>]``
section and ``[runtime]``), ignores unknown keys as Kata does, applies Kata's rules (the two
plug modes are exclusive, at most 16 ports, allowed values) and the per-pod
``io.katacontainers.config.*`` annotation overrides that ``enable_annotations`` allows. Every
error names the key.

As in Kata, every hypervisor section has the same common keys (:class:`KataConfig`: boot
assets, size, VFIO plug modes, ports, IOMMU); keys only one VMM reads live in that VMM's own
part (:class:`QemuSection` for ``[hypervisor.qemu]``). Another VMM is one more section type.
"""

from __future__ import annotations

import fnmatch
import math
import os
import posixpath
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kata_vfio._echo import echo
from kata_vfio._numbers import decimal_digits
from kata_vfio.errors import ConfigError, InvalidInputError
from kata_vfio.qemu.privileges import parse_seccomp_sandbox
from kata_vfio.qemu.vm import DEFAULT_BINARY

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "DEFAULT_CONFIG_PATHS",
    "HYPERVISORS",
    "HYPERVISOR_ANNOTATION_PREFIX",
    "MAX_PCIE_PORTS",
    "PORT_KINDS",
    "RUNTIME_ANNOTATION_PREFIX",
    "VFIO_MODES",
    "KataConfig",
    "QemuSection",
    "apply_annotations",
    "config_from_toml",
    "load_config",
    "load_default_config",
]

HYPERVISOR_ANNOTATION_PREFIX = "io.katacontainers.config.hypervisor."
RUNTIME_ANNOTATION_PREFIX = "io.katacontainers.config.runtime."

# Kata caps pcie_root_port / pcie_switch_port at 16 (QEMU's q35 has room for more, but the
# guest firmware's bus-number and I/O space budget does not).
MAX_PCIE_PORTS = 16
PORT_KINDS = ("no-port", "bridge-port", "root-port", "switch-port")
VFIO_MODES = ("guest-kernel", "vfio")
# The [hypervisor.<name>] sections Kata knows (Go runtime and runtime-rs).
HYPERVISORS = ("qemu", "clh", "firecracker", "dragonball", "stratovirt", "remote")
# Kata's MinHypervisorMemory, in MiB.
MIN_MEMORY_MIB = 256
# Kata reads default_memory and the port counts as uint32 (TOML and annotations alike).
_MAX_UINT32 = (1 << 32) - 1
_DEFAULT_MEMORY_MIB = 2048


@dataclass(frozen=True)
class QemuSection:
    """The keys of ``[hypervisor.qemu]`` that only QEMU reads; ``seccomp_sandbox`` is
    ``seccompsandbox`` (Go runtime) or ``seccomp_sandbox`` (runtime-rs), QEMU's ``-sandbox``
    value, checked item by item."""

    machine_type: str = "q35"
    cpu_features: str = ""
    seccomp_sandbox: str = ""


@dataclass(frozen=True)
class KataConfig:
    """The VFIO-relevant part of a Kata runtime configuration (Kata's defaults when absent).

    ``hypervisor`` is the name of the configuration's ``[hypervisor.<name>]`` section; the
    other fields are the keys every hypervisor section has, and ``[runtime]``'s. ``qemu``
    holds the QEMU-only keys (None for another hypervisor). ``default_memory`` is in MiB.
    ``enable_annotations`` are the regular expressions that decide which
    ``io.katacontainers.config.hypervisor.<key>`` annotations a pod may set.
    """

    hypervisor: str = "qemu"
    path: str = DEFAULT_BINARY
    kernel: str = ""
    initrd: str = ""
    image: str = ""
    kernel_params: str = ""
    firmware: str = ""
    rootfs_type: str = "ext4"
    default_memory: int = _DEFAULT_MEMORY_MIB
    default_vcpus: int = 1
    cold_plug_vfio: str = "no-port"
    hot_plug_vfio: str = "no-port"
    pcie_root_port: int = 0
    pcie_switch_port: int = 0
    enable_iommu: bool = False
    enable_iommu_platform: bool = False
    enable_numa: bool = False
    confidential_guest: bool = False
    vfio_mode: str = "guest-kernel"
    pod_resource_api_sock: str = ""
    enable_annotations: tuple[str, ...] = ()
    valid_hypervisor_paths: tuple[str, ...] = ()
    qemu: QemuSection | None = field(default_factory=QemuSection)
    source: str | None = field(default=None, compare=False)

    @property
    def plug_port(self) -> str:
        """The port kind devices go to: the cold-plug one, else the hot-plug one."""
        return self.cold_plug_vfio if self.cold_plug_vfio != "no-port" else self.hot_plug_vfio

    @property
    def cold_plug(self) -> bool:
        """Devices known at sandbox creation go on the QEMU command line."""
        return self.cold_plug_vfio != "no-port"

    def validate(self) -> KataConfig:
        """Applies Kata's rules; returns ``self`` or raises :class:`ConfigError`."""
        where = self._where()
        if self.hypervisor not in HYPERVISORS:
            raise ConfigError(
                f"{where}hypervisor {echo(self.hypervisor)} is not one Kata knows",
                hint=f"use a [hypervisor.<name>] section with one of: {', '.join(HYPERVISORS)}",
            )
        if (self.hypervisor == "qemu") != (self.qemu is not None):
            raise ConfigError(
                f"{where}the QEMU settings do not match hypervisor {echo(self.hypervisor)}",
                hint="give QEMU settings exactly when the hypervisor is qemu",
            )
        for key in ("cold_plug_vfio", "hot_plug_vfio"):
            value = getattr(self, key)
            if value not in PORT_KINDS:
                raise ConfigError(
                    f"{where}{key} = {echo(value)} is not a valid port kind",
                    hint=f"use one of: {', '.join(PORT_KINDS)}",
                )
            if value == "bridge-port":
                # Kata accepts it but builds no bridge, so QEMU later fails with
                # "Bus 'bp0' not found"; refuse it up front instead.
                raise ConfigError(
                    f"{where}{key} = 'bridge-port' is not supported: PCI bridges cannot "
                    "place large BARs and Kata never creates the bridge it names",
                    hint="use 'root-port' or 'switch-port' on a q35 machine",
                )
        if self.cold_plug_vfio != "no-port" and self.hot_plug_vfio != "no-port":
            raise ConfigError(
                f"{where}cold_plug_vfio = {echo(self.cold_plug_vfio)} and hot_plug_vfio = "
                f"{echo(self.hot_plug_vfio)} are exclusive",
                hint="set one of them to 'no-port'",
            )
        for key in ("pcie_root_port", "pcie_switch_port"):
            value = getattr(self, key)
            if value < 0 or value > MAX_PCIE_PORTS:
                raise ConfigError(
                    f"{where}{key} = {echo(value)} is out of range (0..{MAX_PCIE_PORTS})",
                    hint=f"at most {MAX_PCIE_PORTS} PCIe ports can be created",
                )
        if self.vfio_mode not in VFIO_MODES:
            raise ConfigError(
                f"{where}vfio_mode = {echo(self.vfio_mode)} is not a valid VFIO mode",
                hint=f"use one of: {', '.join(VFIO_MODES)}",
            )
        if (
            self.qemu is not None
            and self.plug_port != "no-port"
            and self.qemu.machine_type != "q35"
        ):
            raise ConfigError(
                f"{where}machine_type = {echo(self.qemu.machine_type)} has no PCIe ports for "
                f"{self.plug_port}",
                hint="use machine_type = 'q35' for VFIO devices on PCIe ports",
            )
        if self.image and self.initrd:
            raise ConfigError(
                f"{where}image and initrd are both set",
                hint="set either image (a root disk) or initrd, not both",
            )
        if not MIN_MEMORY_MIB <= self.default_memory <= _MAX_UINT32:
            raise ConfigError(
                f"{where}default_memory = {echo(self.default_memory)} MiB is out of range "
                f"({MIN_MEMORY_MIB}..{_MAX_UINT32} MiB)",
                hint=f"set default_memory (MiB) to at least {MIN_MEMORY_MIB}",
            )
        if not 1 <= self.default_vcpus <= _MAX_UINT32:
            raise ConfigError(
                f"{where}default_vcpus = {echo(self.default_vcpus)} is out of range "
                f"(1..{_MAX_UINT32})",
                hint="set default_vcpus to 1 or more",
            )
        for key in ("path", "kernel", "initrd", "image", "firmware"):
            _check_host_path(f"{where}{key}", getattr(self, key), required=key == "path")
        return self

    def _where(self) -> str:
        return f"{self.source}: " if self.source else ""


# Where Kata looks for its configuration, in order (the first that exists is used).
DEFAULT_CONFIG_PATHS = (
    "/etc/kata-containers/configuration.toml",
    "/opt/kata/share/defaults/kata-containers/configuration.toml",
    "/usr/share/defaults/kata-containers/configuration.toml",
)

# Keys read from the file, per section: name -> (TOML section, expected type). "hypervisor" is
# the configuration's [hypervisor.<name>] section, "qemu" keys exist only in [hypervisor.qemu].
_KEYS: dict[str, tuple[str, type]] = {
    "path": ("hypervisor", str),
    "machine_type": ("qemu", str),
    "kernel": ("hypervisor", str),
    "initrd": ("hypervisor", str),
    "image": ("hypervisor", str),
    "kernel_params": ("hypervisor", str),
    "firmware": ("hypervisor", str),
    "rootfs_type": ("hypervisor", str),
    "cpu_features": ("qemu", str),
    "seccompsandbox": ("qemu", str),
    "seccomp_sandbox": ("qemu", str),
    "default_memory": ("hypervisor", int),
    "default_vcpus": ("hypervisor", float),
    "cold_plug_vfio": ("hypervisor", str),
    "hot_plug_vfio": ("hypervisor", str),
    "pcie_root_port": ("hypervisor", int),
    "pcie_switch_port": ("hypervisor", int),
    "enable_iommu": ("hypervisor", bool),
    "enable_iommu_platform": ("hypervisor", bool),
    "enable_numa": ("hypervisor", bool),
    "confidential_guest": ("hypervisor", bool),
    "enable_annotations": ("hypervisor", list),
    "valid_hypervisor_paths": ("hypervisor", list),
    "vfio_mode": ("runtime", str),
    "pod_resource_api_sock": ("runtime", str),
}

# Keys Kata reads as "not set" when their value is an empty string.
_EMPTY_IS_DEFAULT = frozenset(
    {"path", "machine_type", "rootfs_type", "cold_plug_vfio", "hot_plug_vfio", "vfio_mode"}
)


def load_config(path: str | Path, *, host_cpus: int | None = None) -> KataConfig:
    """Loads and validates a Kata ``configuration-*.toml`` file.

    ``host_cpus`` bounds ``default_vcpus`` as Kata does (a value above it, or negative, means
    all host CPUs); it defaults to this machine's CPU count.
    """
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read Kata configuration {source}: {exc.strerror or exc}",
            hint="pass an existing Kata configuration-*.toml with --config",
        ) from exc
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        # TOMLDecodeError is a ValueError; so is int()'s refusal of a 4,301-digit number.
        raise ConfigError(
            f"{source}: not valid TOML: {echo(str(exc), limit=200)}",
            hint="fix the file's TOML syntax (numbers must be of a sane size)",
        ) from exc
    return config_from_toml(document, source=source, host_cpus=host_cpus)


def load_default_config(*, host_cpus: int | None = None) -> KataConfig:
    """Loads the first of :data:`DEFAULT_CONFIG_PATHS` that exists, as Kata does."""
    for candidate in DEFAULT_CONFIG_PATHS:
        if os.path.isfile(candidate):
            return load_config(candidate, host_cpus=host_cpus)
    raise ConfigError(
        "no Kata configuration found in " + ", ".join(DEFAULT_CONFIG_PATHS),
        hint="pass one with --config",
    )


def config_from_toml(
    document: Mapping[str, Any], *, source: str | None = None, host_cpus: int | None = None
) -> KataConfig:
    """Builds a validated :class:`KataConfig` from a parsed TOML document."""
    where = f"{source}: " if source else ""
    name, hypervisor = _hypervisor_section(document, where)
    runtime = document.get("runtime", {})
    if not isinstance(runtime, Mapping):
        raise ConfigError(f"{where}[runtime] is not a table", hint="fix the [runtime] section")
    sections: dict[str, Mapping[str, Any]] = {
        "hypervisor": hypervisor,
        "qemu": hypervisor if name == "qemu" else {},
        "runtime": runtime,
    }
    values: dict[str, Any] = {}
    for key, (section, expected) in _KEYS.items():
        if key in sections[section]:
            value = _typed(sections[section][key], expected, f"{where}{key}")
            if value == "" and key in _EMPTY_IS_DEFAULT:
                continue
            values[key] = value
    if "default_vcpus" in values:
        vcpus = values["default_vcpus"]
        if isinstance(vcpus, float) and not math.isfinite(vcpus):
            raise ConfigError(
                f"{where}default_vcpus = {vcpus} is not a number of CPUs",
                hint="set default_vcpus to a number such as 1 or 2",
            )
        values["default_vcpus"] = _vcpus(values["default_vcpus"], host_cpus)
    if values.get("default_memory", _DEFAULT_MEMORY_MIB) < MIN_MEMORY_MIB:
        values["default_memory"] = _DEFAULT_MEMORY_MIB  # Kata: too small means the default
    for key in ("enable_annotations", "valid_hypervisor_paths"):
        if key in values:
            values[key] = _string_list(values[key], f"{where}{key}")
    for pattern in values.get("enable_annotations", ()):
        _compile(pattern, f"{where}enable_annotations")
    qemu = None
    if name == "qemu":
        _merge_sandbox_keys(values, where)
        qemu_keys = [key for key, (section, _) in _KEYS.items() if section == "qemu"]
        qemu = QemuSection(**{key: values.pop(key) for key in qemu_keys if key in values})
    elif not values.get("path"):
        raise ConfigError(
            f"{where}[hypervisor.{name}] path is not set", hint="set path to the VMM binary"
        )
    return KataConfig(hypervisor=name, **values, qemu=qemu, source=source).validate()


def _merge_sandbox_keys(values: dict[str, Any], where: str) -> None:
    """``seccompsandbox`` (Go runtime) and ``seccomp_sandbox`` (runtime-rs) are one setting;
    it becomes a QEMU argument, so it is checked here, naming the key."""
    go, rs = values.pop("seccompsandbox", None), values.get("seccomp_sandbox")
    if go is not None and rs is not None and go != rs:
        raise ConfigError(
            f"{where}seccompsandbox = {echo(go)} and seccomp_sandbox = {echo(rs)} disagree",
            hint="keep one of them",
        )
    value = go if go is not None else rs
    if value is None:
        return
    key = "seccompsandbox" if go is not None else "seccomp_sandbox"
    try:
        parse_seccomp_sandbox(value, where=f"{where}{key}")
    except InvalidInputError as exc:
        raise ConfigError(exc.message, hint=exc.hint) from None
    values["seccomp_sandbox"] = value


def apply_annotations(
    config: KataConfig, annotations: Mapping[str, str], *, host_cpus: int | None = None
) -> KataConfig:
    """Applies a pod's ``io.katacontainers.config.*`` overrides (pure; Kata's rules).

    A hypervisor annotation whose key is not matched by one of ``enable_annotations`` is an
    error, as in Kata. Overrides for keys this library does not use are checked against
    ``enable_annotations`` and otherwise ignored.
    """
    for key in sorted(annotations):
        if key.startswith(HYPERVISOR_ANNOTATION_PREFIX):
            name = key[len(HYPERVISOR_ANNOTATION_PREFIX) :]
            if not any(
                _compile(p, "enable_annotations").search(name) for p in config.enable_annotations
            ):
                raise ConfigError(
                    f"annotation {key} is not enabled by the Kata configuration",
                    hint=f"add {echo(name)} to enable_annotations in "
                    f"{config.source or 'the configuration'}, or drop the annotation",
                )
    changes: dict[str, Any] = {}
    for key in sorted(annotations):
        value = annotations[key]
        if key.startswith(HYPERVISOR_ANNOTATION_PREFIX):
            name = key[len(HYPERVISOR_ANNOTATION_PREFIX) :]
            _hypervisor_override(
                config, name=name, key=key, value=value, changes=changes, host_cpus=host_cpus
            )
        elif key == RUNTIME_ANNOTATION_PREFIX + "vfio_mode":
            if value not in VFIO_MODES:
                raise ConfigError(
                    f"unknown VFIO mode {echo(value)} in annotation {key}",
                    hint=f"use one of: {', '.join(VFIO_MODES)}",
                )
            changes["vfio_mode"] = value
    # Kata: an annotation for one plug mode turns the other off.
    if "hot_plug_vfio" in changes and "cold_plug_vfio" not in changes:
        changes["cold_plug_vfio"] = "no-port"
    if "cold_plug_vfio" in changes and "hot_plug_vfio" not in changes:
        changes["hot_plug_vfio"] = "no-port"
    if not changes:
        return config
    updated = replace(config, **changes)
    try:
        return updated.validate()
    except ConfigError as exc:
        raise ConfigError(f"after annotation overrides: {exc.message}", hint=exc.hint) from exc


def _hypervisor_override(
    config: KataConfig,
    *,
    name: str,
    key: str,
    value: str,
    changes: dict[str, Any],
    host_cpus: int | None,
) -> None:
    if name in ("cold_plug_vfio", "hot_plug_vfio"):
        port = value or "no-port"
        if port not in PORT_KINDS:
            raise ConfigError(
                f"invalid PCIe port {echo(value)} in annotation {key}",
                hint=f"use one of: {', '.join(PORT_KINDS)}",
            )
        changes[name] = port
    elif name in ("pcie_root_port", "pcie_switch_port"):
        count = _annotation_uint(key, value)
        if count > 0:  # Kata ignores 0 here
            changes[name] = count
    elif name in ("enable_iommu", "enable_iommu_platform"):
        changes[name] = _annotation_bool(key, value)
    elif name == "default_memory":
        memory = _annotation_uint(key, value)
        if memory < MIN_MEMORY_MIB:
            raise ConfigError(
                f"memory {memory} MiB in annotation {key} is below the minimum of "
                f"{MIN_MEMORY_MIB} MiB",
                hint="ask for more memory",
            )
        changes[name] = memory
    elif name == "default_vcpus":
        vcpus = _annotation_float(key, value)
        cpus = _host_cpus(host_cpus)
        if vcpus > cpus:
            raise ConfigError(
                f"{echo(value)} vCPUs in annotation {key} exceed the {cpus} CPUs of this host",
                hint=f"ask for at most {cpus}",
            )
        changes[name] = max(1, math.ceil(vcpus))
    elif name == "machine_type":
        # Only QEMU has a machine type; other hypervisors ignore it, as in Kata.
        if value and config.qemu is not None:
            changes["qemu"] = replace(config.qemu, machine_type=value)
    elif name == "kernel_params":
        if value.strip():
            joined = f"{config.kernel_params} {value}".strip()
            changes[name] = " ".join(joined.split())
    elif name == "path":
        if not any(_glob_matches(g, value) for g in config.valid_hypervisor_paths):
            raise ConfigError(
                f"hypervisor {echo(value)} required from annotation {key} is not valid",
                hint="list it in valid_hypervisor_paths in the Kata configuration",
            )
        changes[name] = value
    elif name in ("kernel", "initrd", "image"):
        _check_host_path(f"annotation {key}", value, required=True, strict=True)
        changes[name] = value


def _glob_matches(glob: str, path: str) -> bool:
    """Kata's filepath.Glob check: ``path`` is a normalised absolute path and each of its
    elements matches the glob's element at the same place (``*`` never crosses a ``/``)."""
    if not path.startswith("/") or posixpath.normpath(path) != path:
        return False
    parts, patterns = path.split("/"), glob.split("/")
    return len(parts) == len(patterns) and all(
        fnmatch.fnmatchcase(part, pattern) for part, pattern in zip(parts, patterns, strict=True)
    )


def _hypervisor_section(document: Mapping[str, Any], where: str) -> tuple[str, Mapping[str, Any]]:
    """The configuration's one ``[hypervisor.<name>]`` section and its name."""
    hypervisors = document.get("hypervisor")
    if not isinstance(hypervisors, Mapping) or not hypervisors:
        raise ConfigError(
            f"{where}no [hypervisor.<name>] section",
            hint="use a Kata configuration (configuration-qemu*.toml and friends)",
        )
    if len(hypervisors) > 1:
        raise ConfigError(
            f"{where}more than one hypervisor section: "
            + ", ".join(f"[hypervisor.{name}]" for name in sorted(hypervisors)),
            hint="keep the section of the hypervisor this runtime class uses",
        )
    ((name, section),) = hypervisors.items()
    if name not in HYPERVISORS:
        raise ConfigError(
            f"{where}[hypervisor.{name}] is not a hypervisor Kata knows",
            hint=f"use one of: {', '.join(HYPERVISORS)}",
        )
    if not isinstance(section, Mapping):
        raise ConfigError(
            f"{where}[hypervisor.{name}] is not a table", hint="fix the hypervisor section"
        )
    return name, section


def _typed(value: Any, expected: type, where: str) -> Any:
    # bool is an int in Python; TOML keeps them apart and so do we.
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected in (str, bool, list) and isinstance(value, expected):
        return value
    raise ConfigError(
        f"{where} has type {type(value).__name__}, expected {expected.__name__}",
        hint=f"write {where.rsplit(' ', 1)[-1]} as a TOML {expected.__name__}",
    )


def _string_list(value: list[Any], where: str) -> tuple[str, ...]:
    if not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where} must be a list of strings", hint="quote every item")
    return tuple(value)


def _vcpus(value: float, host_cpus: int | None) -> int:
    cpus = _host_cpus(host_cpus)
    if value < 0 or value > cpus:
        return cpus  # Kata: out of range means "all host CPUs"
    return max(1, math.ceil(value))


def _host_cpus(host_cpus: int | None) -> int:
    if host_cpus is not None:
        return host_cpus
    return os.cpu_count() or 1


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"{where}: {echo(pattern)} is not a valid regular expression: {exc}",
            hint="fix the pattern (each item is a regular expression)",
        ) from exc


_UINT = re.compile(r"[0-9]+\Z")
_FLOAT = re.compile(r"[0-9]+(\.[0-9]*)?\Z|\.[0-9]+\Z")
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})


def _annotation_uint(key: str, value: str) -> int:
    """Kata's ``strconv.ParseUint(value, 10, 32)``; the digit count is checked first."""
    number = decimal_digits(value, max_value=_MAX_UINT32)
    if number is None:
        problem = "is out of range" if _UINT.match(value) else "is not a positive number"
        raise ConfigError(
            f"annotation {key} = {echo(value)} {problem} (0..{_MAX_UINT32})",
            hint="write a decimal number such as 4",
        )
    return number


def _annotation_float(key: str, value: str) -> float:
    number = float(value) if _FLOAT.match(value) else math.nan
    if not math.isfinite(number):
        raise ConfigError(
            f"annotation {key} = {echo(value)} is not a positive number",
            hint="write a number such as 2 or 1.5",
        )
    return number


def _annotation_bool(key: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(
        f"annotation {key} = {echo(value)} is not a boolean", hint="write 'true' or 'false'"
    )


def _check_host_path(where: str, value: str, *, required: bool, strict: bool = False) -> None:
    """Paths end up as QEMU arguments run as root: absolute and printable; a path a pod
    asks for (``strict``) must also be normalised (no ``..`` escaping a directory)."""
    if not value:
        if required:
            raise ConfigError(f"{where} is empty", hint="set it to an absolute path")
        return
    if (
        not value.startswith("/")
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)
        or (strict and posixpath.normpath(value) != value)
    ):
        raise ConfigError(
            f"{where} = {echo(value)} is not a {'normalised ' if strict else ''}absolute path",
            hint="write an absolute path without control characters"
            + (", '..' or '//'" if strict else ""),
        )
