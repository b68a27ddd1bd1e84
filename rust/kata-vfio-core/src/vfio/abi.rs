//! The kernel ABI this crate speaks: `#[repr(C)]` copies of the structs in `<linux/vfio.h>`
//! and `<linux/iommufd.h>`, their ioctl numbers and the constants used with them.
//!
//! Everything here is data. [`layout`] lists every size, field offset, ioctl number and
//! constant, so a test can compile the system headers and compare them one by one.

use std::mem::{offset_of, size_of};

use rustix::ioctl::Opcode;

/// The ioctl type byte of VFIO and iommufd (`';'`).
pub const VFIO_TYPE: u8 = b';';
/// First VFIO ioctl number.
pub const VFIO_BASE: u8 = 100;
/// First iommufd ioctl number.
pub const IOMMUFD_CMD_BASE: u8 = 0x80;

/// `_IO(';', n)`: VFIO encodes no size or direction even for pointer arguments.
const fn io(nr: u8) -> Opcode {
    rustix::ioctl::opcode::none(VFIO_TYPE, nr)
}

/// VFIO ioctl numbers (`_IO(';', 100 + n)`). The same numbers mean different things on a
/// container fd and on a device fd (0x3b70..0x3b72).
pub mod op {
    use super::{io, Opcode, IOMMUFD_CMD_BASE, VFIO_BASE};

    pub const VFIO_GET_API_VERSION: Opcode = io(VFIO_BASE);
    pub const VFIO_CHECK_EXTENSION: Opcode = io(VFIO_BASE + 1);
    pub const VFIO_SET_IOMMU: Opcode = io(VFIO_BASE + 2);
    pub const VFIO_GROUP_GET_STATUS: Opcode = io(VFIO_BASE + 3);
    pub const VFIO_GROUP_SET_CONTAINER: Opcode = io(VFIO_BASE + 4);
    pub const VFIO_GROUP_UNSET_CONTAINER: Opcode = io(VFIO_BASE + 5);
    pub const VFIO_GROUP_GET_DEVICE_FD: Opcode = io(VFIO_BASE + 6);
    pub const VFIO_DEVICE_GET_INFO: Opcode = io(VFIO_BASE + 7);
    pub const VFIO_DEVICE_GET_REGION_INFO: Opcode = io(VFIO_BASE + 8);
    pub const VFIO_DEVICE_GET_IRQ_INFO: Opcode = io(VFIO_BASE + 9);
    pub const VFIO_DEVICE_RESET: Opcode = io(VFIO_BASE + 11);
    pub const VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: Opcode = io(VFIO_BASE + 12);
    pub const VFIO_IOMMU_GET_INFO: Opcode = io(VFIO_BASE + 12);
    pub const VFIO_IOMMU_MAP_DMA: Opcode = io(VFIO_BASE + 13);
    pub const VFIO_IOMMU_UNMAP_DMA: Opcode = io(VFIO_BASE + 14);
    pub const VFIO_DEVICE_BIND_IOMMUFD: Opcode = io(VFIO_BASE + 18);
    pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: Opcode = io(VFIO_BASE + 19);
    pub const VFIO_DEVICE_DETACH_IOMMUFD_PT: Opcode = io(VFIO_BASE + 20);

    pub const IOMMU_DESTROY: Opcode = io(IOMMUFD_CMD_BASE);
    pub const IOMMU_IOAS_ALLOC: Opcode = io(IOMMUFD_CMD_BASE + 1);
    pub const IOMMU_IOAS_IOVA_RANGES: Opcode = io(IOMMUFD_CMD_BASE + 4);
    pub const IOMMU_IOAS_MAP: Opcode = io(IOMMUFD_CMD_BASE + 5);
    pub const IOMMU_IOAS_UNMAP: Opcode = io(IOMMUFD_CMD_BASE + 6);
    pub const IOMMU_OPTION: Opcode = io(IOMMUFD_CMD_BASE + 7);
}

/// `VFIO_GET_API_VERSION` answers this on every kernel so far.
pub const VFIO_API_VERSION: i32 = 0;

// IOMMU types for VFIO_CHECK_EXTENSION / VFIO_SET_IOMMU.
pub const VFIO_TYPE1_IOMMU: u32 = 1;
pub const VFIO_SPAPR_TCE_IOMMU: u32 = 2;
pub const VFIO_TYPE1V2_IOMMU: u32 = 3;
pub const VFIO_DMA_CC_IOMMU: u32 = 4;
pub const VFIO_EEH: u32 = 5;
pub const VFIO_TYPE1_NESTING_IOMMU: u32 = 6;
pub const VFIO_SPAPR_TCE_V2_IOMMU: u32 = 7;
pub const VFIO_NOIOMMU_IOMMU: u32 = 8;
pub const VFIO_UNMAP_ALL: u32 = 9;
pub const VFIO_UPDATE_VADDR: u32 = 10;

pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1 << 0;
pub const VFIO_GROUP_FLAGS_CONTAINER_SET: u32 = 1 << 1;

pub const VFIO_DEVICE_FLAGS_RESET: u32 = 1 << 0;
pub const VFIO_DEVICE_FLAGS_PCI: u32 = 1 << 1;
pub const VFIO_DEVICE_FLAGS_CAPS: u32 = 1 << 7;

pub const VFIO_REGION_INFO_FLAG_READ: u32 = 1 << 0;
pub const VFIO_REGION_INFO_FLAG_WRITE: u32 = 1 << 1;
pub const VFIO_REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
pub const VFIO_REGION_INFO_FLAG_CAPS: u32 = 1 << 3;
pub const VFIO_REGION_INFO_CAP_SPARSE_MMAP: u16 = 1;
pub const VFIO_REGION_INFO_CAP_TYPE: u16 = 2;
pub const VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: u16 = 3;

pub const VFIO_IRQ_INFO_EVENTFD: u32 = 1 << 0;
pub const VFIO_IRQ_INFO_MASKABLE: u32 = 1 << 1;
pub const VFIO_IRQ_INFO_AUTOMASKED: u32 = 1 << 2;
pub const VFIO_IRQ_INFO_NORESIZE: u32 = 1 << 3;

pub const VFIO_PCI_HOT_RESET_FLAG_DEV_ID: u32 = 1 << 0;
pub const VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED: u32 = 1 << 1;

pub const VFIO_IOMMU_INFO_PGSIZES: u32 = 1 << 0;
pub const VFIO_IOMMU_INFO_CAPS: u32 = 1 << 1;
pub const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: u16 = 1;
pub const VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: u16 = 3;
pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1 << 0;
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;

// PCI region and IRQ indexes (enums in the header).
pub const VFIO_PCI_BAR0_REGION_INDEX: u32 = 0;
pub const VFIO_PCI_ROM_REGION_INDEX: u32 = 6;
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;
pub const VFIO_PCI_VGA_REGION_INDEX: u32 = 8;
pub const VFIO_PCI_NUM_REGIONS: u32 = 9;
pub const VFIO_PCI_INTX_IRQ_INDEX: u32 = 0;
pub const VFIO_PCI_MSI_IRQ_INDEX: u32 = 1;
pub const VFIO_PCI_MSIX_IRQ_INDEX: u32 = 2;
pub const VFIO_PCI_ERR_IRQ_INDEX: u32 = 3;
pub const VFIO_PCI_REQ_IRQ_INDEX: u32 = 4;
pub const VFIO_PCI_NUM_IRQS: u32 = 5;

pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
pub const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;
pub const IOMMU_OPTION_RLIMIT_MODE: u32 = 0;
pub const IOMMU_OPTION_HUGE_PAGES: u32 = 1;
pub const IOMMU_OPTION_OP_SET: u16 = 0;
pub const IOMMU_OPTION_OP_GET: u16 = 1;

/// `struct vfio_info_cap_header`: the head of every capability in a chain.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioInfoCapHeader {
    pub id: u16,
    pub version: u16,
    pub next: u32,
}

/// `struct vfio_group_status`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioGroupStatus {
    pub argsz: u32,
    pub flags: u32,
}

/// `struct vfio_device_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioDeviceInfo {
    pub argsz: u32,
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
    pub cap_offset: u32,
    pub pad: u32,
}

/// `struct vfio_region_info` (a capability chain may follow when `argsz` is larger).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioRegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

/// `struct vfio_region_sparse_mmap_area`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioRegionSparseMmapArea {
    pub offset: u64,
    pub size: u64,
}

/// `struct vfio_region_info_cap_sparse_mmap` (areas follow).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioRegionInfoCapSparseMmap {
    pub header: VfioInfoCapHeader,
    pub nr_areas: u32,
    pub reserved: u32,
}

/// `struct vfio_region_info_cap_type`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioRegionInfoCapType {
    pub header: VfioInfoCapHeader,
    pub region_type: u32,
    pub subtype: u32,
}

/// `struct vfio_irq_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioIrqInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub count: u32,
}

/// `struct vfio_pci_dependent_device`; `id` is a group id, or a devid when the info has
/// `VFIO_PCI_HOT_RESET_FLAG_DEV_ID` (the header's anonymous union).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioPciDependentDevice {
    pub id: u32,
    pub segment: u16,
    pub bus: u8,
    pub devfn: u8,
}

/// `struct vfio_pci_hot_reset_info` (devices follow).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioPciHotResetInfo {
    pub argsz: u32,
    pub flags: u32,
    pub count: u32,
}

/// `struct vfio_iommu_type1_info` (a capability chain may follow).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioIommuType1Info {
    pub argsz: u32,
    pub flags: u32,
    pub iova_pgsizes: u64,
    pub cap_offset: u32,
    pub pad: u32,
}

/// `struct vfio_iova_range`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioIovaRange {
    pub start: u64,
    pub end: u64,
}

/// `struct vfio_iommu_type1_info_cap_iova_range` (ranges follow).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioIommuType1InfoCapIovaRange {
    pub header: VfioInfoCapHeader,
    pub nr_iovas: u32,
    pub reserved: u32,
}

/// `struct vfio_iommu_type1_info_dma_avail`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioIommuType1InfoDmaAvail {
    pub header: VfioInfoCapHeader,
    pub avail: u32,
}

/// `struct vfio_iommu_type1_dma_map`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioIommuType1DmaMap {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

/// `struct vfio_iommu_type1_dma_unmap` (no trailing data used).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioIommuType1DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}

/// `struct vfio_device_bind_iommufd` in its original 16-byte form, which every kernel with
/// the cdev accepts (newer kernels add a VF-token pointer behind a flag).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioDeviceBindIommufd {
    pub argsz: u32,
    pub flags: u32,
    pub iommufd: i32,
    pub out_devid: u32,
}

/// `struct vfio_device_attach_iommufd_pt` (12-byte form, no PASID).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioDeviceAttachIommufdPt {
    pub argsz: u32,
    pub flags: u32,
    pub pt_id: u32,
}

/// `struct vfio_device_detach_iommufd_pt` (8-byte form, no PASID).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioDeviceDetachIommufdPt {
    pub argsz: u32,
    pub flags: u32,
}

/// `struct iommu_destroy`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuDestroy {
    pub size: u32,
    pub id: u32,
}

/// `struct iommu_ioas_alloc`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasAlloc {
    pub size: u32,
    pub flags: u32,
    pub out_ioas_id: u32,
}

/// `struct iommu_iova_range` (`last` is inclusive).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIovaRange {
    pub start: u64,
    pub last: u64,
}

/// `struct iommu_ioas_iova_ranges`; `allowed_iovas` points at an array of
/// [`IommuIovaRange`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasIovaRanges {
    pub size: u32,
    pub ioas_id: u32,
    pub num_iovas: u32,
    pub reserved: u32,
    pub allowed_iovas: u64,
    pub out_iova_alignment: u64,
}

/// `struct iommu_ioas_map`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasMap {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub reserved: u32,
    pub user_va: u64,
    pub length: u64,
    pub iova: u64,
}

/// `struct iommu_ioas_unmap`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasUnmap {
    pub size: u32,
    pub ioas_id: u32,
    pub iova: u64,
    pub length: u64,
}

/// `struct iommu_option`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuOption {
    pub size: u32,
    pub option_id: u32,
    pub op: u16,
    pub reserved: u16,
    pub object_id: u32,
    pub val64: u64,
}

/// The `argsz`/`size` value of a struct: its size as the kernel checks it.
pub fn argsz<T>() -> u32 {
    // The structs above are all a few dozen bytes.
    u32::try_from(size_of::<T>()).unwrap_or(u32::MAX)
}

// The sizes the kernel expects, checked at compile time on every target.
const _: () = {
    assert!(size_of::<VfioInfoCapHeader>() == 8);
    assert!(size_of::<VfioGroupStatus>() == 8);
    assert!(size_of::<VfioDeviceInfo>() == 24);
    assert!(size_of::<VfioRegionInfo>() == 32);
    assert!(size_of::<VfioRegionSparseMmapArea>() == 16);
    assert!(size_of::<VfioRegionInfoCapSparseMmap>() == 16);
    assert!(size_of::<VfioRegionInfoCapType>() == 16);
    assert!(size_of::<VfioIrqInfo>() == 16);
    assert!(size_of::<VfioPciDependentDevice>() == 8);
    assert!(size_of::<VfioPciHotResetInfo>() == 12);
    assert!(size_of::<VfioIommuType1Info>() == 24);
    assert!(size_of::<VfioIovaRange>() == 16);
    assert!(size_of::<VfioIommuType1InfoCapIovaRange>() == 16);
    assert!(size_of::<VfioIommuType1InfoDmaAvail>() == 12);
    assert!(size_of::<VfioIommuType1DmaMap>() == 32);
    assert!(size_of::<VfioIommuType1DmaUnmap>() == 24);
    assert!(size_of::<VfioDeviceBindIommufd>() == 16);
    assert!(size_of::<VfioDeviceAttachIommufdPt>() == 12);
    assert!(size_of::<VfioDeviceDetachIommufdPt>() == 8);
    assert!(size_of::<IommuDestroy>() == 8);
    assert!(size_of::<IommuIoasAlloc>() == 12);
    assert!(size_of::<IommuIovaRange>() == 16);
    assert!(size_of::<IommuIoasIovaRanges>() == 32);
    assert!(size_of::<IommuIoasMap>() == 40);
    assert!(size_of::<IommuIoasUnmap>() == 24);
    assert!(size_of::<IommuOption>() == 24);
};

/// Which system header declares an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// `<linux/vfio.h>`
    Vfio,
    /// `<linux/iommufd.h>`
    Iommufd,
}

impl Header {
    /// The include name, e.g. `linux/vfio.h`.
    pub fn include(self) -> &'static str {
        match self {
            Self::Vfio => "linux/vfio.h",
            Self::Iommufd => "linux/iommufd.h",
        }
    }
}

/// One field: its C name, offset and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldLayout {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// One struct as this crate lays it out, under its C name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructLayout {
    pub name: &'static str,
    pub header: Header,
    pub size: usize,
    pub fields: Vec<FieldLayout>,
}

/// A named number (ioctl or constant) and the header that defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedValue {
    pub name: &'static str,
    pub header: Header,
    pub value: u64,
}

/// Everything this crate assumes about the kernel ABI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbiLayout {
    pub structs: Vec<StructLayout>,
    pub ioctls: Vec<NamedValue>,
    pub constants: Vec<NamedValue>,
}

/// The size of a field, found through a field accessor (there is no `size_of_field`).
fn field_size<S, F>(_accessor: fn(&S) -> &F) -> usize {
    size_of::<F>()
}

macro_rules! layout {
    ($header:ident, $ty:ty, $cname:literal, [$($field:ident => $fname:literal),* $(,)?]) => {
        StructLayout {
            name: $cname,
            header: Header::$header,
            size: size_of::<$ty>(),
            fields: vec![$(FieldLayout {
                name: $fname,
                offset: offset_of!($ty, $field),
                size: field_size(|s: &$ty| &s.$field),
            }),*],
        }
    };
}

macro_rules! named {
    ($header:ident, [$($name:ident),* $(,)?]) => {
        vec![$(NamedValue {
            name: stringify!($name),
            header: Header::$header,
            value: u64::from($name),
        }),*]
    };
    ($header:ident, op [$($name:ident),* $(,)?]) => {
        vec![$(NamedValue {
            name: stringify!($name),
            header: Header::$header,
            value: u64::from(op::$name),
        }),*]
    };
}

/// Every struct, ioctl number and constant this crate uses, under the kernel's names.
#[allow(clippy::too_many_lines)] // one flat table is the clearest form
pub fn layout() -> AbiLayout {
    let structs = vec![
        layout!(Vfio, VfioInfoCapHeader, "vfio_info_cap_header",
            [id => "id", version => "version", next => "next"]),
        layout!(Vfio, VfioGroupStatus, "vfio_group_status", [argsz => "argsz", flags => "flags"]),
        layout!(Vfio, VfioDeviceInfo, "vfio_device_info", [
            argsz => "argsz", flags => "flags", num_regions => "num_regions",
            num_irqs => "num_irqs", cap_offset => "cap_offset", pad => "pad"]),
        layout!(Vfio, VfioRegionInfo, "vfio_region_info", [
            argsz => "argsz", flags => "flags", index => "index", cap_offset => "cap_offset",
            size => "size", offset => "offset"]),
        layout!(Vfio, VfioRegionSparseMmapArea, "vfio_region_sparse_mmap_area",
            [offset => "offset", size => "size"]),
        layout!(Vfio, VfioRegionInfoCapSparseMmap, "vfio_region_info_cap_sparse_mmap",
            [header => "header", nr_areas => "nr_areas", reserved => "reserved"]),
        layout!(Vfio, VfioRegionInfoCapType, "vfio_region_info_cap_type",
            [header => "header", region_type => "type", subtype => "subtype"]),
        layout!(Vfio, VfioIrqInfo, "vfio_irq_info",
            [argsz => "argsz", flags => "flags", index => "index", count => "count"]),
        layout!(Vfio, VfioPciDependentDevice, "vfio_pci_dependent_device",
            [id => "group_id", id => "devid", segment => "segment", bus => "bus", devfn => "devfn"]),
        layout!(Vfio, VfioPciHotResetInfo, "vfio_pci_hot_reset_info",
            [argsz => "argsz", flags => "flags", count => "count"]),
        layout!(Vfio, VfioIommuType1Info, "vfio_iommu_type1_info", [
            argsz => "argsz", flags => "flags", iova_pgsizes => "iova_pgsizes",
            cap_offset => "cap_offset", pad => "pad"]),
        layout!(Vfio, VfioIovaRange, "vfio_iova_range", [start => "start", end => "end"]),
        layout!(Vfio, VfioIommuType1InfoCapIovaRange, "vfio_iommu_type1_info_cap_iova_range",
            [header => "header", nr_iovas => "nr_iovas", reserved => "reserved"]),
        layout!(Vfio, VfioIommuType1InfoDmaAvail, "vfio_iommu_type1_info_dma_avail",
            [header => "header", avail => "avail"]),
        layout!(Vfio, VfioIommuType1DmaMap, "vfio_iommu_type1_dma_map", [
            argsz => "argsz", flags => "flags", vaddr => "vaddr", iova => "iova", size => "size"]),
        layout!(Vfio, VfioIommuType1DmaUnmap, "vfio_iommu_type1_dma_unmap",
            [argsz => "argsz", flags => "flags", iova => "iova", size => "size"]),
        layout!(Vfio, VfioDeviceBindIommufd, "vfio_device_bind_iommufd", [
            argsz => "argsz", flags => "flags", iommufd => "iommufd", out_devid => "out_devid"]),
        layout!(Vfio, VfioDeviceAttachIommufdPt, "vfio_device_attach_iommufd_pt",
            [argsz => "argsz", flags => "flags", pt_id => "pt_id"]),
        layout!(Vfio, VfioDeviceDetachIommufdPt, "vfio_device_detach_iommufd_pt",
            [argsz => "argsz", flags => "flags"]),
        layout!(Iommufd, IommuDestroy, "iommu_destroy", [size => "size", id => "id"]),
        layout!(Iommufd, IommuIoasAlloc, "iommu_ioas_alloc",
            [size => "size", flags => "flags", out_ioas_id => "out_ioas_id"]),
        layout!(Iommufd, IommuIovaRange, "iommu_iova_range", [start => "start", last => "last"]),
        layout!(Iommufd, IommuIoasIovaRanges, "iommu_ioas_iova_ranges", [
            size => "size", ioas_id => "ioas_id", num_iovas => "num_iovas",
            reserved => "__reserved", allowed_iovas => "allowed_iovas",
            out_iova_alignment => "out_iova_alignment"]),
        layout!(Iommufd, IommuIoasMap, "iommu_ioas_map", [
            size => "size", flags => "flags", ioas_id => "ioas_id", reserved => "__reserved",
            user_va => "user_va", length => "length", iova => "iova"]),
        layout!(Iommufd, IommuIoasUnmap, "iommu_ioas_unmap",
            [size => "size", ioas_id => "ioas_id", iova => "iova", length => "length"]),
        layout!(Iommufd, IommuOption, "iommu_option", [
            size => "size", option_id => "option_id", op => "op", reserved => "__reserved",
            object_id => "object_id", val64 => "val64"]),
    ];
    let mut ioctls = named!(Vfio, op [
        VFIO_GET_API_VERSION, VFIO_CHECK_EXTENSION, VFIO_SET_IOMMU, VFIO_GROUP_GET_STATUS,
        VFIO_GROUP_SET_CONTAINER, VFIO_GROUP_UNSET_CONTAINER, VFIO_GROUP_GET_DEVICE_FD,
        VFIO_DEVICE_GET_INFO, VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_GET_IRQ_INFO,
        VFIO_DEVICE_RESET, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, VFIO_IOMMU_GET_INFO,
        VFIO_IOMMU_MAP_DMA, VFIO_IOMMU_UNMAP_DMA, VFIO_DEVICE_BIND_IOMMUFD,
        VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_DEVICE_DETACH_IOMMUFD_PT,
    ]);
    ioctls.extend(named!(Iommufd, op [
        IOMMU_DESTROY, IOMMU_IOAS_ALLOC, IOMMU_IOAS_IOVA_RANGES, IOMMU_IOAS_MAP,
        IOMMU_IOAS_UNMAP, IOMMU_OPTION,
    ]));
    // Two kernel names have a lower-case `v`, which Rust constants cannot spell.
    let mut constants = vec![
        NamedValue {
            name: "VFIO_API_VERSION",
            header: Header::Vfio,
            value: u64::from(VFIO_API_VERSION.unsigned_abs()),
        },
        NamedValue {
            name: "VFIO_TYPE1v2_IOMMU",
            header: Header::Vfio,
            value: u64::from(VFIO_TYPE1V2_IOMMU),
        },
        NamedValue {
            name: "VFIO_SPAPR_TCE_v2_IOMMU",
            header: Header::Vfio,
            value: u64::from(VFIO_SPAPR_TCE_V2_IOMMU),
        },
    ];
    constants.extend(named!(
        Vfio,
        [
            VFIO_TYPE1_IOMMU,
            VFIO_SPAPR_TCE_IOMMU,
            VFIO_DMA_CC_IOMMU,
            VFIO_EEH,
            VFIO_TYPE1_NESTING_IOMMU,
            VFIO_NOIOMMU_IOMMU,
            VFIO_UNMAP_ALL,
            VFIO_UPDATE_VADDR,
            VFIO_GROUP_FLAGS_VIABLE,
            VFIO_GROUP_FLAGS_CONTAINER_SET,
            VFIO_DEVICE_FLAGS_RESET,
            VFIO_DEVICE_FLAGS_PCI,
            VFIO_DEVICE_FLAGS_CAPS,
            VFIO_REGION_INFO_FLAG_READ,
            VFIO_REGION_INFO_FLAG_WRITE,
            VFIO_REGION_INFO_FLAG_MMAP,
            VFIO_REGION_INFO_FLAG_CAPS,
            VFIO_REGION_INFO_CAP_SPARSE_MMAP,
            VFIO_REGION_INFO_CAP_TYPE,
            VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
            VFIO_IRQ_INFO_EVENTFD,
            VFIO_IRQ_INFO_MASKABLE,
            VFIO_IRQ_INFO_AUTOMASKED,
            VFIO_IRQ_INFO_NORESIZE,
            VFIO_PCI_HOT_RESET_FLAG_DEV_ID,
            VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED,
            VFIO_IOMMU_INFO_PGSIZES,
            VFIO_IOMMU_INFO_CAPS,
            VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
            VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
            VFIO_DMA_MAP_FLAG_READ,
            VFIO_DMA_MAP_FLAG_WRITE,
            VFIO_PCI_BAR0_REGION_INDEX,
            VFIO_PCI_ROM_REGION_INDEX,
            VFIO_PCI_CONFIG_REGION_INDEX,
            VFIO_PCI_VGA_REGION_INDEX,
            VFIO_PCI_NUM_REGIONS,
            VFIO_PCI_INTX_IRQ_INDEX,
            VFIO_PCI_MSI_IRQ_INDEX,
            VFIO_PCI_MSIX_IRQ_INDEX,
            VFIO_PCI_ERR_IRQ_INDEX,
            VFIO_PCI_REQ_IRQ_INDEX,
            VFIO_PCI_NUM_IRQS,
        ]
    ));
    constants.extend(named!(
        Iommufd,
        [
            IOMMU_IOAS_MAP_FIXED_IOVA,
            IOMMU_IOAS_MAP_WRITEABLE,
            IOMMU_IOAS_MAP_READABLE,
            IOMMU_OPTION_RLIMIT_MODE,
            IOMMU_OPTION_HUGE_PAGES,
            IOMMU_OPTION_OP_SET,
            IOMMU_OPTION_OP_GET,
        ]
    ));
    AbiLayout {
        structs,
        ioctls,
        constants,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_measured_values() {
        // lab.md: _IO(';', 100 + n) = 0x3b64 + n; iommufd from _IO(';', 0x80).
        assert_eq!(op::VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(op::VFIO_GROUP_GET_STATUS, 0x3b67);
        assert_eq!(op::VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(op::VFIO_DEVICE_RESET, 0x3b6f);
        assert_eq!(op::VFIO_IOMMU_UNMAP_DMA, 0x3b72);
        assert_eq!(op::VFIO_DEVICE_BIND_IOMMUFD, 0x3b76);
        assert_eq!(op::VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
        assert_eq!(op::IOMMU_IOAS_ALLOC, 0x3b81);
        assert_eq!(op::IOMMU_IOAS_IOVA_RANGES, 0x3b84);
        assert_eq!(op::IOMMU_IOAS_MAP, 0x3b85);
        assert_eq!(op::IOMMU_IOAS_UNMAP, 0x3b86);
        assert_eq!(op::IOMMU_OPTION, 0x3b87);
    }

    #[test]
    fn layout_lists_every_field_once_in_order() {
        let table = layout();
        for s in &table.structs {
            let mut last = 0;
            for f in &s.fields {
                assert!(f.offset >= last, "{}.{} goes backwards", s.name, f.name);
                assert!(
                    f.offset + f.size <= s.size,
                    "{}.{} overflows",
                    s.name,
                    f.name
                );
                last = f.offset;
            }
        }
        let region = table
            .structs
            .iter()
            .find(|s| s.name == "vfio_region_info")
            .expect("vfio_region_info is listed");
        let size = region
            .fields
            .iter()
            .find(|f| f.name == "size")
            .expect("size");
        assert_eq!((size.offset, size.size), (16, 8));
    }
}
