//! The VFIO device fd, however it was obtained (`VFIO_GROUP_GET_DEVICE_FD` on a group, or
//! the cdev bound to an iommufd): device, region and IRQ info, reset, hot-reset info.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::abi::{self, VfioDeviceInfo, VfioIrqInfo, VfioPciHotResetInfo, VfioRegionInfo};
use super::sys::{self, Plain, TailBuf};
use super::{iommufd::IommuFd, vfio_error, EINVAL, ENOSPC};
use crate::bdf::Bdf;
use crate::error::Result;

/// `VFIO_DEVICE_GET_INFO`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceInfo {
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
}

impl DeviceInfo {
    /// The device supports `VFIO_DEVICE_RESET`.
    pub fn can_reset(&self) -> bool {
        self.flags & abi::VFIO_DEVICE_FLAGS_RESET != 0
    }

    /// A vfio-pci device.
    pub fn is_pci(&self) -> bool {
        self.flags & abi::VFIO_DEVICE_FLAGS_PCI != 0
    }
}

/// One capability of a region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegionCap {
    /// Only these (offset, size) areas of the region may be mmapped.
    SparseMmap(Vec<(u64, u64)>),
    /// A device-specific region type.
    Type { region_type: u32, subtype: u32 },
    /// The MSI-X table may be mmapped with the rest of its BAR.
    MsixMappable,
    /// A capability this crate does not decode.
    Other { id: u16, version: u16 },
}

/// `VFIO_DEVICE_GET_REGION_INFO` for one region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegionInfo {
    pub index: u32,
    pub flags: u32,
    pub size: u64,
    /// Offset of the region in the device fd (for pread/pwrite/mmap).
    pub offset: u64,
    pub caps: Vec<RegionCap>,
}

impl RegionInfo {
    pub fn readable(&self) -> bool {
        self.flags & abi::VFIO_REGION_INFO_FLAG_READ != 0
    }
    pub fn writable(&self) -> bool {
        self.flags & abi::VFIO_REGION_INFO_FLAG_WRITE != 0
    }
    pub fn mmap(&self) -> bool {
        self.flags & abi::VFIO_REGION_INFO_FLAG_MMAP != 0
    }
}

/// `VFIO_DEVICE_GET_IRQ_INFO` for one index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IrqInfo {
    pub index: u32,
    pub flags: u32,
    pub count: u32,
}

/// A device a hot (bus/slot) reset would also reset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HotResetDevice {
    pub bdf: Bdf,
    /// The IOMMU group, or with `dev_id` the iommufd devid (0 owned, -1 not owned).
    pub id: i64,
}

/// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HotResetInfo {
    pub flags: u32,
    pub devices: Vec<HotResetDevice>,
}

impl HotResetInfo {
    /// `ids` are iommufd devids rather than group numbers.
    pub fn dev_id(&self) -> bool {
        self.flags & abi::VFIO_PCI_HOT_RESET_FLAG_DEV_ID != 0
    }
}

/// An open VFIO device.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    name: String,
    path: PathBuf,
}

impl Device {
    /// Wraps a device fd. `name` is what messages call it (the BDF), `path` the node or the
    /// group it came from.
    pub fn from_fd(fd: OwnedFd, name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            fd,
            name: name.into(),
            path: path.into(),
        }
    }

    /// Opens a vfio device cdev `<dev_root>/vfio/devices/<cdev>` (`cdev` is `vfioN`). The fd
    /// is usable after [`Device::bind_iommufd`] and [`Device::attach_ioas`].
    pub fn open_cdev(dev_root: &Path, cdev: &str) -> Result<Self> {
        let number = cdev.strip_prefix("vfio").unwrap_or_default();
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || number.len() > 10 {
            return Err(crate::Error::invalid(
                "vfio cdev name",
                cdev,
                "expected vfioN, e.g. vfio0",
            ));
        }
        let (fd, path) = super::open_node("open cdev", dev_root.join("vfio/devices").join(cdev))?;
        Ok(Self::from_fd(fd, cdev, path))
    }

    /// What messages call the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node or group it was opened through.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives up the fd (for handing to QEMU).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    fn err(&self, op: &'static str, e: io::Error) -> crate::Error {
        vfio_error(op, &self.path, e)
    }

    /// `VFIO_DEVICE_GET_INFO`.
    pub fn info(&self) -> Result<DeviceInfo> {
        let mut arg = VfioDeviceInfo::default();
        sys::call(self.fd.as_fd(), &mut arg).map_err(|e| self.err("VFIO_DEVICE_GET_INFO", e))?;
        Ok(DeviceInfo {
            flags: arg.flags,
            num_regions: arg.num_regions,
            num_irqs: arg.num_irqs,
        })
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` for `index`, with its capabilities.
    pub fn region_info(&self, index: u32) -> Result<RegionInfo> {
        let op = "VFIO_DEVICE_GET_REGION_INFO";
        let head = VfioRegionInfo {
            index,
            ..Default::default()
        };
        let base = std::mem::size_of::<VfioRegionInfo>();
        let mut buf =
            sys::call_with_tail(self.fd.as_fd(), head, base).map_err(|e| self.err(op, e))?;
        let mut info: VfioRegionInfo = buf.read(0).unwrap_or_default();
        // The kernel raises argsz when the capabilities do not fit; ask again with room.
        if info.flags & abi::VFIO_REGION_INFO_FLAG_CAPS != 0 && info.argsz as usize > base {
            buf = sys::call_with_tail(self.fd.as_fd(), head, info.argsz as usize)
                .map_err(|e| self.err(op, e))?;
            info = buf.read(0).unwrap_or_default();
        }
        let caps = if info.flags & abi::VFIO_REGION_INFO_FLAG_CAPS == 0 {
            Vec::new()
        } else {
            region_caps(&buf, info.cap_offset)
        };
        Ok(RegionInfo {
            index,
            flags: info.flags,
            size: info.size,
            offset: info.offset,
            caps,
        })
    }

    /// Every region the device has (indexes the kernel refuses with EINVAL, such as the VGA
    /// region of a non-VGA device, are left out).
    pub fn regions(&self) -> Result<Vec<RegionInfo>> {
        let info = self.info()?;
        let mut out = Vec::new();
        for index in 0..info.num_regions {
            match self.region_info(index) {
                Ok(region) => out.push(region),
                Err(e) if e.errno() == Some(EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// `VFIO_DEVICE_GET_IRQ_INFO` for `index`.
    pub fn irq_info(&self, index: u32) -> Result<IrqInfo> {
        let mut arg = VfioIrqInfo {
            index,
            ..Default::default()
        };
        sys::call(self.fd.as_fd(), &mut arg)
            .map_err(|e| self.err("VFIO_DEVICE_GET_IRQ_INFO", e))?;
        Ok(IrqInfo {
            index,
            flags: arg.flags,
            count: arg.count,
        })
    }

    /// Every IRQ index the device reports.
    pub fn irqs(&self) -> Result<Vec<IrqInfo>> {
        let info = self.info()?;
        (0..info.num_irqs).map(|i| self.irq_info(i)).collect()
    }

    /// `VFIO_DEVICE_RESET` (only when [`DeviceInfo::can_reset`]).
    pub fn reset(&self) -> Result<()> {
        sys::device_reset(self.fd.as_fd()).map_err(|e| self.err("VFIO_DEVICE_RESET", e))
    }

    /// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`: the devices a bus or slot reset would touch.
    pub fn hot_reset_info(&self) -> Result<HotResetInfo> {
        let op = "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO";
        let head_len = std::mem::size_of::<VfioPciHotResetInfo>();
        let entry = std::mem::size_of::<abi::VfioPciDependentDevice>();
        let mut room = 8usize;
        // The kernel answers ENOSPC (and the count) while the array is too small.
        for _ in 0..4 {
            let len = head_len + room * entry;
            match sys::call_with_tail(self.fd.as_fd(), VfioPciHotResetInfo::default(), len) {
                Ok(buf) => return Ok(parse_hot_reset(&buf)),
                Err(e) if e.raw_os_error() == Some(ENOSPC) => room *= 8,
                Err(e) => return Err(self.err(op, e)),
            }
        }
        Err(self.err(op, io::Error::from_raw_os_error(ENOSPC)))
    }

    /// Reads `len` bytes of region `index` at `offset` within it (e.g. config space, region 7).
    pub fn read_region(&self, region: &RegionInfo, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset.checked_add(len as u64);
        if !end.is_some_and(|end| end <= region.size) {
            return Err(crate::Error::invalid(
                "region range",
                format!("{offset}+{len}"),
                format!(
                    "outside region {} of {:#x} bytes",
                    region.index, region.size
                ),
            ));
        }
        let mut buf = vec![0u8; len];
        let n = rustix::io::pread(self.fd.as_fd(), &mut buf, region.offset + offset)
            .map_err(|e| self.err("pread region", e.into()))?;
        buf.truncate(n);
        Ok(buf)
    }

    /// `VFIO_DEVICE_BIND_IOMMUFD` (cdev fds only); returns the devid.
    pub fn bind_iommufd(&self, iommufd: &IommuFd) -> Result<u32> {
        sys::device_bind_iommufd(self.fd.as_fd(), iommufd.as_fd())
            .map_err(|e| self.err("VFIO_DEVICE_BIND_IOMMUFD", e))
    }

    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` to an IOAS (or HWPT); returns the attached pt id.
    pub fn attach_ioas(&self, pt_id: u32) -> Result<u32> {
        let mut arg = abi::VfioDeviceAttachIommufdPt {
            pt_id,
            ..Default::default()
        };
        sys::call(self.fd.as_fd(), &mut arg)
            .map_err(|e| self.err("VFIO_DEVICE_ATTACH_IOMMUFD_PT", e))?;
        Ok(arg.pt_id)
    }

    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
    pub fn detach_ioas(&self) -> Result<()> {
        let mut arg = abi::VfioDeviceDetachIommufdPt::default();
        sys::call(self.fd.as_fd(), &mut arg)
            .map(drop)
            .map_err(|e| self.err("VFIO_DEVICE_DETACH_IOMMUFD_PT", e))
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Walks a capability chain (offsets are from the start of the info struct). Stops at a
/// zero `next`, at anything outside the buffer, and at offsets that do not move forward,
/// so a malformed chain cannot loop.
fn cap_chain(buf: &TailBuf, first: u32) -> Vec<(usize, abi::VfioInfoCapHeader)> {
    let mut out = Vec::new();
    let mut offset = first as usize;
    while offset != 0 {
        let Some(header) = buf.read::<abi::VfioInfoCapHeader>(offset) else {
            break;
        };
        out.push((offset, header));
        let next = header.next as usize;
        if next <= offset {
            break;
        }
        offset = next;
    }
    out
}

fn region_caps(buf: &TailBuf, first: u32) -> Vec<RegionCap> {
    cap_chain(buf, first)
        .into_iter()
        .map(|(offset, header)| match header.id {
            abi::VFIO_REGION_INFO_CAP_SPARSE_MMAP => {
                let cap: abi::VfioRegionInfoCapSparseMmap = buf.read(offset).unwrap_or_default();
                let first_area = offset + std::mem::size_of::<abi::VfioRegionInfoCapSparseMmap>();
                let areas =
                    read_array::<abi::VfioRegionSparseMmapArea>(buf, first_area, cap.nr_areas)
                        .into_iter()
                        .map(|a| (a.offset, a.size))
                        .collect();
                RegionCap::SparseMmap(areas)
            }
            abi::VFIO_REGION_INFO_CAP_TYPE => {
                let cap: abi::VfioRegionInfoCapType = buf.read(offset).unwrap_or_default();
                RegionCap::Type {
                    region_type: cap.region_type,
                    subtype: cap.subtype,
                }
            }
            abi::VFIO_REGION_INFO_CAP_MSIX_MAPPABLE => RegionCap::MsixMappable,
            id => RegionCap::Other {
                id,
                version: header.version,
            },
        })
        .collect()
}

/// Reads up to `count` consecutive `T`s from `offset`, stopping at the buffer's end.
pub(crate) fn read_array<T: Plain>(buf: &TailBuf, offset: usize, count: u32) -> Vec<T> {
    let size = std::mem::size_of::<T>();
    (0..count as usize)
        .map_while(|i| buf.read::<T>(offset + i * size))
        .collect()
}

pub(crate) fn caps_of(buf: &TailBuf, first: u32) -> Vec<(usize, abi::VfioInfoCapHeader)> {
    cap_chain(buf, first)
}

fn parse_hot_reset(buf: &TailBuf) -> HotResetInfo {
    let head: VfioPciHotResetInfo = buf.read(0).unwrap_or_default();
    let devices = read_array::<abi::VfioPciDependentDevice>(
        buf,
        std::mem::size_of::<VfioPciHotResetInfo>(),
        head.count,
    )
    .into_iter()
    .map(|d| HotResetDevice {
        bdf: Bdf {
            domain: u32::from(d.segment),
            bus: d.bus,
            device: d.devfn >> 3,
            function: d.devfn & 7,
        },
        id: if head.flags & abi::VFIO_PCI_HOT_RESET_FLAG_DEV_ID != 0 {
            // devids are signed in the ABI: -1 means "not owned".
            i64::from(i32::from_ne_bytes(d.id.to_ne_bytes()))
        } else {
            i64::from(d.id)
        },
    })
    .collect();
    HotResetInfo {
        flags: head.flags,
        devices,
    }
}
