"""The QEMU command line of a VM plan: machine, memory, CPUs, boot assets, console, vIOMMU,
the planned PCIe topology and one ``vfio-pci`` per function passed at start.

Pure: a hypervisor-neutral :class:`~kata_vfio.vm.plan.VmPlan` and this backend's own
:class:`QemuSettings` in, a :class:`~kata_vfio.qemu.argv.QemuCommand` out. QMP is not part of
it; the launcher adds its own monitor socket.
"""

from __future__ import annotations

from dataclasses import dataclass

from kata_vfio._echo import echo
from kata_vfio.errors import InvalidInputError
from kata_vfio.qemu.argv import QemuCommand, QemuOpts, Value, format_size, validate_id
from kata_vfio.qemu.privileges import parse_seccomp_sandbox
from kata_vfio.vm.plan import PassedFunction, VmPlan
from kata_vfio.vm.topology import Topology

__all__ = [
    "ACCELERATORS",
    "DEFAULT_BINARY",
    "PORT_DEVICES",
    "QemuSettings",
    "build_vm_command",
    "vfio_device",
]

ACCELERATORS = ("kvm", "tcg")
DEFAULT_BINARY = "/usr/bin/qemu-system-x86_64"
# The QEMU device of each kind of planned port.
PORT_DEVICES = {"root-port": "pcie-root-port", "switch-port": "xio3130-downstream"}
# Root-bus slot of the boot image disk (ports start at 0x08).
IMAGE_DISK_SLOT = 0x02
_MIB = 1 << 20


@dataclass(frozen=True)
class QemuSettings:
    """What only QEMU needs: the binary, the machine type, the accelerator, ``-cpu``
    properties (``cpu_features``, ``key=value,...``) and the seccomp filter
    (``seccomp_sandbox``: Kata's ``seccompsandbox``, QEMU's ``-sandbox``; empty for none)."""

    binary: str = DEFAULT_BINARY
    machine_type: str = "q35"
    accel: str = "kvm"
    cpu_features: str = ""
    seccomp_sandbox: str = ""


def vfio_device(function: PassedFunction) -> QemuOpts:
    """The ``-device vfio-pci,...`` value for one passed function."""
    return QemuOpts.of(
        "vfio-pci",
        ("host", function.host),
        ("id", function.device_id),
        ("bus", function.port),
        ("addr", f"00.{function.guest_function:x}"),
        ("multifunction", True if function.multifunction else None),
        ("iommufd", function.iommufd),
    )


def build_vm_command(plan: VmPlan, settings: QemuSettings) -> QemuCommand:
    """The whole VM's command line (see the module docstring)."""
    if settings.accel not in ACCELERATORS:
        raise InvalidInputError(
            f"accelerator {echo(settings.accel)} is not supported", hint="use kvm or tcg"
        )
    validate_id(plan.name, "VM name")
    topology = plan.topology
    options: list[tuple[str, Value]] = [
        ("-name", QemuOpts.of(plan.name)),
        ("-machine", QemuOpts.of(settings.machine_type)),
        ("-accel", _accel(plan, settings)),
        ("-cpu", _cpu(plan, settings)),
        ("-m", f"{plan.memory_mib}M"),
        ("-smp", str(plan.vcpus)),
        ("-no-user-config", None),
        ("-nodefaults", None),
        ("-display", "none"),
        ("-no-reboot", None),
    ]
    sandbox = parse_seccomp_sandbox(settings.seccomp_sandbox)
    if sandbox is not None:
        options.append(("-sandbox", sandbox))
    if settings.machine_type == "q35" and topology.ports:
        # Native PCIe hot-plug on the ports (the guest's pciehp, as Kata's guest kernels
        # expect) instead of q35's ACPI hot-plug: QEMU can then drop a device from a slot the
        # guest never powered on, and a half-added multi-function device, on its own.
        options.append(("-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"))
    if topology.pci_hole64 is not None:
        hole = format_size(topology.pci_hole64)
        options.append(("-global", f"q35-pcihost.pci-hole64-size={hole}"))
        if plan.firmware:
            # OVMF sizes its 64-bit aperture from this, not from the host bridge.
            mmio64 = QemuOpts.of(
                None,
                ("name", "opt/ovmf/X-PciMmio64Mb"),
                ("string", str(topology.pci_hole64 // _MIB)),
            )
            options.append(("-fw_cfg", mmio64))
    if plan.firmware:
        options.append(("-bios", plan.firmware))
    if plan.kernel:
        options.append(("-kernel", plan.kernel))
        if plan.initrd:
            options.append(("-initrd", plan.initrd))
        options.append(("-append", _kernel_params(plan)))
    if plan.iommu:
        # The vIOMMU must exist before any PCI device that is placed behind it.
        viommu = QemuOpts.of("intel-iommu", ("intremap", True), ("caching-mode", True))
        options.append(("-device", viommu))
    options.extend(_numa(plan))
    if plan.console_socket:
        options.extend(
            [
                (
                    "-chardev",
                    QemuOpts.of(
                        "socket",
                        ("id", "console"),
                        ("path", plan.console_socket),
                        ("server", True),
                        ("wait", False),
                    ),
                ),
                ("-serial", "chardev:console"),
            ]
        )
    else:
        options.append(("-serial", "none"))
    if plan.image:
        options.extend(_image_disk(plan))
    options.extend(("-device", opts) for opts in _topology_devices(topology))
    for object_id in sorted({f.iommufd for f in plan.functions if f.iommufd}):
        options.append(("-object", QemuOpts.of("iommufd", ("id", object_id))))
    options.extend(("-device", vfio_device(f)) for f in plan.functions)
    # One command at the end: each QemuCommand validates all its options.
    return QemuCommand(settings.binary, tuple(options))


def _accel(plan: VmPlan, settings: QemuSettings) -> QemuOpts:
    # Interrupt remapping in the vIOMMU needs KVM's IOAPIC in user space (TCG has no
    # in-kernel irqchip to split).
    split = plan.iommu and settings.accel == "kvm"
    return QemuOpts.of(settings.accel, ("kernel-irqchip", "split" if split else None))


def _cpu(plan: VmPlan, settings: QemuSettings) -> QemuOpts:
    model = "host" if settings.accel == "kvm" else "max"
    props: list[tuple[str, object | None]] = []
    for item in settings.cpu_features.split(","):
        feature = item.strip()
        if not feature:
            continue
        key, sep, value = feature.partition("=")
        if not sep:
            raise InvalidInputError(
                f"cpu_features item {echo(feature)} is not key=value",
                hint="write cpu_features as 'pmu=off,...'",
            )
        props.append((key, value))
    phys_bits = plan.topology.phys_bits
    if phys_bits is not None:
        # KVM's host model takes the host's width; TCG's max model needs to be told.
        props.append(
            ("host-phys-bits", True) if settings.accel == "kvm" else ("phys-bits", phys_bits)
        )
    return QemuOpts.of(model, *props)


def _kernel_params(plan: VmPlan) -> str:
    params = ["console=ttyS0"] if plan.console_socket else []
    if plan.image:
        params += ["root=/dev/vda1", "ro", f"rootfstype={plan.rootfs_type}"]
        if plan.rootfs_type == "ext4":
            params.append("rootflags=data=ordered,errors=remount-ro")
    if plan.iommu:
        params += ["intel_iommu=on", "iommu=pt"]
    params += plan.kernel_params.split()
    return " ".join(params)


def _image_disk(plan: VmPlan) -> list[tuple[str, QemuOpts | str | None]]:
    return [
        (
            "-blockdev",
            QemuOpts.of(
                None,
                ("driver", "raw"),
                ("node-name", "image0"),
                ("read-only", True),
                ("file.driver", "file"),
                ("file.filename", plan.image),
                ("file.read-only", True),
            ),
        ),
        (
            "-device",
            QemuOpts.of(
                "virtio-blk-pci",
                ("id", "image0-disk"),
                ("drive", "image0"),
                ("bus", "pcie.0"),
                ("addr", f"{IMAGE_DISK_SLOT:02x}.0"),
                ("disable-legacy", True if plan.iommu_platform else None),
                ("iommu_platform", True if plan.iommu_platform else None),
            ),
        ),
    ]


def _numa(plan: VmPlan) -> list[tuple[str, QemuOpts | str | None]]:
    expanders = plan.topology.expanders
    if not expanders:
        return []
    nodes = sorted(e.guest_numa_node for e in expanders)
    count = len(nodes)
    share = plan.memory_mib // count
    options: list[tuple[str, QemuOpts | str | None]] = []
    cpu_start = 0
    for position, node in enumerate(nodes):
        memory = share + (plan.memory_mib - share * count if position == 0 else 0)
        cpus = plan.vcpus // count + (1 if position < plan.vcpus % count else 0)
        options.append(
            (
                "-object",
                QemuOpts.of("memory-backend-ram", ("id", f"mem{node}"), ("size", f"{memory}M")),
            )
        )
        cpu_range = (
            None
            if cpus == 0
            else (f"{cpu_start}" if cpus == 1 else f"{cpu_start}-{cpu_start + cpus - 1}")
        )
        options.append(
            (
                "-numa",
                QemuOpts.of(
                    "node", ("nodeid", node), ("memdev", f"mem{node}"), ("cpus", cpu_range)
                ),
            )
        )
        cpu_start += cpus
    return options


def _topology_devices(topology: Topology) -> list[QemuOpts]:
    devices: list[QemuOpts] = []
    switch = topology.switch
    if switch is not None:
        devices.append(
            QemuOpts.of(
                "pcie-root-port",
                ("id", switch.root_port_id),
                ("bus", "pcie.0"),
                ("addr", f"{switch.root_port_addr:02x}.0"),
                ("chassis", switch.chassis),
                ("slot", 0),
                (
                    "pref64-reserve",
                    format_size(switch.pref64_reserve) if switch.pref64_reserve else None,
                ),
            )
        )
        devices.append(
            QemuOpts.of("x3130-upstream", ("id", switch.upstream_id), ("bus", switch.root_port_id))
        )
    for expander in topology.expanders:
        devices.append(
            QemuOpts.of(
                "pxb-pcie",
                ("id", expander.id),
                ("bus", "pcie.0"),
                ("addr", f"{expander.addr:02x}.0"),
                ("bus_nr", expander.bus_nr),
                ("numa_node", expander.guest_numa_node),
            )
        )
    for port in topology.ports:
        devices.append(
            QemuOpts.of(
                PORT_DEVICES[port.kind],
                ("id", port.id),
                ("bus", port.bus),
                ("addr", f"{port.addr:02x}.0"),
                ("chassis", port.chassis),
                ("slot", port.slot),
                (
                    "pref64-reserve",
                    format_size(port.pref64_reserve) if port.pref64_reserve else None,
                ),
            )
        )
    return devices
