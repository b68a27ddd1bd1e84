//! The only place that issues VFIO and iommufd ioctls. Each call is a typed function: the
//! struct that goes with an ioctl number is fixed here, so callers cannot pair a number with
//! the wrong argument. Results come from the ioctl's return value (`GET_DEVICE_FD` returns
//! the new fd), never from a copied buffer.

use std::ffi::{c_void, CStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};

use super::abi::{self, op};

/// One ioctl whose output is the syscall's return value; the argument is a raw pointer or
/// integer chosen by the typed wrappers below.
struct Call {
    opcode: Opcode,
    arg: *mut c_void,
}

// SAFETY: `Call` only carries an opcode and an argument; every constructor in this module
// pairs the opcode with the argument type the kernel expects for it, and the output is the
// plain return value, read without touching the argument.
unsafe impl Ioctl for Call {
    type Output = IoctlOutput;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        self.opcode
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }

    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _arg: *mut c_void,
    ) -> rustix::io::Result<IoctlOutput> {
        Ok(out)
    }
}

/// Issues `opcode` with `arg`.
///
/// # Safety
/// `arg` must be what the kernel expects for `opcode` on this kind of fd: an integer, or a
/// pointer to memory that stays valid and writable for as many bytes as the kernel may
/// write (the struct's size, or its `argsz`).
unsafe fn raw(fd: BorrowedFd<'_>, opcode: Opcode, arg: *mut c_void) -> io::Result<i32> {
    // SAFETY: forwarded from the caller's contract.
    unsafe { rustix::ioctl::ioctl(fd, Call { opcode, arg }) }.map_err(io::Error::from)
}

/// A `#[repr(C)]` ABI struct with no padding-dependent invariants: every bit pattern is a
/// valid value, so it may be copied to and from kernel buffers.
///
/// # Safety
/// Implement only for `#[repr(C)]` structs made of integers (and other `Plain` structs).
pub unsafe trait Plain: Copy + Default {}

/// An ABI struct that is the argument of exactly one ioctl, and starts with the `u32`
/// `argsz`/`size` field the kernel reads to learn the buffer length.
///
/// # Safety
/// `OP` must be the ioctl that takes a pointer to `Self` (plus an optional trailing area of
/// `argsz - size_of::<Self>()` bytes), and must not make the kernel dereference any pointer
/// stored inside `Self`.
pub unsafe trait Command: Plain {
    const OP: Opcode;
}

macro_rules! plain {
    ($($ty:ident),* $(,)?) => {
        // SAFETY: each listed type is a `#[repr(C)]` struct of integers (see abi.rs).
        $(unsafe impl Plain for abi::$ty {})*
    };
}

macro_rules! command {
    ($($ty:ident => $op:ident),* $(,)?) => {
        // SAFETY: each pairing is the one in <linux/vfio.h> or <linux/iommufd.h>; none of
        // these structs hold user pointers.
        $(unsafe impl Command for abi::$ty { const OP: Opcode = op::$op; })*
    };
}

plain!(
    VfioInfoCapHeader,
    VfioGroupStatus,
    VfioDeviceInfo,
    VfioRegionInfo,
    VfioRegionSparseMmapArea,
    VfioRegionInfoCapSparseMmap,
    VfioRegionInfoCapType,
    VfioIrqInfo,
    VfioPciDependentDevice,
    VfioPciHotResetInfo,
    VfioIommuType1Info,
    VfioIovaRange,
    VfioIommuType1InfoCapIovaRange,
    VfioIommuType1InfoDmaAvail,
    VfioIommuType1DmaMap,
    VfioIommuType1DmaUnmap,
    VfioDeviceBindIommufd,
    VfioDeviceAttachIommufdPt,
    VfioDeviceDetachIommufdPt,
    IommuDestroy,
    IommuIoasAlloc,
    IommuIovaRange,
    IommuIoasIovaRanges,
    IommuIoasMap,
    IommuIoasUnmap,
    IommuOption,
);

command!(
    VfioGroupStatus => VFIO_GROUP_GET_STATUS,
    VfioDeviceInfo => VFIO_DEVICE_GET_INFO,
    VfioRegionInfo => VFIO_DEVICE_GET_REGION_INFO,
    VfioIrqInfo => VFIO_DEVICE_GET_IRQ_INFO,
    VfioPciHotResetInfo => VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
    VfioIommuType1Info => VFIO_IOMMU_GET_INFO,
    VfioIommuType1DmaUnmap => VFIO_IOMMU_UNMAP_DMA,
    VfioDeviceAttachIommufdPt => VFIO_DEVICE_ATTACH_IOMMUFD_PT,
    VfioDeviceDetachIommufdPt => VFIO_DEVICE_DETACH_IOMMUFD_PT,
    IommuDestroy => IOMMU_DESTROY,
    IommuIoasAlloc => IOMMU_IOAS_ALLOC,
    IommuIoasUnmap => IOMMU_IOAS_UNMAP,
    IommuOption => IOMMU_OPTION,
);

/// An 8-byte aligned byte buffer holding an ABI struct followed by a trailing area (a
/// capability chain or an array), as the `argsz` protocol needs.
#[derive(Debug, Clone)]
pub struct TailBuf {
    words: Vec<u64>,
    len: usize,
}

impl TailBuf {
    /// A zeroed buffer of `len` bytes (at least the size of `T`) starting with `head`, its
    /// first `u32` set to `len`.
    fn with_head<T: Command>(head: T, len: usize) -> Self {
        let len = len.max(std::mem::size_of::<T>());
        let mut buf = Self {
            words: vec![0; len.div_ceil(8)],
            len,
        };
        buf.write(0, head);
        buf.write(0, u32::try_from(len).unwrap_or(u32::MAX));
        buf
    }

    /// The bytes.
    #[cfg(test)]
    fn bytes(&self) -> &[u8] {
        // SAFETY: `words` owns at least `len` initialised bytes (len <= words.len() * 8) and
        // u8 has no alignment or validity requirements.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    /// Reads a `T` at byte `offset`, or `None` when it would run past the end.
    pub fn read<T: Plain>(&self, offset: usize) -> Option<T> {
        let end = offset.checked_add(std::mem::size_of::<T>())?;
        if end > self.len {
            return None;
        }
        // SAFETY: offset..end is inside the buffer (checked above), `T: Plain` accepts any
        // bit pattern, and read_unaligned has no alignment requirement.
        Some(unsafe {
            self.words
                .as_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<T>()
                .read_unaligned()
        })
    }

    fn write<T: Plain>(&mut self, offset: usize, value: T) {
        let end = offset + std::mem::size_of::<T>();
        assert!(end <= self.len, "TailBuf write past the end");
        // SAFETY: offset..end is inside the buffer (asserted) and write_unaligned has no
        // alignment requirement.
        unsafe {
            self.words
                .as_mut_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<T>()
                .write_unaligned(value);
        }
    }

    fn as_mut_ptr(&mut self) -> *mut c_void {
        self.words.as_mut_ptr().cast()
    }
}

// SAFETY: u32 is a plain integer; every bit pattern is valid.
unsafe impl Plain for u32 {}
// SAFETY: i32 is a plain integer; every bit pattern is valid.
unsafe impl Plain for i32 {}

/// Issues `T::OP` with `arg`; the kernel fills the output fields in place.
pub fn call<T: Command>(fd: BorrowedFd<'_>, arg: &mut T) -> io::Result<i32> {
    arg_size_guard::<T>(arg);
    // SAFETY: `Command` guarantees OP takes a pointer to T; `arg` is a valid, exclusive T
    // whose argsz is its size, so the kernel writes inside it.
    unsafe { raw(fd, T::OP, std::ptr::from_mut(arg).cast()) }
}

/// Issues `T::OP` with `head` followed by a zeroed trailing area, `len` bytes in all
/// (`argsz` is set to `len`); returns the buffer as the kernel left it.
pub fn call_with_tail<T: Command>(fd: BorrowedFd<'_>, head: T, len: usize) -> io::Result<TailBuf> {
    let mut buf = TailBuf::with_head(head, len);
    // SAFETY: `Command` guarantees OP takes a pointer to T plus a trailing area of
    // argsz - size_of::<T>() bytes; the buffer is argsz bytes long, 8-byte aligned.
    unsafe { raw(fd, T::OP, buf.as_mut_ptr()) }?;
    Ok(buf)
}

/// Sets the leading argsz/size field to the struct's size.
fn arg_size_guard<T: Command>(arg: &mut T) {
    let size = abi::argsz::<T>();
    // SAFETY: `Command` guarantees T is repr(C) and starts with a u32; T is at least 4
    // bytes, so writing a u32 at its start stays inside the exclusive borrow.
    unsafe { std::ptr::from_mut(arg).cast::<u32>().write_unaligned(size) };
}

/// `VFIO_GET_API_VERSION` (container fd).
pub fn get_api_version(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: takes no argument.
    unsafe { raw(fd, op::VFIO_GET_API_VERSION, std::ptr::null_mut()) }
}

/// `VFIO_CHECK_EXTENSION` (container or group fd): > 0 when supported.
pub fn check_extension(fd: BorrowedFd<'_>, extension: u32) -> io::Result<i32> {
    // SAFETY: the argument is an integer passed by value (no memory is touched).
    unsafe {
        raw(
            fd,
            op::VFIO_CHECK_EXTENSION,
            extension as usize as *mut c_void,
        )
    }
}

/// `VFIO_SET_IOMMU` (container fd, after a group is attached).
pub fn set_iommu(fd: BorrowedFd<'_>, iommu_type: u32) -> io::Result<()> {
    // SAFETY: the argument is an integer passed by value.
    unsafe { raw(fd, op::VFIO_SET_IOMMU, iommu_type as usize as *mut c_void) }.map(drop)
}

/// `VFIO_GROUP_SET_CONTAINER`: the argument points at the container's fd number.
pub fn group_set_container(fd: BorrowedFd<'_>, container: BorrowedFd<'_>) -> io::Result<()> {
    let mut number: i32 = container.as_raw_fd();
    // SAFETY: the kernel reads one int through the pointer, which is valid for the call.
    unsafe {
        raw(
            fd,
            op::VFIO_GROUP_SET_CONTAINER,
            std::ptr::from_mut(&mut number).cast(),
        )
    }
    .map(drop)
}

/// `VFIO_GROUP_UNSET_CONTAINER` (the kernel ignores the argument).
pub fn group_unset_container(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: takes no argument.
    unsafe { raw(fd, op::VFIO_GROUP_UNSET_CONTAINER, std::ptr::null_mut()) }.map(drop)
}

/// `VFIO_GROUP_GET_DEVICE_FD`: the device fd is the ioctl's return value.
pub fn group_get_device_fd(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: the kernel reads a NUL-terminated string through the pointer (strndup_user),
    // never writes it; `name` outlives the call.
    let raw_fd = unsafe {
        raw(
            fd,
            op::VFIO_GROUP_GET_DEVICE_FD,
            name.as_ptr().cast_mut().cast(),
        )
    }?;
    if raw_fd < 0 {
        return Err(io::Error::other(format!("kernel returned fd {raw_fd}")));
    }
    // SAFETY: on success the return value is a new file descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw_fd) })
}

/// `VFIO_DEVICE_RESET`.
pub fn device_reset(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: takes no argument.
    unsafe { raw(fd, op::VFIO_DEVICE_RESET, std::ptr::null_mut()) }.map(drop)
}

/// `VFIO_DEVICE_BIND_IOMMUFD`: binds a cdev fd to an iommufd; returns the devid.
pub fn device_bind_iommufd(fd: BorrowedFd<'_>, iommufd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut arg = abi::VfioDeviceBindIommufd {
        argsz: abi::argsz::<abi::VfioDeviceBindIommufd>(),
        flags: 0,
        iommufd: iommufd.as_raw_fd(),
        out_devid: 0,
    };
    // SAFETY: the kernel reads and writes one 16-byte struct, valid for the call; no flag
    // asks it to follow a pointer.
    unsafe {
        raw(
            fd,
            op::VFIO_DEVICE_BIND_IOMMUFD,
            std::ptr::from_mut(&mut arg).cast(),
        )
    }?;
    Ok(arg.out_devid)
}

/// `IOMMU_IOAS_IOVA_RANGES` with room for `capacity` ranges. Returns the header (whose
/// `num_iovas` is the real count, possibly larger than `capacity`, then with `EMSGSIZE`)
/// and the ranges written.
pub fn ioas_iova_ranges(
    fd: BorrowedFd<'_>,
    ioas_id: u32,
    capacity: u32,
) -> io::Result<(abi::IommuIoasIovaRanges, Vec<abi::IommuIovaRange>)> {
    let mut ranges = vec![abi::IommuIovaRange::default(); capacity as usize];
    let mut arg = abi::IommuIoasIovaRanges {
        size: abi::argsz::<abi::IommuIoasIovaRanges>(),
        ioas_id,
        num_iovas: capacity,
        allowed_iovas: ranges.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: the kernel writes at most `num_iovas` (= capacity) ranges through
    // `allowed_iovas`, which points at a vector of exactly that many, alive for the call.
    unsafe {
        raw(
            fd,
            op::IOMMU_IOAS_IOVA_RANGES,
            std::ptr::from_mut(&mut arg).cast(),
        )
    }?;
    ranges.truncate(arg.num_iovas.min(capacity) as usize);
    Ok((arg, ranges))
}

/// `VFIO_IOMMU_MAP_DMA` (type1 container).
///
/// # Safety
/// `map.vaddr .. vaddr + size` must be memory of this process that nothing in Rust reads or
/// writes through references while the mapping exists (the device may write it at any time),
/// e.g. a [`super::dma::DmaBuffer`], and it must stay allocated until the range is unmapped.
/// Closing `fd` does not end the mapping: the kernel's container lives on while a group is
/// attached to it, and keeps the pages pinned and mapped for the device.
pub unsafe fn iommu_map_dma(fd: BorrowedFd<'_>, map: &abi::VfioIommuType1DmaMap) -> io::Result<()> {
    let mut arg = *map;
    arg.argsz = abi::argsz::<abi::VfioIommuType1DmaMap>();
    // SAFETY: the kernel reads the struct (valid for the call) and pins the pages at vaddr;
    // the caller vouches for that memory.
    unsafe {
        raw(
            fd,
            op::VFIO_IOMMU_MAP_DMA,
            std::ptr::from_mut(&mut arg).cast(),
        )
    }
    .map(drop)
}

/// `IOMMU_IOAS_MAP`; returns the IOVA (chosen by the kernel unless `FIXED_IOVA`).
///
/// # Safety
/// As for [`iommu_map_dma`], for `map.user_va .. user_va + length` (the kernel's iommufd
/// context lives on after `fd` closes while a device cdev is bound to it).
pub unsafe fn ioas_map(fd: BorrowedFd<'_>, map: &abi::IommuIoasMap) -> io::Result<u64> {
    let mut arg = *map;
    arg.size = abi::argsz::<abi::IommuIoasMap>();
    // SAFETY: the kernel reads and updates the struct (valid for the call) and pins the
    // pages at user_va; the caller vouches for that memory.
    unsafe { raw(fd, op::IOMMU_IOAS_MAP, std::ptr::from_mut(&mut arg).cast()) }?;
    Ok(arg.iova)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_buffer_sets_argsz_and_reads_back() {
        let head = abi::VfioRegionInfo {
            index: 7,
            ..Default::default()
        };
        let buf = TailBuf::with_head(head, 64);
        let back: abi::VfioRegionInfo = buf.read(0).expect("fits");
        assert_eq!((back.argsz, back.index), (64, 7));
        assert_eq!(buf.bytes().len(), 64);
        assert!(buf.read::<abi::VfioRegionInfo>(40).is_none());
    }

    #[test]
    fn ioctls_on_a_non_vfio_fd_fail_with_errno() {
        let file = std::fs::File::open("/dev/null").expect("/dev/null");
        let fd = std::os::fd::AsFd::as_fd(&file);
        let err = get_api_version(fd).expect_err("/dev/null is not a container");
        assert!(err.raw_os_error().is_some());
        let mut status = abi::VfioGroupStatus::default();
        assert!(call(fd, &mut status).is_err());
    }
}
