//! iommufd (`/dev/iommu`, Linux 6.2+): I/O address spaces (IOAS) that vfio device cdevs
//! attach to, and the DMA mappings inside them.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::abi;
use super::dma::DmaBuffer;
use super::{open_node, sys, vfio_error, EMSGSIZE};
use crate::error::{Error, Result};

/// The IOVA ranges an IOAS accepts, inclusive, and the required alignment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IovaRanges {
    pub ranges: Vec<(u64, u64)>,
    pub alignment: u64,
}

/// A mapping's length and the buffer it pins, keyed by (IOAS, IOVA).
type IoasMapping = (u64, Arc<DmaBuffer>);

/// An open `/dev/iommu`.
///
/// As for [`super::Container`]: each mapped buffer is held until its range is unmapped, and
/// dropping the handle unmaps every range it mapped first (a bound device cdev keeps the
/// kernel's iommufd context, and so the IOAS and its mappings, alive after this fd closes);
/// a range that will not unmap keeps its buffer allocated for the life of the process.
#[derive(Debug)]
pub struct IommuFd {
    fd: OwnedFd,
    path: PathBuf,
    /// Live mappings per (IOAS, IOVA), holding their buffers.
    mappings: Mutex<BTreeMap<(u32, u64), IoasMapping>>,
}

impl IommuFd {
    /// Opens `<dev_root>/iommu`.
    pub fn open(dev_root: &Path) -> Result<Self> {
        let (fd, path) = open_node("open iommufd", dev_root.join("iommu"))?;
        Ok(Self::from_fd(fd, path))
    }

    /// Wraps an already open iommufd.
    pub fn from_fd(fd: OwnedFd, path: impl Into<PathBuf>) -> Self {
        Self {
            fd,
            path: path.into(),
            mappings: Mutex::new(BTreeMap::new()),
        }
    }

    /// The node's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, op: &'static str, e: io::Error) -> Error {
        vfio_error(op, &self.path, e)
    }

    /// `IOMMU_IOAS_ALLOC`: a new, empty I/O address space.
    pub fn ioas_alloc(&self) -> Result<u32> {
        let mut arg = abi::IommuIoasAlloc::default();
        sys::call(self.fd.as_fd(), &mut arg).map_err(|e| self.err("IOMMU_IOAS_ALLOC", e))?;
        Ok(arg.out_ioas_id)
    }

    /// `IOMMU_DESTROY` of an object (an IOAS, say).
    pub fn destroy(&self, id: u32) -> Result<()> {
        let mut arg = abi::IommuDestroy {
            id,
            ..Default::default()
        };
        let mut mappings = self.mappings.lock().unwrap_or_else(PoisonError::into_inner);
        sys::call(self.fd.as_fd(), &mut arg).map_err(|e| self.err("IOMMU_DESTROY", e))?;
        // A destroyed IOAS took its mappings with it.
        mappings.retain(|(ioas, _), _| *ioas != id);
        Ok(())
    }

    /// `IOMMU_IOAS_IOVA_RANGES`: asks with a small array, then again with the count the
    /// kernel reported (EMSGSIZE) if it did not fit.
    pub fn iova_ranges(&self, ioas_id: u32) -> Result<IovaRanges> {
        let op = "IOMMU_IOAS_IOVA_RANGES";
        let mut capacity = 8;
        for _ in 0..3 {
            match sys::ioas_iova_ranges(self.fd.as_fd(), ioas_id, capacity) {
                Ok((head, ranges)) => {
                    return Ok(IovaRanges {
                        ranges: ranges.iter().map(|r| (r.start, r.last)).collect(),
                        alignment: head.out_iova_alignment,
                    })
                }
                Err(e) if e.raw_os_error() == Some(EMSGSIZE) => {
                    capacity = capacity.saturating_mul(16);
                }
                Err(e) => return Err(self.err(op, e)),
            }
        }
        Err(self.err(op, io::Error::from_raw_os_error(EMSGSIZE)))
    }

    /// `IOMMU_IOAS_MAP` of the whole `buffer`, at `iova` (`FIXED_IOVA`) or where the kernel
    /// chooses; returns the IOVA. The buffer is kept alive while mapped.
    pub fn map(
        &self,
        ioas_id: u32,
        buffer: &Arc<DmaBuffer>,
        iova: Option<u64>,
        readable: bool,
        writable: bool,
    ) -> Result<u64> {
        let mut flags = 0;
        if iova.is_some() {
            flags |= abi::IOMMU_IOAS_MAP_FIXED_IOVA;
        }
        if readable {
            flags |= abi::IOMMU_IOAS_MAP_READABLE;
        }
        if writable {
            flags |= abi::IOMMU_IOAS_MAP_WRITEABLE;
        }
        let length = buffer.len() as u64;
        let map = abi::IommuIoasMap {
            flags,
            ioas_id,
            user_va: buffer.address(),
            length,
            iova: iova.unwrap_or(0),
            ..Default::default()
        };
        // The lock is held across the ioctl so the mapping is recorded before any other
        // thread could drop this handle.
        let mut mappings = self.mappings.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: the range is a DmaBuffer, never borrowed as Rust memory. The Arc recorded
        // below keeps it allocated until the range is unmapped: `unmap` and `destroy` drop it
        // only after the kernel confirms, and `Drop` unmaps every recorded range before the
        // fd closes (leaking the buffer when that fails), so the pages are never freed while
        // the kernel's IOAS (which a bound cdev keeps alive past this fd) maps them.
        let got = unsafe { sys::ioas_map(self.fd.as_fd(), &map) }
            .map_err(|e| self.err("IOMMU_IOAS_MAP", e))?;
        mappings.insert((ioas_id, got), (length, Arc::clone(buffer)));
        Ok(got)
    }

    /// `IOMMU_IOAS_UNMAP` of `[iova, iova + length)`; returns the bytes unmapped. A buffer
    /// is released only when its whole range lies inside the one unmapped.
    pub fn unmap(&self, ioas_id: u32, iova: u64, length: u64) -> Result<u64> {
        let mut mappings = self.mappings.lock().unwrap_or_else(PoisonError::into_inner);
        let unmapped = self.unmap_range(ioas_id, iova, length)?;
        let end = iova.saturating_add(length);
        mappings.retain(|(ioas, start), (size, _)| {
            !(*ioas == ioas_id && *start >= iova && start.saturating_add(*size) <= end)
        });
        Ok(unmapped)
    }

    fn unmap_range(&self, ioas_id: u32, iova: u64, length: u64) -> Result<u64> {
        let mut arg = abi::IommuIoasUnmap {
            ioas_id,
            iova,
            length,
            ..Default::default()
        };
        sys::call(self.fd.as_fd(), &mut arg).map_err(|e| self.err("IOMMU_IOAS_UNMAP", e))?;
        Ok(arg.length)
    }

    /// The ranges this handle has mapped and not unmapped, as `(ioas, iova, length)`.
    pub fn mapped(&self) -> Vec<(u32, u64, u64)> {
        self.mappings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((ioas, iova), (length, _))| (*ioas, *iova, *length))
            .collect()
    }

    /// `IOMMU_OPTION` get (`op` GET) of `option_id` on `object_id` (0 for global options).
    pub fn get_option(&self, option_id: u32, object_id: u32) -> Result<u64> {
        let mut arg = abi::IommuOption {
            option_id,
            op: abi::IOMMU_OPTION_OP_GET,
            object_id,
            ..Default::default()
        };
        sys::call(self.fd.as_fd(), &mut arg).map_err(|e| self.err("IOMMU_OPTION", e))?;
        Ok(arg.val64)
    }

    /// `IOMMU_OPTION` set; e.g. `RLIMIT_MODE` = 1 accounts pinned memory per process
    /// (needs `CAP_SYS_RESOURCE`).
    pub fn set_option(&self, option_id: u32, object_id: u32, value: u64) -> Result<()> {
        let mut arg = abi::IommuOption {
            option_id,
            op: abi::IOMMU_OPTION_OP_SET,
            object_id,
            val64: value,
            ..Default::default()
        };
        sys::call(self.fd.as_fd(), &mut arg)
            .map(drop)
            .map_err(|e| self.err("IOMMU_OPTION", e))
    }
}

impl Drop for IommuFd {
    /// Unmaps every range this handle mapped before its fd closes; a range that will not
    /// unmap keeps its buffer allocated forever.
    fn drop(&mut self) {
        let mappings = std::mem::take(
            self.mappings
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for ((ioas, iova), (length, buffer)) in mappings {
            if self.unmap_range(ioas, iova, length).is_err() {
                std::mem::forget(buffer);
            }
        }
    }
}

impl AsFd for IommuFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctls_on_a_non_iommufd_fail_with_errno_and_path() {
        let file = std::fs::File::open("/dev/null").expect("/dev/null");
        let fd = IommuFd::from_fd(file.into(), "/dev/null");
        let err = fd.ioas_alloc().expect_err("not an iommufd");
        assert!(err.errno().is_some());
        assert!(
            err.to_string().contains("IOMMU_IOAS_ALLOC on /dev/null"),
            "{err}"
        );
    }
}
