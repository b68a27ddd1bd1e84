//! The PCI device record and the class and driver facts the rest of the core needs.

use crate::bdf::Bdf;
use crate::sysfs::problem::{ReadFailure, ReadProblem};

/// Class code of a host bridge (base 0x06, subclass 0x00).
pub const CLASS_HOST_BRIDGE: u32 = 0x0600;
/// Class code of a PCI-to-PCI bridge (root ports and switch ports are these too).
pub const CLASS_PCI_BRIDGE: u32 = 0x0604;
/// Class code of "other system peripheral" (Xeon uncore, DSA, CBDMA, ...).
pub const CLASS_SYSTEM_PERIPHERAL_OTHER: u32 = 0x0880;
/// A memory BAR at least this large cannot be placed below 4 GiB.
pub const LARGE_BAR_BYTES: u64 = 1 << 32;

/// One BAR from the `resource` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bar {
    pub index: u8,
    pub start: u64,
    pub size: u64,
    pub is_io: bool,
    pub is_64bit: bool,
    pub prefetchable: bool,
}

/// PCIe link attributes, as sysfs prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Link {
    pub current_speed: Option<String>,
    pub current_width: Option<u32>,
    pub max_speed: Option<String>,
    pub max_width: Option<u32>,
}

/// Attributes read only when asked for (they cost extra reads per device).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Details {
    /// The non-empty BARs; `None` when `resource` could not be read or is not what the kernel
    /// writes (unknown, which is not "no BARs").
    pub bars: Option<Vec<Bar>>,
    pub reset_methods: Option<Vec<String>>,
    pub link: Option<Link>,
}

impl Details {
    /// Whether a memory BAR is 4 GiB or larger; `None` when the BARs are unknown.
    pub fn large_bar(&self) -> Option<bool> {
        self.bars.as_ref().map(|bars| {
            bars.iter()
                .any(|bar| !bar.is_io && bar.size >= LARGE_BAR_BYTES)
        })
    }
}

/// A function the host platform itself needs: binding it to vfio-pci (or unbinding its
/// driver) takes it from the host, so no fix ever suggests that and binding refuses it unless
/// forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlatformFunction {
    /// 0x0600: the root complex's own function.
    HostBridge,
    /// 0x0601: the LPC/eSPI bridge (firmware flash, TPM, embedded controller, legacy I/O).
    IsaBridge,
    /// 0x0602/0x0603: EISA and MicroChannel bridges, the same role on old machines.
    LegacyBusBridge,
    /// 0x0c05: memory SPD, hardware monitors and voltage regulators hang off it.
    SmBus,
    /// 0x0806: the IOMMU (AMD IOMMU is a PCI function): the DMA isolation VFIO relies on.
    Iommu,
    /// 0x0800: an interrupt controller (I/O APIC, PIC).
    InterruptController,
    /// 0x0801: the legacy DMA controller.
    DmaController,
    /// 0x0802: a system timer (HPET).
    Timer,
    /// 0x0803: the real-time clock.
    RealTimeClock,
    /// 0x0807: a root complex event collector (PCIe error reporting for integrated devices).
    EventCollector,
    /// 0x0500/0x0501/0x0580: RAM, flash and memory controllers of the platform.
    MemoryController,
    /// `boot_vga` reads 1: the firmware's console and, usually, the host's.
    BootVga,
    /// A system peripheral (0x0880) on a root bus that no driver claims: the CPU's own
    /// uncore registers (memory map, VT-d, RAS on Xeon stacks). Accelerators of the same
    /// class (DSA, CBDMA) are claimed by their drivers and do not count.
    RootComplexPeripheral,
}

impl PlatformFunction {
    /// The platform role of a function with this class code (and `boot_vga` flag).
    pub fn of(class_code: u32, boot_vga: bool) -> Option<Self> {
        let function = match class_code >> 8 {
            0x0600 => Self::HostBridge,
            0x0601 => Self::IsaBridge,
            0x0602 | 0x0603 => Self::LegacyBusBridge,
            0x0c05 => Self::SmBus,
            0x0806 => Self::Iommu,
            0x0800 => Self::InterruptController,
            0x0801 => Self::DmaController,
            0x0802 => Self::Timer,
            0x0803 => Self::RealTimeClock,
            0x0807 => Self::EventCollector,
            0x0500 | 0x0501 | 0x0580 => Self::MemoryController,
            _ if boot_vga => Self::BootVga,
            _ => return None,
        };
        Some(function)
    }

    /// The role of an unclaimed system peripheral on a root bus (no bridge above it).
    pub fn root_complex(class_code: u32, on_root_bus: bool, has_driver: bool) -> Option<Self> {
        (class_code >> 8 == CLASS_SYSTEM_PERIPHERAL_OTHER && on_root_bus && !has_driver)
            .then_some(Self::RootComplexPeripheral)
    }

    /// A stable name (`host-bridge`, `isa-bridge`, `smbus`, `boot-vga`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HostBridge => "host-bridge",
            Self::IsaBridge => "isa-bridge",
            Self::LegacyBusBridge => "legacy-bus-bridge",
            Self::SmBus => "smbus",
            Self::Iommu => "iommu",
            Self::InterruptController => "interrupt-controller",
            Self::DmaController => "dma-controller",
            Self::Timer => "timer",
            Self::RealTimeClock => "rtc",
            Self::EventCollector => "event-collector",
            Self::MemoryController => "memory-controller",
            Self::BootVga => "boot-vga",
            Self::RootComplexPeripheral => "root-complex-peripheral",
        }
    }

    /// What the host loses if the function is taken, for refusals.
    pub fn description(self) -> &'static str {
        match self {
            Self::HostBridge => "a host bridge, the root complex's own function",
            Self::IsaBridge => {
                "an ISA/LPC bridge: firmware flash, TPM, embedded controller and legacy I/O sit behind it"
            }
            Self::LegacyBusBridge => "a legacy bus bridge (EISA/MCA) the platform's devices sit behind",
            Self::SmBus => {
                "an SMBus controller: memory SPD, hardware monitors and voltage regulators sit on it"
            }
            Self::Iommu => "the IOMMU itself, which provides the DMA isolation VFIO relies on",
            Self::InterruptController => "an interrupt controller the host's interrupts go through",
            Self::DmaController => "the platform's legacy DMA controller",
            Self::Timer => "a system timer the host keeps time with",
            Self::RealTimeClock => "the real-time clock",
            Self::EventCollector => {
                "a root complex event collector, which reports PCIe errors of integrated devices"
            }
            Self::MemoryController => "a memory controller of the platform",
            Self::BootVga => "the boot VGA device: the firmware's and the host's console is on it",
            Self::RootComplexPeripheral => {
                "a system peripheral of the root complex that no driver claims (CPU uncore registers: memory map, VT-d, RAS)"
            }
        }
    }
}

/// One PCI function.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PciDevice {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: Option<u16>,
    pub subsystem_device: Option<u16>,
    /// 24-bit class: base << 16 | subclass << 8 | prog-if.
    pub class_code: u32,
    pub revision: Option<u8>,
    pub driver: Option<String>,
    pub driver_override: Option<String>,
    pub iommu_group: Option<u32>,
    pub numa_node: Option<u32>,
    pub physfn: Option<Bdf>,
    pub virtfns: Vec<Bdf>,
    pub sriov_totalvfs: Option<u32>,
    pub sriov_numvfs: Option<u32>,
    /// Bridges from the root complex down to the parent, root first.
    pub upstream: Vec<Bdf>,
    pub is_pcie: bool,
    pub vfio_cdev: Option<String>,
    /// `boot_vga` reads 1 (read for VGA-class functions only, the ones the kernel gives it).
    pub boot_vga: bool,
    /// The real device directory, relative to the sysfs root.
    pub sysfs_path: String,
    pub details: Option<Details>,
    /// Attributes that exist but could not be read (their values above are `None`).
    pub problems: Vec<ReadProblem>,
}

impl PciDevice {
    /// Base class and subclass (the top 16 bits of the class code).
    pub fn class_subclass(&self) -> u32 {
        self.class_code >> 8
    }

    pub fn is_bridge(&self) -> bool {
        self.class_subclass() == CLASS_PCI_BRIDGE
    }

    pub fn is_host_bridge(&self) -> bool {
        self.class_subclass() == CLASS_HOST_BRIDGE
    }

    /// Everything but host bridges and PCI bridges; 0x0680 (NVSwitch, "other bridge") stays.
    pub fn is_endpoint(&self) -> bool {
        !self.is_bridge() && !self.is_host_bridge()
    }

    pub fn is_vfio_bound(&self) -> bool {
        self.driver.as_deref().is_some_and(is_vfio_driver)
    }

    /// The platform role of this function, if it has one.
    pub fn platform_function(&self) -> Option<PlatformFunction> {
        PlatformFunction::of(self.class_code, self.boot_vga).or_else(|| {
            PlatformFunction::root_complex(
                self.class_code,
                self.upstream.is_empty(),
                self.driver.is_some(),
            )
        })
    }

    /// Why `attribute` could not be read, when it could not.
    pub fn problem(&self, attribute: &str) -> Option<ReadFailure> {
        self.problems
            .iter()
            .find(|p| p.attribute == attribute)
            .map(|p| p.failure)
    }
}

/// vfio-pci itself or a vendor variant built on vfio-pci-core (`mlx5_vfio_pci`,
/// `nvgrace-gpu-vfio-pci`, `hisi-acc-vfio-pci`, ...).
pub fn is_vfio_driver(name: &str) -> bool {
    name == "vfio-pci" || name.ends_with("_vfio_pci") || name.ends_with("-vfio-pci")
}

/// Drivers that do not use the kernel's DMA API for the device and so leave a group viable
/// (the kernel's `driver_managed_dma` set for PCI: vfio drivers, pci-stub, pcieport).
pub fn is_dma_safe_driver(name: &str) -> bool {
    is_vfio_driver(name) || name == "pci-stub" || name == "pcieport"
}

/// A short human name for a class code, for tables.
pub fn class_name(class_code: u32) -> &'static str {
    match class_code >> 8 {
        0x0100 => "SCSI controller",
        0x0101 => "IDE controller",
        0x0104 => "RAID controller",
        0x0106 => "SATA controller",
        0x0107 => "SAS controller",
        0x0108 => "NVMe controller",
        0x0180 => "Mass storage controller",
        0x0200 => "Ethernet controller",
        0x0207 => "InfiniBand controller",
        0x0280 => "Network controller",
        0x0300 => "VGA controller",
        0x0302 => "3D controller",
        0x0380 => "Display controller",
        0x0401 | 0x0403 => "Audio device",
        0x0480 => "Multimedia controller",
        0x0500 => "RAM memory",
        0x0580 => "Memory controller",
        0x0600 => "Host bridge",
        0x0601 => "ISA bridge",
        0x0604 => "PCI bridge",
        0x0680 => "Bridge",
        0x0700 => "Serial controller",
        0x0780 => "Communication controller",
        0x0800 => "PIC",
        0x0805 => "SD host controller",
        0x0806 => "IOMMU",
        0x0880 => "System peripheral",
        0x0c03 => "USB controller",
        0x0c05 => "SMBus",
        0x0c80 => "Serial bus controller",
        0x0d80 => "Wireless controller",
        0x1080 => "Encryption controller",
        0x1101 => "Performance counters",
        0x1180 => "Signal processing controller",
        0x1200 => "Processing accelerator",
        _ => match class_code >> 16 {
            0x01 => "Mass storage controller",
            0x02 => "Network controller",
            0x03 => "Display controller",
            0x04 => "Multimedia controller",
            0x05 => "Memory controller",
            0x06 => "Bridge",
            0x07 => "Communication controller",
            0x08 => "System peripheral",
            0x0c => "Serial bus controller",
            0x12 => "Processing accelerator",
            0xff => "Unassigned class",
            _ => "Unclassified device",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vfio_driver_names() {
        for name in [
            "vfio-pci",
            "mlx5_vfio_pci",
            "nvgrace-gpu-vfio-pci",
            "hisi_acc_vfio_pci",
        ] {
            assert!(is_vfio_driver(name), "{name}");
        }
        for name in ["nvidia", "vfio", "pci-stub", "vfio-pci2", "vfio_pci_core"] {
            assert!(!is_vfio_driver(name), "{name}");
        }
        assert!(is_dma_safe_driver("pcieport"));
        assert!(is_dma_safe_driver("pci-stub"));
        assert!(!is_dma_safe_driver("snd_hda_intel"));
    }

    #[test]
    fn platform_functions() {
        assert_eq!(
            PlatformFunction::of(0x060100, false),
            Some(PlatformFunction::IsaBridge)
        );
        assert_eq!(
            PlatformFunction::of(0x0c0500, false),
            Some(PlatformFunction::SmBus)
        );
        assert_eq!(
            PlatformFunction::of(0x080600, false),
            Some(PlatformFunction::Iommu)
        );
        assert_eq!(
            PlatformFunction::of(0x060000, false),
            Some(PlatformFunction::HostBridge)
        );
        assert_eq!(
            PlatformFunction::of(0x030000, true),
            Some(PlatformFunction::BootVga)
        );
        assert_eq!(PlatformFunction::of(0x030000, false), None);
        assert_eq!(PlatformFunction::of(0x030200, false), None);
        assert_eq!(PlatformFunction::of(0x060400, false), None);
        assert_eq!(PlatformFunction::of(0x050200, false), None); // CXL memory: passable
        assert_eq!(PlatformFunction::SmBus.as_str(), "smbus");
        assert_eq!(
            PlatformFunction::root_complex(0x088000, true, false),
            Some(PlatformFunction::RootComplexPeripheral)
        );
        assert_eq!(PlatformFunction::root_complex(0x088000, true, true), None); // ioatdma
        assert_eq!(PlatformFunction::root_complex(0x088000, false, false), None); // behind a port
        assert_eq!(PlatformFunction::root_complex(0x020000, true, false), None);
    }

    #[test]
    fn class_names() {
        assert_eq!(class_name(0x030200), "3D controller");
        assert_eq!(class_name(0x068000), "Bridge");
        assert_eq!(class_name(0x12ff00), "Processing accelerator");
        assert_eq!(class_name(0xff0000), "Unassigned class");
        assert_eq!(class_name(0xee0000), "Unclassified device");
    }
}
