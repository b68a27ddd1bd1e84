//! Memory that devices may read and write: a page-aligned, zeroed buffer owned by Rust and
//! never borrowed as a Rust slice, so a device writing it behind the program's back breaks
//! no aliasing rule. Reads and writes go through volatile copies. Mapping it is the
//! handles' business: they keep it alive while mapped (see `legacy::Container`).

use std::alloc::{self, Layout};
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// A DMA-able buffer for `VFIO_IOMMU_MAP_DMA` / `IOMMU_IOAS_MAP`.
#[derive(Debug)]
pub struct DmaBuffer {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer is plain memory owned by this value; it is only touched through
// volatile copies (by any thread) and by devices, never through Rust references.
unsafe impl Send for DmaBuffer {}
// SAFETY: as above; concurrent volatile copies are no worse than a device writing.
unsafe impl Sync for DmaBuffer {}

impl DmaBuffer {
    /// Allocates `len` zeroed bytes aligned to the page size; `len` must be a positive
    /// multiple of the page size (the IOMMU maps whole pages).
    pub fn new(len: usize) -> Result<Self> {
        let page = rustix::param::page_size();
        if len == 0 || len % page != 0 {
            return Err(Error::invalid(
                "DMA buffer size",
                len.to_string(),
                format!("must be a positive multiple of the page size ({page} bytes)"),
            ));
        }
        let layout = Layout::from_size_align(len, page)
            .map_err(|e| Error::invalid("DMA buffer size", len.to_string(), e.to_string()))?;
        // SAFETY: the layout has a non-zero size (checked above).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr)
            .ok_or_else(|| Error::invalid("DMA buffer size", len.to_string(), "out of memory"))?;
        Ok(Self { ptr, layout })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Always false (the size is positive); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.layout.size() == 0
    }

    /// The process virtual address, as the map ioctls take it.
    pub fn address(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(Error::invalid(
                "DMA buffer range",
                format!("{offset}+{len}"),
                format!("outside the {}-byte buffer", self.len()),
            )),
        }
    }

    /// Copies `len` bytes out, starting at `offset`.
    pub fn read(&self, offset: usize, len: usize) -> Result<Vec<u8>> {
        self.check_range(offset, len)?;
        let base = self.ptr.as_ptr();
        // SAFETY: offset..offset+len is inside the allocation (checked); volatile reads of
        // u8 never create references and tolerate concurrent device writes.
        Ok((offset..offset + len)
            .map(|i| unsafe { base.add(i).read_volatile() })
            .collect())
    }

    /// Copies `data` in, starting at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        let base = self.ptr.as_ptr();
        for (i, byte) in data.iter().enumerate() {
            // SAFETY: offset+i is inside the allocation (checked); a volatile write of a u8
            // through the owning pointer creates no reference.
            unsafe { base.add(offset + i).write_volatile(*byte) };
        }
        Ok(())
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from alloc_zeroed with exactly this layout and is freed once.
        // No IOMMU mapping covers it any more: the kernel's pin keeps the pages, not the
        // allocation, so a buffer freed while mapped would be handed out again by the
        // allocator while a device could still write it. `Container` and `IommuFd` hold an
        // `Arc` to every buffer they map until the range is unmapped (and leak it when the
        // unmap fails), so this last reference drops only after the unmap.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_page_aligned_zeroed_memory() {
        let page = rustix::param::page_size();
        let buf = DmaBuffer::new(2 * page).expect("alloc");
        assert_eq!(buf.address() % page as u64, 0);
        assert_eq!(buf.read(0, 16).expect("read"), vec![0; 16]);
        buf.write(page - 2, b"abcd").expect("write across a page");
        assert_eq!(buf.read(page - 2, 4).expect("read"), b"abcd");
    }

    #[test]
    fn refuses_bad_sizes_and_ranges() {
        assert!(DmaBuffer::new(0).is_err());
        assert!(DmaBuffer::new(100).is_err());
        let buf = DmaBuffer::new(rustix::param::page_size()).expect("alloc");
        assert!(buf.read(buf.len(), 1).is_err());
        assert!(buf.write(usize::MAX, b"x").is_err());
    }
}
