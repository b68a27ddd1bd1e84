"""Validation of a CDI spec, rule for rule as the reference library (``main``) does it.

The reference stops at the first problem; this collects them all, in the reference's order,
each with the field it concerns. Rules:

* ``cdiVersion`` known (an optional leading ``v``) and not below what the document uses;
* ``kind`` is ``vendor/class`` with valid names; device names valid and unique; at least one
  device; every device has non-empty edits;
* env entries (container and hook) are ``NAME=value`` with a non-empty name;
* device nodes: a path; ``type`` one of ``""``, ``b``, ``c``, ``u``, ``p``; ``permissions``
  empty, ``none`` or made of ``r``, ``w``, ``m`` only;
* mounts: host and container paths; hooks: one of the six OCI hook names and a path;
* ``intelRdt.closID``: ``/`` or a valid file name (not ``.``, ``..``, no ``/`` or newline,
  under 4096 bytes); net devices: both names, no repeats within one set of edits.

As in the reference, hook timeouts and absolute paths are not checked, and annotations are
free-form.
"""

from __future__ import annotations

from collections.abc import Iterator

from kata_vfio._echo import echo
from kata_vfio.cdi.goquote import go_quote
from kata_vfio.cdi.model import ContainerEdits, DeviceNode, Hook, IntelRdt, Spec
from kata_vfio.cdi.names import (
    class_name_problem,
    device_name_problem,
    parse_qualifier,
    vendor_name_problem,
)
from kata_vfio.cdi.versions import version_problem
from kata_vfio.errors import CdiSpecError

__all__ = [
    "HOOK_NAMES",
    "NO_PERMISSIONS",
    "edits_problems",
    "spec_problems",
    "validate_spec",
]

HOOK_NAMES: tuple[str, ...] = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)
"""The hook names a spec may use (``prestart`` is deprecated in OCI but still accepted)."""

NO_PERMISSIONS = "none"
"""``permissions: none`` asks for a cgroup rule with empty access."""

_NODE_TYPES = frozenset(("", "b", "c", "u", "p"))
_PERMISSION_CHARS = frozenset("rwm")
_MAX_CLOS_ID = 4096


def validate_spec(spec: Spec, *, source: str | None = None) -> None:
    """Raises :class:`CdiSpecError` listing every problem of ``spec``."""
    problems = spec_problems(spec)
    if not problems:
        return
    name = source or f"of kind {echo(spec.kind)}"
    message = f"invalid CDI Spec {name}: {problems[0]}"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    raise CdiSpecError(
        message,
        problems=tuple(f"{name}: {problem}" for problem in problems),
        hint="fix the fields named; `kata-vfio cdi validate FILE` lists every problem",
    )


def spec_problems(spec: Spec) -> tuple[str, ...]:
    """Every problem of ``spec``, each naming its field; empty when the spec is valid."""
    problems: list[str] = []
    version = version_problem(spec)
    if version is not None:
        problems.append(f"cdiVersion: {version}")
    vendor, cls = parse_qualifier(spec.kind)
    for problem in (vendor_name_problem(vendor), class_name_problem(cls)):
        if problem is not None:
            problems.append(f"kind {echo(spec.kind)}: {problem}")
    problems.extend(edits_problems(spec.container_edits, "containerEdits"))
    seen: set[str] = set()
    for index, device in enumerate(spec.devices):
        where = f"devices[{index}]"
        name_problem = device_name_problem(device.name)
        if name_problem is not None:
            problems.append(f"{where}.name: {name_problem}")
        if device.container_edits.is_empty():
            problems.append(
                f"{where} ({go_quote(device.name)}): invalid device, empty device edits"
            )
        else:
            problems.extend(
                f"{where} ({go_quote(device.name)}): {problem}"
                for problem in edits_problems(device.container_edits, f"{where}.containerEdits")
            )
        if device.name in seen:
            problems.append(f"{where}: invalid spec, multiple device {go_quote(device.name)}")
        seen.add(device.name)
    if not spec.devices:
        problems.append("devices: invalid spec, no devices")
    return tuple(problems)


def edits_problems(edits: ContainerEdits, where: str) -> Iterator[str]:
    """The problems of one set of container edits, each naming its field."""
    for index, entry in enumerate(edits.env):
        if _env_problem(entry):
            yield f"{where}.env[{index}]: invalid environment variable {go_quote(entry)}"
    for index, node in enumerate(edits.device_nodes):
        yield from _node_problems(node, f"{where}.deviceNodes[{index}]")
    for index, hook in enumerate(edits.hooks):
        yield from _hook_problems(hook, f"{where}.hooks[{index}]")
    for index, mount in enumerate(edits.mounts):
        at = f"{where}.mounts[{index}]"
        if not mount.host_path:
            yield f"{at}.hostPath: invalid mount, empty host path"
        if not mount.container_path:
            yield f"{at}.containerPath: invalid mount, empty container path"
    if edits.intel_rdt is not None:
        yield from _rdt_problems(edits.intel_rdt, f"{where}.intelRdt")
    yield from _net_device_problems(edits, f"{where}.netDevices")


def _env_problem(entry: str) -> bool:
    return entry.find("=") <= 0


def _node_problems(node: DeviceNode, where: str) -> Iterator[str]:
    if not node.path:
        yield f"{where}.path: invalid (empty) device path"
    if node.type not in _NODE_TYPES:
        yield f"{where}.type: device {go_quote(node.path)}: invalid type {go_quote(node.type)}"
    permissions = node.permissions
    if permissions and permissions != NO_PERMISSIONS and not set(permissions) <= _PERMISSION_CHARS:
        yield (
            f"{where}.permissions: device {go_quote(node.path)}: "
            f"invalid permissions {go_quote(permissions)}"
        )


def _hook_problems(hook: Hook, where: str) -> Iterator[str]:
    if hook.hook_name not in HOOK_NAMES:
        yield (
            f"{where}.hookName: invalid hook name {go_quote(hook.hook_name)} "
            f"(one of {', '.join(HOOK_NAMES)})"
        )
    if not hook.path:
        yield f"{where}.path: invalid hook {go_quote(hook.hook_name)} with empty path"
    for index, entry in enumerate(hook.env):
        if _env_problem(entry):
            yield (
                f"{where}.env[{index}]: invalid hook {go_quote(hook.hook_name)}: "
                f"invalid environment variable {go_quote(entry)}"
            )


def _rdt_problems(rdt: IntelRdt, where: str) -> Iterator[str]:
    clos = rdt.clos_id
    if clos == "/":
        return
    if len(clos.encode()) >= _MAX_CLOS_ID or clos in (".", "..") or "/" in clos or "\n" in clos:
        yield f"{where}.closID: invalid ClosID {go_quote(clos)}"


def _net_device_problems(edits: ContainerEdits, where: str) -> Iterator[str]:
    hosts: dict[str, str] = {}
    names: dict[str, str] = {}
    for index, dev in enumerate(edits.net_devices):
        at = f"{where}[{index}]"
        if not dev.host_interface_name:
            yield f"{at}.hostInterfaceName: invalid linux net device, empty HostInterfaceName"
            continue
        if not dev.name:
            yield f"{at}.name: invalid linux net device, empty Name"
            continue
        if dev.host_interface_name in hosts:
            yield (
                f"{at}: invalid linux net device, duplicate HostInterfaceName "
                f"{go_quote(dev.host_interface_name)} with names {go_quote(dev.name)} and "
                f"{go_quote(hosts[dev.host_interface_name])}"
            )
        hosts[dev.host_interface_name] = dev.name
        if dev.name in names:
            yield (
                f"{at}: invalid linux net device, duplicate Name {go_quote(dev.name)} with "
                f"HostInterfaceName {go_quote(dev.host_interface_name)} and "
                f"{go_quote(names[dev.name])}"
            )
        names[dev.name] = dev.host_interface_name
