"""The container-create plan: what Kata's runtime does for each workload container, pure.

Given the container's OCI spec (containerd has already applied the outer CDI edits, so the
VFIO nodes are in ``linux.devices``) and the sandbox's plan:

* every outer ``cdi.k8s.io/`` annotation is stripped again, nothing is injected; one that asks
  for devices while the spec holds no VFIO node was never injected (containerd applies the
  CDI edits first): that is refused naming the devices, never stripped silently;
* planning the plan's own output again changes nothing: an inner ``cdi.k8s.io/vfio<N>``
  annotation that names exactly what a sandbox device would give is this plan's own (from an
  earlier run) and is kept;
* each VFIO node is recognised as a device already in the sandbox (by host path, or by
  ``major:minor``) and never attached twice; a node the sandbox does not have is refused, or
  listed for hot-plug when ``hot_plug_vfio`` allows it;
* ``guest-kernel`` mode: the inner annotations ``cdi.k8s.io/vfio<N>: <kind>=<index>`` are
  added (indices per kind, in guest PCI order) and the ``/dev/vfio`` and ``/dev/iommu`` nodes
  are removed from the spec; ``vfio`` mode: the nodes stay and a guest IOMMU is required;
* the agent's device descriptors are built;
* the pause (sandbox) container gets no devices and no inner annotations.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kata_vfio._echo import echo
from kata_vfio._json import strict_loads
from kata_vfio.cdi.annotations import (
    ANNOTATION_PREFIX,
    is_inner_annotation,
    parse_annotations,
    strip_annotations,
)
from kata_vfio.errors import HostIOError, InvalidInputError, PlanError
from kata_vfio.kata.agent import AgentDevice, agent_device
from kata_vfio.kata.devices import (
    SpecDevice,
    classify_spec_devices,
    refuse_malformed_vfio_paths,
)
from kata_vfio.kata.sandbox import SandboxPlan
from kata_vfio.oci import annotations as spec_annotations
from kata_vfio.oci import check_oci_spec, with_annotations
from kata_vfio.vm.placement import PlannedDevice, PlannedFunction

__all__ = [
    "SANDBOX_CONTAINER_ANNOTATIONS",
    "ContainerPlan",
    "SandboxView",
    "is_sandbox_container",
    "load_sandbox_view",
    "plan_container",
]

_MAX_PLAN_BYTES = 64 * 1024 * 1024
# (annotation, value) pairs that mark the pause container (containerd, CRI-O, Kata).
SANDBOX_CONTAINER_ANNOTATIONS = (
    ("io.kubernetes.cri.container-type", "sandbox"),
    ("io.kubernetes.cri-o.ContainerType", "sandbox"),
    ("io.katacontainers.pkg.oci.container_type", "pod_sandbox"),
)


@dataclass(frozen=True)
class SandboxView:
    """What a container plan needs to know about its sandbox."""

    vfio_mode: str
    guest_iommu: bool
    hot_plug_vfio: str
    devices: tuple[PlannedDevice, ...]
    free_ports: tuple[str, ...]

    @classmethod
    def from_plan(cls, plan: SandboxPlan) -> SandboxView:
        """The view of a sandbox plan."""
        return cls(
            vfio_mode=plan.config.vfio_mode,
            guest_iommu=plan.config.enable_iommu,
            hot_plug_vfio=plan.config.hot_plug_vfio,
            devices=plan.devices,
            free_ports=plan.free_ports,
        )

    @classmethod
    def from_document(cls, doc: Any, source: str = "sandbox plan") -> SandboxView:
        """Reads the JSON of ``kata-vfio sandbox plan --json``; errors name the field."""
        if not isinstance(doc, Mapping):
            raise InvalidInputError(f"{source} is not a JSON object")
        config = doc.get("config")
        devices = doc.get("devices")
        ports = doc.get("ports")
        if not isinstance(config, Mapping):
            raise InvalidInputError(f"{source}: 'config' is missing or not an object")
        if not isinstance(devices, list) or not isinstance(ports, list):
            raise InvalidInputError(f"{source}: 'devices' and 'ports' must be lists")
        mode = config.get("vfio_mode")
        if mode not in ("vfio", "guest-kernel"):
            raise InvalidInputError(f"{source}: config.vfio_mode = {echo(mode)} is not valid")
        if not isinstance(config.get("enable_iommu"), bool):
            raise InvalidInputError(f"{source}: config.enable_iommu must be a boolean")
        hot = config.get("hot_plug_vfio")
        if not isinstance(hot, str):
            raise InvalidInputError(f"{source}: config.hot_plug_vfio must be a string")
        free = []
        for index, port in enumerate(ports):
            if not isinstance(port, Mapping) or not isinstance(port.get("id"), str):
                raise InvalidInputError(f"{source}: ports[{index}] has no id")
            if port.get("free") is True:
                free.append(port["id"])
        return cls(
            vfio_mode=mode,
            guest_iommu=config["enable_iommu"],
            hot_plug_vfio=hot,
            devices=tuple(
                PlannedDevice.from_document(d, f"{source}: devices[{i}]")
                if isinstance(d, Mapping)
                else _not_object(source, i)
                for i, d in enumerate(devices)
            ),
            free_ports=tuple(free),
        )


@dataclass(frozen=True)
class ContainerPlan:
    """The container-create plan. ``spec`` is the edited OCI spec (a new dict)."""

    spec: dict[str, Any]
    sandbox_container: bool
    annotations_removed: tuple[str, ...]
    annotations_added: dict[str, str]
    agent_devices: tuple[AgentDevice, ...]
    removed_devices: tuple[str, ...]
    hotplug: tuple[str, ...]
    annotations_kept: tuple[str, ...] = ()
    """Inner annotations already in the spec from an earlier plan of it (kept as they are)."""

    def to_document(self) -> dict[str, Any]:
        """JSON-ready form (what ``kata-vfio sandbox container --json`` prints)."""
        return {
            "spec": self.spec,
            "sandbox_container": self.sandbox_container,
            "annotations_removed": list(self.annotations_removed),
            "annotations_added": dict(sorted(self.annotations_added.items())),
            "annotations_kept": list(self.annotations_kept),
            "agent_devices": [d.to_document() for d in self.agent_devices],
            "removed_devices": list(self.removed_devices),
            "hotplug": list(self.hotplug),
        }


def is_sandbox_container(annotations: Mapping[str, str]) -> bool:
    """Whether the spec is the pod's pause container (by the CRI runtime's annotations)."""
    return any(annotations.get(key) == value for key, value in SANDBOX_CONTAINER_ANNOTATIONS)


def plan_container(spec: Mapping[str, Any], sandbox: SandboxPlan | SandboxView) -> ContainerPlan:
    """Plans the creation of one container in a planned sandbox (see the module docstring)."""
    check_oci_spec(spec, source="container OCI spec")
    view = sandbox if isinstance(sandbox, SandboxView) else SandboxView.from_plan(sandbox)
    annotations = spec_annotations(spec)
    indices = _kind_indices(view.devices)
    kept = _own_inner_annotations(annotations, view.devices, indices)
    stripped = strip_annotations(annotations, keep=kept)
    removed = tuple(sorted(stripped.removed))
    if is_sandbox_container(stripped.annotations):
        return ContainerPlan(
            spec=with_annotations(spec, stripped.annotations),
            sandbox_container=True,
            annotations_removed=removed,
            annotations_added={},
            agent_devices=(),
            removed_devices=(),
            hotplug=(),
        )
    spec_devices = classify_spec_devices(spec)
    refuse_malformed_vfio_paths(spec_devices)
    vfio_nodes = _unique(d for d in spec_devices if d.is_vfio_device)
    if not vfio_nodes:
        _refuse_never_injected(stripped.removed)
    if vfio_nodes and view.vfio_mode == "vfio" and not view.guest_iommu:
        raise PlanError(
            "vfio_mode = 'vfio' gives the container VFIO devices, which needs a guest IOMMU, "
            "but the sandbox has enable_iommu off",
            hint="set enable_iommu = true in the Kata configuration (or the pod annotation), "
            "or use vfio_mode = 'guest-kernel'",
        )
    agent_devices: list[AgentDevice] = []
    added: dict[str, list[str]] = {}
    hotplug: list[str] = []
    for node in vfio_nodes:
        functions = _match(node, view.devices)
        if functions is None:
            hotplug.append(_not_in_sandbox(node, view, len(hotplug)))
            continue
        number = _node_number(node.path)
        agent_devices.append(
            agent_device(
                vfio_mode=view.vfio_mode,
                number=number,
                container_path=node.path,
                functions=functions,
            )
        )
        if view.vfio_mode == "guest-kernel":
            values = [f"{f.kind}={indices[f.device_id]}" for f in functions if f.kind is not None]
            if values:
                # A group and a cdev can share a number: merge, never overwrite.
                bucket = added.setdefault(f"{ANNOTATION_PREFIX}vfio{number}", [])
                bucket.extend(v for v in values if v not in bucket)
    annotations_added = {key: ",".join(values) for key, values in sorted(added.items())}
    new_annotations = {**stripped.annotations, **annotations_added}
    edited = with_annotations(spec, new_annotations)
    removed_devices: tuple[str, ...] = ()
    if view.vfio_mode == "guest-kernel":
        edited, removed_devices = _strip_vfio_nodes(edited, spec_devices)
    return ContainerPlan(
        spec=edited,
        sandbox_container=False,
        annotations_removed=removed,
        annotations_added=annotations_added,
        agent_devices=tuple(agent_devices),
        removed_devices=removed_devices,
        hotplug=tuple(hotplug),
        annotations_kept=tuple(sorted(kept)),
    )


def _own_inner_annotations(
    annotations: Mapping[str, str], devices: Sequence[PlannedDevice], indices: dict[str, int]
) -> set[str]:
    """The inner keys (``cdi.k8s.io/vfio<N>``) whose value names only what a sandbox device
    numbered N gives its guest (``kind=index``): an earlier plan of this spec added them."""
    offered: dict[int, set[str]] = {}
    for device in devices:
        values = {f"{f.kind}={indices[f.device_id]}" for f in device.functions if f.kind}
        numbers = {node.number for node in device.nodes} | {device.group}
        numbers |= {int(f.cdev[4:]) for f in device.functions if f.cdev}
        for number in numbers:
            offered.setdefault(number, set()).update(values)
    own = set()
    for key, value in annotations.items():
        if is_inner_annotation(key) and isinstance(value, str):
            number = int(key[len(ANNOTATION_PREFIX) + 4 :])
            if value and set(value.split(",")) <= offered.get(number, set()):
                own.add(key)
    return own


def _refuse_never_injected(requests: Mapping[str, str]) -> None:
    """Outer requests in a spec without any VFIO node: the CDI edits were never applied, and
    stripping the requests would drop the devices without a word."""
    if not requests:
        return
    _keys, names = parse_annotations(requests)
    asked = ", ".join(f"{key}={value}" for key, value in sorted(requests.items()))
    raise PlanError(
        f"the container asks for CDI devices {', '.join(dict.fromkeys(names))} ({asked}) but "
        "its spec holds no VFIO device node: they were never injected",
        hint="inject them first (containerd does it when CDI is on; by hand: kata-vfio cdi "
        "inject --bundle DIR --from-annotations), then plan the container",
    )


def _unique(devices: Any) -> list[SpecDevice]:
    seen: set[str] = set()
    result = []
    for device in devices:
        if device.path not in seen:
            seen.add(device.path)
            result.append(device)
    return result


def _kind_indices(devices: Sequence[PlannedDevice]) -> dict[str, int]:
    """Per-kind index of every function with a kind, counted in guest PCI order over the
    whole sandbox (the guest's CDI spec numbers devices that way)."""
    everything = sorted((f for d in devices for f in d.functions), key=lambda f: f.guest_order)
    counters: dict[str, int] = {}
    indices: dict[str, int] = {}
    for function in everything:
        if function.kind is None:
            continue
        indices[function.device_id] = counters.get(function.kind, 0)
        counters[function.kind] = indices[function.device_id] + 1
    return indices


def _match(
    node: SpecDevice, devices: Sequence[PlannedDevice]
) -> tuple[PlannedFunction, ...] | None:
    """The sandbox functions behind a container node: by ``major:minor`` when both sides
    have them (an OCI path is the container's, the numbers are the host node's), else by
    path; then a node of the other kind for the same functions (a group node in the
    sandbox, a cdev here), named by the path."""
    for device in devices:
        for planned in device.nodes:
            if node.devno is not None and planned.devno is not None:
                same = planned.devno == node.devno
            else:
                same = node.path in (planned.path, planned.host_path)
            if same:
                wanted = set(planned.bdfs)
                return tuple(f for f in device.functions if f.bdf in wanted)
    number = _node_number(node.path)
    for device in devices:
        if node.kind == "group" and device.backend == "iommufd" and device.group == number:
            return device.functions
        if node.kind == "cdev" and device.backend == "legacy":
            match = tuple(f for f in device.functions if f.cdev == f"vfio{number}")
            if match:
                return match
    return None


def _not_in_sandbox(node: SpecDevice, view: SandboxView, pending: int) -> str:
    if view.hot_plug_vfio == "no-port":
        raise PlanError(
            f"{node.path} was not cold-plugged into the sandbox and hot_plug_vfio is 'no-port'",
            hint="request the device for the whole pod (CDI annotation on the sandbox or the "
            "kubelet's Pod Resources) so it is cold-plugged at sandbox creation",
        )
    if pending >= len(view.free_ports):
        raise PlanError(
            f"{node.path} needs a free PCIe port for hot-plug, and none is left "
            f"({len(view.free_ports)} free)",
            hint="raise pcie_root_port / pcie_switch_port in the Kata configuration",
        )
    return node.path


def _node_number(path: str) -> int:
    name = path.rsplit("/", 1)[-1]
    return int(name[4:] if name.startswith("vfio") else name)


def _strip_vfio_nodes(
    spec: dict[str, Any], devices: Sequence[SpecDevice]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Guest-kernel mode: the guest has no such host nodes; drop them and their cgroup rules."""
    drop = {d.path for d in devices if d.is_vfio_device or d.is_control}
    if not drop:
        return spec, ()
    numbers = {d.devno for d in devices if d.path in drop and d.devno is not None}
    result = copy.deepcopy(spec)
    linux = result.get("linux") or {}
    linux["devices"] = [d for d in linux.get("devices") or [] if d.get("path") not in drop]
    resources = linux.get("resources")
    if isinstance(resources, dict) and isinstance(resources.get("devices"), list):
        resources["devices"] = [
            rule
            for rule in resources["devices"]
            if not (
                isinstance(rule, dict)
                and rule.get("allow") is True
                and (rule.get("major"), rule.get("minor")) in numbers
            )
        ]
    return result, tuple(sorted(drop))


def _not_object(source: str, index: int) -> PlannedDevice:
    raise InvalidInputError(f"{source}: devices[{index}] is not an object")


def load_sandbox_view(path: str) -> SandboxView:
    """The view of a sandbox plan stored as JSON (``kata-vfio sandbox plan --json``); errors
    name the file and the field."""
    return SandboxView.from_document(_read_plan(path), source=path)


def _read_plan(path: str) -> Any:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise HostIOError(
            f"cannot read sandbox plan {path}: {exc.strerror}",
            errno=exc.errno,
            path=path,
            hint="save it first: kata-vfio sandbox plan --bundle DIR --json > plan.json",
        ) from exc
    if len(data) > _MAX_PLAN_BYTES:
        raise InvalidInputError(f"sandbox plan {path} is larger than 64 MiB")
    try:
        return strict_loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(
            f"sandbox plan {path} is not valid JSON: {exc}",
            hint="pass the output of 'kata-vfio sandbox plan --json'",
        ) from exc
