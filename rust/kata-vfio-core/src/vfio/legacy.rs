//! The legacy VFIO model: a container (`/dev/vfio/vfio`, one IOMMU context) and groups
//! (`/dev/vfio/<N>`) attached to it; device fds come from a group.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::abi::{self, VfioGroupStatus, VfioIommuType1Info};
use super::device::{caps_of, read_array, Device};
use super::dma::DmaBuffer;
use super::{open_node, sys, vfio_error};
use crate::bdf::Bdf;
use crate::error::{Error, Result};

/// The IOMMU types `VFIO_CHECK_EXTENSION` is asked about, with their header names.
pub const EXTENSIONS: [(u32, &str); 10] = [
    (abi::VFIO_TYPE1_IOMMU, "TYPE1"),
    (abi::VFIO_SPAPR_TCE_IOMMU, "SPAPR_TCE"),
    (abi::VFIO_TYPE1V2_IOMMU, "TYPE1v2"),
    (abi::VFIO_DMA_CC_IOMMU, "DMA_CC"),
    (abi::VFIO_EEH, "EEH"),
    (abi::VFIO_TYPE1_NESTING_IOMMU, "TYPE1_NESTING"),
    (abi::VFIO_SPAPR_TCE_V2_IOMMU, "SPAPR_TCE_v2"),
    (abi::VFIO_NOIOMMU_IOMMU, "NOIOMMU"),
    (abi::VFIO_UNMAP_ALL, "UNMAP_ALL"),
    (abi::VFIO_UPDATE_VADDR, "UPDATE_VADDR"),
];

/// `VFIO_IOMMU_GET_INFO` of a type1 container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IommuInfo {
    pub flags: u32,
    /// Bitmap of supported IOMMU page sizes (0x40201000 = 4K, 2M, 1G).
    pub iova_pgsizes: u64,
    /// Usable IOVA ranges, inclusive `(start, end)`, when the kernel reports them.
    pub iova_ranges: Vec<(u64, u64)>,
    /// How many more DMA mappings the container accepts, when reported.
    pub dma_avail: Option<u32>,
}

/// A DMA mapping the container holds, and the buffer it pins.
#[derive(Debug)]
struct Mapping {
    size: u64,
    buffer: Arc<DmaBuffer>,
}

/// An open `/dev/vfio/vfio` container.
///
/// Its DMA mappings cannot outlive their buffers: the container holds each mapped buffer
/// until the range is unmapped, and dropping the container (closing it) unmaps every range
/// it mapped first, because the kernel's container outlives this fd while a group is still
/// attached to it. A range the kernel refuses to unmap keeps its buffer allocated for the
/// life of the process (leaked) rather than freed under the device.
#[derive(Debug)]
pub struct Container {
    fd: OwnedFd,
    path: PathBuf,
    mappings: Mutex<BTreeMap<u64, Mapping>>,
}

impl Container {
    /// Opens `<dev_root>/vfio/vfio` and checks `VFIO_GET_API_VERSION`.
    pub fn open(dev_root: &Path) -> Result<Self> {
        let (fd, path) = open_node("open container", dev_root.join("vfio/vfio"))?;
        Self::from_fd(fd, path)
    }

    /// Wraps an already open container fd (checks the API version).
    pub fn from_fd(fd: OwnedFd, path: impl Into<PathBuf>) -> Result<Self> {
        let container = Self {
            fd,
            path: path.into(),
            mappings: Mutex::new(BTreeMap::new()),
        };
        let version = container.api_version()?;
        if version != abi::VFIO_API_VERSION {
            return Err(vfio_error(
                "VFIO_GET_API_VERSION",
                &container.path,
                io::Error::other(format!(
                    "API version {version}, expected {}",
                    abi::VFIO_API_VERSION
                )),
            ));
        }
        Ok(container)
    }

    /// The node's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, op: &'static str, e: io::Error) -> Error {
        vfio_error(op, &self.path, e)
    }

    /// `VFIO_GET_API_VERSION`.
    pub fn api_version(&self) -> Result<i32> {
        sys::get_api_version(self.fd.as_fd()).map_err(|e| self.err("VFIO_GET_API_VERSION", e))
    }

    /// `VFIO_CHECK_EXTENSION`: whether the container supports an IOMMU type or feature.
    pub fn check_extension(&self, extension: u32) -> Result<bool> {
        sys::check_extension(self.fd.as_fd(), extension)
            .map(|answer| answer > 0)
            .map_err(|e| self.err("VFIO_CHECK_EXTENSION", e))
    }

    /// Every known extension and whether it is supported, in number order.
    pub fn extensions(&self) -> Result<Vec<(u32, &'static str, bool)>> {
        EXTENSIONS
            .iter()
            .map(|&(number, name)| Ok((number, name, self.check_extension(number)?)))
            .collect()
    }

    /// `VFIO_SET_IOMMU` (after the first group is attached). The no-IOMMU type is refused
    /// unless `allow_noiommu`: it gives a device DMA to all of memory.
    pub fn set_iommu(&self, iommu_type: u32, allow_noiommu: bool) -> Result<()> {
        if iommu_type == abi::VFIO_NOIOMMU_IOMMU && !allow_noiommu {
            return Err(Error::invalid(
                "IOMMU type",
                "NOIOMMU",
                "the no-IOMMU type is unsafe and must be allowed explicitly",
            ));
        }
        sys::set_iommu(self.fd.as_fd(), iommu_type).map_err(|e| self.err("VFIO_SET_IOMMU", e))
    }

    /// `VFIO_IOMMU_GET_INFO`, with the IOVA-range and DMA-avail capabilities decoded.
    pub fn iommu_info(&self) -> Result<IommuInfo> {
        let op = "VFIO_IOMMU_GET_INFO";
        let base = std::mem::size_of::<VfioIommuType1Info>();
        let head = VfioIommuType1Info::default();
        let mut buf =
            sys::call_with_tail(self.fd.as_fd(), head, base).map_err(|e| self.err(op, e))?;
        let mut info: VfioIommuType1Info = buf.read(0).unwrap_or_default();
        if info.flags & abi::VFIO_IOMMU_INFO_CAPS != 0 && info.argsz as usize > base {
            buf = sys::call_with_tail(self.fd.as_fd(), head, info.argsz as usize)
                .map_err(|e| self.err(op, e))?;
            info = buf.read(0).unwrap_or_default();
        }
        let mut out = IommuInfo {
            flags: info.flags,
            iova_pgsizes: info.iova_pgsizes,
            iova_ranges: Vec::new(),
            dma_avail: None,
        };
        if info.flags & abi::VFIO_IOMMU_INFO_CAPS != 0 {
            for (offset, header) in caps_of(&buf, info.cap_offset) {
                match header.id {
                    abi::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE => {
                        let cap: abi::VfioIommuType1InfoCapIovaRange =
                            buf.read(offset).unwrap_or_default();
                        let first =
                            offset + std::mem::size_of::<abi::VfioIommuType1InfoCapIovaRange>();
                        out.iova_ranges =
                            read_array::<abi::VfioIovaRange>(&buf, first, cap.nr_iovas)
                                .into_iter()
                                .map(|r| (r.start, r.end))
                                .collect();
                    }
                    abi::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL => {
                        let cap: abi::VfioIommuType1InfoDmaAvail =
                            buf.read(offset).unwrap_or_default();
                        out.dma_avail = Some(cap.avail);
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// `VFIO_IOMMU_MAP_DMA` of the whole `buffer` at `iova`. The container keeps the buffer
    /// alive until the range is unmapped (by [`Self::unmap_dma`] or when the container is
    /// dropped).
    pub fn map_dma(
        &self,
        buffer: &Arc<DmaBuffer>,
        iova: u64,
        readable: bool,
        writable: bool,
    ) -> Result<()> {
        let mut flags = 0;
        if readable {
            flags |= abi::VFIO_DMA_MAP_FLAG_READ;
        }
        if writable {
            flags |= abi::VFIO_DMA_MAP_FLAG_WRITE;
        }
        let size = buffer.len() as u64;
        let map = abi::VfioIommuType1DmaMap {
            argsz: 0,
            flags,
            vaddr: buffer.address(),
            iova,
            size,
        };
        // The lock is held across the ioctl so the mapping is recorded before any other
        // thread could drop the container.
        let mut mappings = self.mappings.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: the range is a DmaBuffer, which is never borrowed as Rust memory. The Arc
        // recorded below keeps it allocated until the range is unmapped: `unmap_dma` drops
        // it only after the kernel confirms the unmap, and `Drop` unmaps every recorded
        // range before the container's fd closes (and leaks the buffer when that fails), so
        // the pages are never freed while the kernel's container (which may outlive this fd)
        // still maps them.
        unsafe { sys::iommu_map_dma(self.fd.as_fd(), &map) }
            .map_err(|e| self.err("VFIO_IOMMU_MAP_DMA", e))?;
        mappings.insert(
            iova,
            Mapping {
                size,
                buffer: Arc::clone(buffer),
            },
        );
        Ok(())
    }

    /// `VFIO_IOMMU_UNMAP_DMA` of `[iova, iova + size)`; returns the bytes unmapped. A
    /// buffer is released only when its whole range lies inside the one unmapped.
    pub fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64> {
        let mut mappings = self.mappings.lock().unwrap_or_else(PoisonError::into_inner);
        let unmapped = self.unmap_range(iova, size)?;
        let end = iova.saturating_add(size);
        mappings.retain(|start, m| !(*start >= iova && start.saturating_add(m.size) <= end));
        Ok(unmapped)
    }

    fn unmap_range(&self, iova: u64, size: u64) -> Result<u64> {
        let mut arg = abi::VfioIommuType1DmaUnmap {
            iova,
            size,
            ..Default::default()
        };
        sys::call(self.fd.as_fd(), &mut arg).map_err(|e| self.err("VFIO_IOMMU_UNMAP_DMA", e))?;
        Ok(arg.size)
    }

    /// The ranges this container has mapped and not unmapped, as `(iova, size)`.
    pub fn mapped(&self) -> Vec<(u64, u64)> {
        self.mappings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(iova, m)| (*iova, m.size))
            .collect()
    }
}

impl Drop for Container {
    /// Unmaps every range this container mapped before its fd closes (the kernel's
    /// container may live on through an attached group); a range that will not unmap keeps
    /// its buffer allocated forever.
    fn drop(&mut self) {
        let mappings = std::mem::take(
            self.mappings
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (iova, mapping) in mappings {
            if self.unmap_range(iova, mapping.size).is_err() {
                std::mem::forget(mapping.buffer);
            }
        }
    }
}

impl AsFd for Container {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `VFIO_GROUP_GET_STATUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupStatus {
    pub flags: u32,
}

impl GroupStatus {
    /// Every device in the group is on a vfio driver, unbound, or on a driver that does no
    /// DMA of its own: the kernel will attach it to a container.
    pub fn viable(self) -> bool {
        self.flags & abi::VFIO_GROUP_FLAGS_VIABLE != 0
    }

    /// The group is attached to a container.
    pub fn container_set(self) -> bool {
        self.flags & abi::VFIO_GROUP_FLAGS_CONTAINER_SET != 0
    }
}

/// An open group node.
#[derive(Debug)]
pub struct Group {
    fd: OwnedFd,
    id: u32,
    path: PathBuf,
}

impl Group {
    /// Opens `<dev_root>/vfio/<id>`, or `noiommu-<id>` for a no-IOMMU group.
    pub fn open(dev_root: &Path, id: u32, noiommu: bool) -> Result<Self> {
        let name = if noiommu {
            format!("noiommu-{id}")
        } else {
            id.to_string()
        };
        let (fd, path) = open_node("open group", dev_root.join("vfio").join(name))?;
        Ok(Self { fd, id, path })
    }

    /// Wraps an already open group fd.
    pub fn from_fd(fd: OwnedFd, id: u32, path: impl Into<PathBuf>) -> Self {
        Self {
            fd,
            id,
            path: path.into(),
        }
    }

    /// The group number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The node's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, op: &'static str, e: io::Error) -> Error {
        vfio_error(op, &self.path, e)
    }

    /// `VFIO_GROUP_GET_STATUS`.
    pub fn status(&self) -> Result<GroupStatus> {
        let mut arg = VfioGroupStatus::default();
        sys::call(self.fd.as_fd(), &mut arg).map_err(|e| self.err("VFIO_GROUP_GET_STATUS", e))?;
        Ok(GroupStatus { flags: arg.flags })
    }

    /// `VFIO_GROUP_SET_CONTAINER`: EPERM when the group is not viable, EBUSY when it is
    /// already in a container.
    pub fn set_container(&self, container: &Container) -> Result<()> {
        sys::group_set_container(self.fd.as_fd(), container.as_fd())
            .map_err(|e| self.err("VFIO_GROUP_SET_CONTAINER", e))
    }

    /// `VFIO_GROUP_UNSET_CONTAINER` (close the group's device fds first).
    pub fn unset_container(&self) -> Result<()> {
        sys::group_unset_container(self.fd.as_fd())
            .map_err(|e| self.err("VFIO_GROUP_UNSET_CONTAINER", e))
    }

    /// `VFIO_GROUP_GET_DEVICE_FD` for `bdf`, with ` vf_token=<uuid>` when given (a VF whose
    /// PF is bound to vfio-pci).
    pub fn device(&self, bdf: Bdf, vf_token: Option<&str>) -> Result<Device> {
        let mut name = bdf.to_string();
        if let Some(token) = vf_token {
            check_uuid(token)?;
            name.push_str(" vf_token=");
            name.push_str(token);
        }
        let c_name = CString::new(name)
            .map_err(|e| Error::invalid("device name", bdf.to_string(), e.to_string()))?;
        let fd = sys::group_get_device_fd(self.fd.as_fd(), &c_name)
            .map_err(|e| self.err("VFIO_GROUP_GET_DEVICE_FD", e))?;
        Ok(Device::from_fd(fd, bdf.to_string(), &self.path))
    }
}

impl AsFd for Group {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A UUID in its canonical 8-4-4-4-12 hex form (the kernel's `uuid_parse`).
pub fn check_uuid(text: &str) -> Result<()> {
    let groups: Vec<&str> = text.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "VF token",
            text,
            "expected a UUID such as bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_check_is_strict() {
        assert!(check_uuid("bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3").is_ok());
        for bad in [
            "",
            "bd8d9d2b5a5f4f5aa211f591514ba1f3",
            "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f",
            "x d8d9d2b-5a5f-4f5a-a211-f591514ba1f3",
            "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3 ",
        ] {
            assert!(check_uuid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_nodes_fail_with_a_hint() {
        let dir = std::env::temp_dir().join(format!("kv-legacy-{}", std::process::id()));
        let err = Container::open(&dir).expect_err("no container there");
        assert_eq!(err.errno(), Some(2));
        assert!(err.hint().unwrap_or_default().contains("vfio"), "{err:?}");
        let err = Group::open(&dir, 12, false).expect_err("no group there");
        assert!(err.to_string().contains("vfio/12"), "{err}");
    }

    #[test]
    fn a_non_vfio_node_is_refused_as_container() {
        let file = std::fs::File::open("/dev/null").expect("/dev/null");
        let err = Container::from_fd(file.into(), "/dev/null").expect_err("not a container");
        assert!(err.errno().is_some());
    }
}
