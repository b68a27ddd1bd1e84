"""The QEMU command line of a sandbox VM: machine, memory, CPUs, boot assets, console,
vIOMMU, the planned PCIe topology and one ``vfio-pci`` per passed-through function.

Pure: a :class:`VmSpec` in, a :class:`~kata_vfio.qemu.argv.QemuCommand` out. QMP is not part
of it; the launcher adds its own monitor socket.
"""

from __future__ import annotations

from dataclasses import dataclass

from kata_vfio.errors import InvalidInputError
from kata_vfio.qemu.argv import QemuCommand, QemuOpts, Value, format_size, validate_id
from kata_vfio.vm.topology import Topology

__all__ = ["ACCELERATORS", "VfioPlacement", "VmSpec", "build_vm_command"]

ACCELERATORS = ("kvm", "tcg")
# Root-bus slot of the boot image disk (ports start at 0x08).
IMAGE_DISK_SLOT = 0x02
_MIB = 1 << 20


@dataclass(frozen=True)
class VfioPlacement:
    """Where one host function goes in the guest."""

    host: str
    qemu_id: str
    port: str
    guest_function: int
    multifunction: bool
    iommufd: str | None = None

    def device(self) -> QemuOpts:
        """The ``-device vfio-pci,...`` value for this function."""
        return QemuOpts.of(
            "vfio-pci",
            ("host", self.host),
            ("id", self.qemu_id),
            ("bus", self.port),
            ("addr", f"00.{self.guest_function:x}"),
            ("multifunction", True if self.multifunction else None),
            ("iommufd", self.iommufd),
        )


@dataclass(frozen=True)
class VmSpec:
    """Everything the VM command line is made of (sizes in MiB, paths absolute)."""

    binary: str
    name: str
    memory_mib: int
    vcpus: int
    topology: Topology
    functions: tuple[VfioPlacement, ...] = ()
    machine_type: str = "q35"
    accel: str = "kvm"
    kernel: str = ""
    initrd: str = ""
    image: str = ""
    rootfs_type: str = "ext4"
    kernel_params: str = ""
    firmware: str = ""
    cpu_features: str = ""
    iommu: bool = False
    iommu_platform: bool = False
    console_socket: str | None = None


def build_vm_command(spec: VmSpec) -> QemuCommand:
    """The whole VM's command line (see the module docstring)."""
    if spec.accel not in ACCELERATORS:
        raise InvalidInputError(
            f"accelerator {spec.accel!r} is not supported", hint="use kvm or tcg"
        )
    validate_id(spec.name, "VM name")
    topology = spec.topology
    options: list[tuple[str, Value]] = [
        ("-name", QemuOpts.of(spec.name)),
        ("-machine", QemuOpts.of(spec.machine_type)),
        ("-accel", _accel(spec)),
        ("-cpu", _cpu(spec)),
        ("-m", f"{spec.memory_mib}M"),
        ("-smp", str(spec.vcpus)),
        ("-no-user-config", None),
        ("-nodefaults", None),
        ("-display", "none"),
        ("-no-reboot", None),
    ]
    if spec.machine_type == "q35" and topology.ports:
        # Native PCIe hot-plug on the ports (the guest's pciehp, as Kata's guest kernels
        # expect) instead of q35's ACPI hot-plug: QEMU can then drop a device from a slot the
        # guest never powered on, and a half-added multi-function device, on its own.
        options.append(("-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"))
    if topology.pci_hole64 is not None:
        hole = format_size(topology.pci_hole64)
        options.append(("-global", f"q35-pcihost.pci-hole64-size={hole}"))
        if spec.firmware:
            # OVMF sizes its 64-bit aperture from this, not from the host bridge.
            mmio64 = QemuOpts.of(
                None,
                ("name", "opt/ovmf/X-PciMmio64Mb"),
                ("string", str(topology.pci_hole64 // _MIB)),
            )
            options.append(("-fw_cfg", mmio64))
    if spec.firmware:
        options.append(("-bios", spec.firmware))
    if spec.kernel:
        options.append(("-kernel", spec.kernel))
        if spec.initrd:
            options.append(("-initrd", spec.initrd))
        options.append(("-append", _kernel_params(spec)))
    if spec.iommu:
        # The vIOMMU must exist before any PCI device that is placed behind it.
        viommu = QemuOpts.of("intel-iommu", ("intremap", True), ("caching-mode", True))
        options.append(("-device", viommu))
    options.extend(_numa(spec))
    if spec.console_socket:
        options.extend(
            [
                (
                    "-chardev",
                    QemuOpts.of(
                        "socket",
                        ("id", "console"),
                        ("path", spec.console_socket),
                        ("server", True),
                        ("wait", False),
                    ),
                ),
                ("-serial", "chardev:console"),
            ]
        )
    else:
        options.append(("-serial", "none"))
    if spec.image:
        options.extend(_image_disk(spec))
    options.extend(("-device", opts) for opts in _topology_devices(topology))
    if any(f.iommufd for f in spec.functions):
        for object_id in sorted({f.iommufd for f in spec.functions if f.iommufd}):
            options.append(("-object", QemuOpts.of("iommufd", ("id", object_id))))
    options.extend(("-device", f.device()) for f in spec.functions)
    # One command at the end: each QemuCommand validates all its options.
    return QemuCommand(spec.binary, tuple(options))


def _accel(spec: VmSpec) -> QemuOpts:
    # Interrupt remapping in the vIOMMU needs KVM's IOAPIC in user space (TCG has no
    # in-kernel irqchip to split).
    split = spec.iommu and spec.accel == "kvm"
    return QemuOpts.of(spec.accel, ("kernel-irqchip", "split" if split else None))


def _cpu(spec: VmSpec) -> QemuOpts:
    model = "host" if spec.accel == "kvm" else "max"
    props: list[tuple[str, object | None]] = []
    for item in spec.cpu_features.split(","):
        feature = item.strip()
        if not feature:
            continue
        key, sep, value = feature.partition("=")
        if not sep:
            raise InvalidInputError(
                f"cpu_features item {feature!r} is not key=value",
                hint="write cpu_features as 'pmu=off,...'",
            )
        props.append((key, value))
    phys_bits = spec.topology.phys_bits
    if phys_bits is not None:
        # KVM's host model takes the host's width; TCG's max model needs to be told.
        props.append(("host-phys-bits", True) if spec.accel == "kvm" else ("phys-bits", phys_bits))
    return QemuOpts.of(model, *props)


def _kernel_params(spec: VmSpec) -> str:
    params = ["console=ttyS0"] if spec.console_socket else []
    if spec.image:
        params += ["root=/dev/vda1", "ro", f"rootfstype={spec.rootfs_type}"]
        if spec.rootfs_type == "ext4":
            params.append("rootflags=data=ordered,errors=remount-ro")
    if spec.iommu:
        params += ["intel_iommu=on", "iommu=pt"]
    params += spec.kernel_params.split()
    return " ".join(params)


def _image_disk(spec: VmSpec) -> list[tuple[str, QemuOpts | str | None]]:
    return [
        (
            "-blockdev",
            QemuOpts.of(
                None,
                ("driver", "raw"),
                ("node-name", "image0"),
                ("read-only", True),
                ("file.driver", "file"),
                ("file.filename", spec.image),
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
                ("disable-legacy", True if spec.iommu_platform else None),
                ("iommu_platform", True if spec.iommu_platform else None),
            ),
        ),
    ]


def _numa(spec: VmSpec) -> list[tuple[str, QemuOpts | str | None]]:
    expanders = spec.topology.expanders
    if not expanders:
        return []
    nodes = sorted(e.guest_numa_node for e in expanders)
    count = len(nodes)
    share = spec.memory_mib // count
    options: list[tuple[str, QemuOpts | str | None]] = []
    cpu_start = 0
    for position, node in enumerate(nodes):
        memory = share + (spec.memory_mib - share * count if position == 0 else 0)
        cpus = spec.vcpus // count + (1 if position < spec.vcpus % count else 0)
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
                port.driver,
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
