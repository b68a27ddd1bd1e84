"""The sandbox-create plan: what Kata's runtime does when the pod's VM is created, as a pure
function.

From the sandbox's OCI spec, a CDI registry, the Kata configuration and a host scan:

1. the pod's ``io.katacontainers.config.*`` overrides are applied to the configuration;
2. the CDI devices are injected into the spec when cold-plug is on. They come from, in order:
   an explicit list of names; what the kubelet allocated to the pod (its Pod Resources API,
   ``pod_resource_api_sock``), in which case every device a ``cdi.k8s.io/`` annotation names
   must be among them, or the plan is refused naming the others (a pod author writes
   annotations; the kubelet decides allocations); else the ``cdi.k8s.io/*`` annotations, which
   are then trusted, and the plan says so;
3. every ``cdi.k8s.io/`` annotation is stripped, so container creation cannot inject again;
   with cold-plug off nothing was injected, so nothing is stripped: the request stays in the
   spec for whatever plugs the devices later (the plan warns that they are not cold-plugged);
4. ``linux.devices`` are classified exactly and each VFIO group expanded to all its endpoint
   functions; a group that is not assignable is refused before anything is launched;
5. the PCIe topology is planned (functions of one device on one port, ports in numeric order,
   BAR-sized 64-bit windows, NUMA expanders when asked) into a hypervisor-neutral
   :class:`~kata_vfio.vm.plan.VmPlan`;
6. the VMM backend of the configuration's hypervisor renders it (QEMU: the command line).

Same input, byte-identical output (see :meth:`SandboxPlan.to_document`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kata_vfio._core import Host
from kata_vfio._echo import echo
from kata_vfio.cdi.annotations import parse_annotations, strip_annotations
from kata_vfio.cdi.edits import OciChanges
from kata_vfio.cdi.inject import is_applied
from kata_vfio.cdi.names import is_qualified_name
from kata_vfio.errors import CdiInjectionError, CdiNameError, InvalidInputError, PlanError
from kata_vfio.host.memlock import required_memlock
from kata_vfio.kata.config import KataConfig, apply_annotations
from kata_vfio.kata.devices import classify_spec_devices, resolve_groups
from kata_vfio.kata.kinds import KindRule, kind_lookup
from kata_vfio.oci import annotations as spec_annotations
from kata_vfio.oci import check_oci_spec, with_annotations
from kata_vfio.qemu.argv import QemuCommand
from kata_vfio.qemu.vm import PORT_DEVICES, QemuSettings, build_vm_command
from kata_vfio.vm.placement import PlannedDevice, place_devices
from kata_vfio.vm.plan import VmPlan, cold_plugged, deferred
from kata_vfio.vm.topology import PortRequest, Topology, plan_topology
from kata_vfio.vm.viommu import refuse_shared_groups_behind_viommu

__all__ = [
    "RUNTIME_BASE",
    "SANDBOX_ID_ANNOTATIONS",
    "CdiInjection",
    "CdiInjector",
    "KubeletDevices",
    "SandboxPlan",
    "backend_settings",
    "default_runtime_dir",
    "plan_sandbox",
    "vm_name",
]

# Where each sandbox VM's private runtime directory goes by default.
RUNTIME_BASE = "/run/kata-vfio"
# Where CRI runtimes put the sandbox id (containerd, CRI-O).
SANDBOX_ID_ANNOTATIONS = ("io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID")
_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_MIB = 1 << 20


class CdiInjection(Protocol):
    """What an injection returns (``kata_vfio.cdi``'s ``InjectionResult``)."""

    @property
    def spec(self) -> dict[str, Any]: ...

    @property
    def devices(self) -> tuple[str, ...]: ...

    @property
    def added(self) -> OciChanges: ...


class CdiInjector(Protocol):
    """Something that injects CDI devices into an OCI spec (a ``kata_vfio.cdi`` registry)."""

    def inject(self, spec: Mapping[str, Any], names: Sequence[str]) -> CdiInjection: ...


class KubeletDevices(Protocol):
    """What the kubelet allocated to the sandbox's pod (``kata_vfio.k8s.allocation``'s
    ``SandboxDevices``): the CDI names and where they were read."""

    @property
    def source(self) -> str:
        """The Pod Resources socket and the pod, for messages."""

    @property
    def names(self) -> tuple[str, ...]: ...


ANNOTATIONS_TRUSTED = (
    "CDI devices taken from cdi.k8s.io/ annotations, trusted as given (no Pod Resources "
    "source): never let containerd pass cdi.k8s.io/* pod annotations through"
)


@dataclass(frozen=True)
class SandboxPlan:
    """The sandbox-create plan. ``spec`` is the edited OCI spec (a new dict; treat it as
    read-only), ``vm`` the hypervisor-neutral VM plan, ``command`` its QEMU command line
    (without QMP, which the launcher adds)."""

    config: KataConfig
    cdi_devices: tuple[str, ...]
    annotations_removed: tuple[str, ...]
    spec: dict[str, Any]
    devices: tuple[PlannedDevice, ...]
    control_nodes: tuple[str, ...]
    other_devices: tuple[str, ...]
    vm: VmPlan
    command: QemuCommand
    runtime_dir: str | None
    warnings: tuple[str, ...] = ()
    device_source: str = "none"
    """Where the CDI device names came from: ``explicit``, the kubelet (its socket and the
    pod), ``annotations`` (trusted) or ``none``."""

    @property
    def topology(self) -> Topology:
        """The guest's PCIe topology."""
        return self.vm.topology

    @property
    def qemu_argv(self) -> list[str]:
        """The QEMU argv (a list; never a shell string)."""
        return self.command.argv()

    @property
    def free_ports(self) -> tuple[str, ...]:
        """Ports left for hot-plug, in numeric order."""
        return tuple(p.id for p in self.topology.free_ports)

    @property
    def memlock(self) -> int:
        """Bytes of ``RLIMIT_MEMLOCK`` QEMU needs to pin guest memory for this plan's VFIO
        devices without ``CAP_IPC_LOCK`` (libvirt's rule; 0 without devices)."""
        return required_memlock(
            self.vm.memory_mib << 20,
            devices=len(self.devices),
            viommu=self.vm.iommu,
            iommufd=bool(self.devices) and all(d.iommufd for d in self.devices),
        )

    def to_document(self) -> dict[str, Any]:
        """The plan as JSON-ready data (what ``kata-vfio sandbox plan --json`` prints)."""
        used = set(self.topology.assignments)
        return {
            "config": {
                "source": self.config.source,
                "machine_type": self.config.qemu.machine_type if self.config.qemu else None,
                "cold_plug_vfio": self.config.cold_plug_vfio,
                "hot_plug_vfio": self.config.hot_plug_vfio,
                "pcie_root_port": self.config.pcie_root_port,
                "pcie_switch_port": self.config.pcie_switch_port,
                "enable_iommu": self.config.enable_iommu,
                "enable_iommu_platform": self.config.enable_iommu_platform,
                "enable_numa": self.config.enable_numa,
                "vfio_mode": self.config.vfio_mode,
                "default_memory": self.config.default_memory,
                "default_vcpus": self.config.default_vcpus,
            },
            "cdi_devices": list(self.cdi_devices),
            "device_source": self.device_source,
            "annotations_removed": list(self.annotations_removed),
            "devices": [d.to_document() for d in self.devices],
            "control_nodes": list(self.control_nodes),
            "other_devices": list(self.other_devices),
            "topology": {
                "kind": self.topology.kind,
                "switch": None
                if self.topology.switch is None
                else {
                    "root_port": self.topology.switch.root_port_id,
                    "upstream": self.topology.switch.upstream_id,
                    "pref64_reserve": self.topology.switch.pref64_reserve,
                },
                "expanders": [
                    {
                        "id": e.id,
                        "bus_nr": e.bus_nr,
                        "guest_numa_node": e.guest_numa_node,
                        "host_numa_node": e.host_numa_node,
                    }
                    for e in self.topology.expanders
                ],
                "mmio64_total": self.topology.mmio64_total,
                "pci_hole64": self.topology.pci_hole64,
                "phys_bits": self.topology.phys_bits,
            },
            "ports": [
                {
                    "id": p.id,
                    "driver": PORT_DEVICES[p.kind],
                    "bus": p.bus,
                    "addr": f"{p.addr:02x}.0",
                    "chassis": p.chassis,
                    "slot": p.slot,
                    "window": p.window,
                    "pref64_reserve": p.pref64_reserve,
                    "guest_pci_path": p.guest_pci_path,
                    "free": p.id not in used,
                }
                for p in self.topology.ports
            ],
            "qemu_argv": self.qemu_argv,
            "runtime_dir": self.runtime_dir,
            "spec": self.spec,
            "warnings": list(self.warnings),
        }


def plan_sandbox(
    spec: Mapping[str, Any],
    *,
    host: Host,
    config: KataConfig,
    registry: CdiInjector | None = None,
    cdi_names: Sequence[str] | None = None,
    kubelet_devices: KubeletDevices | None = None,
    accel: str = "kvm",
    runtime_dir: str | None = None,
    name: str | None = None,
    host_cpus: int | None = None,
    hotplug_mmio64: int = 0,
    guest_kinds: Sequence[KindRule] = (),
) -> SandboxPlan:
    """Plans the creation of a sandbox VM (see the module docstring).

    ``cdi_names`` replaces every other source of CDI devices; ``kubelet_devices`` (what the
    Pod Resources API said) replaces the annotations, which must then name none but those
    (:class:`PlanError` otherwise); ``registry`` resolves and injects them. ``runtime_dir``
    is where the VM's console socket will live (the launcher's runtime directory);
    ``hotplug_mmio64`` bytes of 64-bit window are reserved on each free port for devices
    hot-plugged later. ``host`` should come from ``scan(..., details=True)`` so BARs can be
    sized. ``guest_kinds`` are the site's own guest CDI kinds, tried before the built-in
    table (:mod:`kata_vfio.kata.kinds`).
    """
    check_oci_spec(spec, source="sandbox OCI spec")
    if runtime_dir is not None:
        _check_runtime_dir(runtime_dir)
    annotations = spec_annotations(spec)
    effective = apply_annotations(config, annotations, host_cpus=host_cpus)
    warnings: list[str] = []

    names, device_source = _requested_names(annotations, cdi_names, kubelet_devices)
    if device_source == "annotations" and names:
        warnings.append(ANNOTATIONS_TRUSTED)
    injected: Mapping[str, Any] = spec
    injected_names: tuple[str, ...] = ()
    if names and effective.cold_plug:
        if registry is None:
            raise PlanError(
                f"CDI devices {', '.join(names)} requested but no CDI registry was given",
                hint="pass the CDI spec directories (--spec-dir)",
            )
        # Devices an earlier plan of this spec injected are not injected twice: a re-run
        # of `sandbox plan --write` changes nothing.
        pending = [n for n in names if n not in _already_injected(registry, spec, names)]
        if pending:
            result = registry.inject(spec, pending)
            injected, injected_names = result.spec, tuple(result.devices)
    elif names:
        warnings.append(
            f"CDI devices {', '.join(names)} not cold-plugged: cold_plug_vfio is 'no-port'"
        )

    if effective.cold_plug:
        stripped = strip_annotations(spec_annotations(injected))
        final_spec = with_annotations(injected, stripped.annotations)
        removed = tuple(sorted(stripped.removed))
    else:
        # Nothing injected: stripping would delete the only record of the request.
        final_spec = with_annotations(injected, spec_annotations(injected))
        removed = ()

    spec_devices = classify_spec_devices(final_spec)
    groups = resolve_groups(host, spec_devices, require_iommufd=effective.confidential_guest)
    if groups and effective.vfio_mode == "vfio" and not effective.enable_iommu:
        raise PlanError(
            "vfio_mode = 'vfio' passes devices to containers as VFIO devices, which needs a "
            "guest IOMMU, but enable_iommu is off",
            hint="set enable_iommu = true (or the pod annotation "
            "io.katacontainers.config.hypervisor.enable_iommu), or use vfio_mode = "
            "'guest-kernel'",
        )
    if effective.enable_iommu:
        refuse_shared_groups_behind_viommu(groups)
    if groups and not host.has_details:
        warnings.append("host scanned without details: BARs not sized (no pref64-reserve)")
    unsized = [str(f.bdf) for g in groups for slot in g.slots for f in slot.functions]
    unsized = [b for b in unsized if host.has_details and host.device(b).bars is None]
    if unsized:
        # Unknown is not "no BARs": a large BAR left out makes the guest's window too small.
        warnings.append(
            f"BAR sizes of {', '.join(unsized)} are unknown (resource unreadable): the 64-bit "
            "window is planned without them"
        )

    slots = sorted((s for g in groups for s in g.slots), key=lambda s: s.first)
    kind = effective.plug_port
    min_ports = {"root-port": effective.pcie_root_port, "switch-port": effective.pcie_switch_port}
    topology = plan_topology(
        [PortRequest(numa_node=s.numa_node, mmio64=s.mmio64) for s in slots],
        kind=kind,
        min_ports=min_ports.get(kind, 0),
        numa=effective.enable_numa,
        hotplug_mmio64=hotplug_mmio64,
        memory_bytes=effective.default_memory * _MIB,
    )
    plug = "cold" if effective.cold_plug else "hot"
    devices = place_devices(groups, topology, plug=plug, kind_of=kind_lookup(guest_kinds))

    console = f"{runtime_dir.rstrip('/')}/console.sock" if runtime_dir else None
    vm = VmPlan(
        name=name or vm_name(annotations),
        memory_mib=effective.default_memory,
        vcpus=effective.default_vcpus,
        topology=topology,
        functions=cold_plugged(devices),
        deferred=deferred(devices),
        kernel=effective.kernel,
        initrd=effective.initrd,
        image=effective.image,
        rootfs_type=effective.rootfs_type,
        kernel_params=effective.kernel_params,
        firmware=effective.firmware,
        iommu=effective.enable_iommu,
        iommu_platform=effective.enable_iommu_platform,
        console_socket=console,
    )
    command = build_vm_command(vm, backend_settings(effective, accel=accel))
    return SandboxPlan(
        config=effective,
        cdi_devices=injected_names,
        annotations_removed=removed,
        spec=final_spec,
        devices=devices,
        control_nodes=tuple(d.path for d in spec_devices if d.is_control),
        other_devices=tuple(
            d.path for d in spec_devices if not d.is_control and not d.is_vfio_device
        ),
        vm=vm,
        command=command,
        runtime_dir=runtime_dir,
        warnings=tuple(warnings),
        device_source=device_source,
    )


def _already_injected(
    registry: CdiInjector, spec: Mapping[str, Any], names: Sequence[str]
) -> set[str]:
    """The names whose every edit is in ``spec`` already; one that cannot be injected is not
    among them (the injection of all of them then says why)."""
    present = set()
    for name in dict.fromkeys(names):
        try:
            added = registry.inject(spec, [name]).added
        except CdiInjectionError:
            continue
        if is_applied(spec, added):
            present.add(name)
    return present


def backend_settings(config: KataConfig, *, accel: str = "kvm") -> QemuSettings:
    """The VMM backend's settings for ``config``'s hypervisor (QEMU's: binary, machine type,
    accelerator, CPU features); refuses a hypervisor this library has no backend for."""
    if config.qemu is None:
        raise PlanError(
            f"hypervisor {echo(config.hypervisor)} has no backend here: kata-vfio drives QEMU",
            hint="use a QEMU configuration ([hypervisor.qemu], configuration-qemu*.toml)",
        )
    return QemuSettings(
        binary=config.path,
        machine_type=config.qemu.machine_type,
        accel=accel,
        cpu_features=config.qemu.cpu_features,
        seccomp_sandbox=config.qemu.seccomp_sandbox,
    )


def _requested_names(
    annotations: Mapping[str, str],
    cdi_names: Sequence[str] | None,
    kubelet: KubeletDevices | None,
) -> tuple[tuple[str, ...], str]:
    """The CDI names to cold-plug (each once) and where they came from."""
    if cdi_names is not None:
        _check_names(cdi_names)
        return tuple(dict.fromkeys(cdi_names)), "explicit"
    _, annotated = parse_annotations(annotations)
    if kubelet is None:
        names = tuple(dict.fromkeys(annotated))
        return names, "annotations" if names else "none"
    allocated = tuple(dict.fromkeys(kubelet.names))
    _check_names(allocated)
    extra = [n for n in dict.fromkeys(annotated) if n not in set(allocated)]
    if extra:
        raise PlanError(
            f"cdi.k8s.io/ annotations name {', '.join(extra)}, which the kubelet did not "
            f"allocate to this pod ({kubelet.source}: "
            f"{', '.join(allocated) or 'no devices'}); refusing the sandbox",
            hint="request the devices in the pod spec (resources.limits or a resource claim); "
            "and never let containerd pass cdi.k8s.io/* pod annotations through",
        )
    return allocated, kubelet.source


def _check_names(names: Sequence[str]) -> None:
    for name in names:
        if not isinstance(name, str) or not is_qualified_name(name):
            raise CdiNameError(
                f"invalid CDI device name {echo(name)}",
                hint="write it as vendor.com/class=name, e.g. nvidia.com/pgpu=0",
            )


def vm_name(annotations: Mapping[str, str]) -> str:
    """The VM (and runtime directory) name of a sandbox: ``sandbox-<first 12 characters of
    the CRI sandbox id>``, or ``sandbox`` without one."""
    for key in SANDBOX_ID_ANNOTATIONS:
        value = annotations.get(key, "")
        if value and _NAME_PART.match(value):
            return f"sandbox-{value[:12]}"
    return "sandbox"


def default_runtime_dir(annotations: Mapping[str, str]) -> str:
    """``<RUNTIME_BASE>/<vm name>``: the sandbox VM's runtime directory unless one is given."""
    return f"{RUNTIME_BASE}/{vm_name(annotations)}"


def _check_runtime_dir(runtime_dir: str) -> None:
    if not runtime_dir.startswith("/"):
        raise InvalidInputError(
            f"runtime directory {echo(runtime_dir)} is not an absolute path",
            hint="give an absolute path such as /run/kata-vfio/<sandbox>",
        )
