//! Directory-fd-relative reads of sysfs attributes.
//!
//! Every open is relative to an already open directory, so the kernel never re-resolves the
//! `bus/pci/devices/<bdf>` symlink, and links are read with `readlinkat` (never realpath).
//! Names passed here are single components (compile-time constants or parsed values, never
//! raw outside strings); paths of several components go through [`crate::beneath`], which
//! resolves them beneath the root and holds the file checks these reads share.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use crate::beneath::{list_dir, read_bounded, require_regular};

/// The size of the stack buffer for attribute reads. sysfs text attributes are at most one
/// page; `uevent` of a PCI device is about 200 bytes.
pub const ATTR_BUF: usize = crate::beneath::ATTR_MAX;

/// Opens a subdirectory by its name alone (one component; a link there is not followed).
/// Paths of several components go through [`crate::beneath::open_beneath`].
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// A reusable buffer for attribute and link reads on the hot path: one per walking thread,
/// never zeroed (the kernel fills what it returns), no allocation per read.
#[derive(Debug)]
pub struct AttrReader {
    buf: Box<[MaybeUninit<u8>; ATTR_BUF]>,
}

impl Default for AttrReader {
    fn default() -> Self {
        Self {
            buf: Box::new([MaybeUninit::uninit(); ATTR_BUF]),
        }
    }
}

impl AttrReader {
    /// An attribute as trimmed text: opened without following a link and without blocking,
    /// accepted only when it is a regular file (a FIFO, device node or directory where an
    /// attribute should be is a [`crate::beneath::NotRegularFile`] error, never a hang), then
    /// one read. Invalid UTF-8 is an `InvalidData` error.
    pub fn text(&mut self, dir: BorrowedFd<'_>, name: &str) -> io::Result<&str> {
        self.raw(dir, name).map(str::trim)
    }

    /// The same as [`Self::text`], untrimmed (to tell a whole file from a cut-off one).
    pub fn raw(&mut self, dir: BorrowedFd<'_>, name: &str) -> io::Result<&str> {
        let fd = open_attr(dir, name)?;
        let (bytes, _) = rustix::io::read(fd.as_fd(), &mut self.buf[..])?;
        std::str::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// A symlink's target. Targets longer than the buffer are an error (sysfs links are far
    /// shorter than a page).
    pub fn link(&mut self, dir: BorrowedFd<'_>, name: &str) -> io::Result<&str> {
        let (bytes, rest) = rfs::readlinkat_raw(dir, name, &mut self.buf[..])?;
        if rest.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "link target longer than a page",
            ));
        }
        std::str::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// Opens an attribute for reading: `O_NOFOLLOW` (attributes are never links), `O_NONBLOCK`
/// (a FIFO must not hang the open), and a regular file only (`fstat`), so nothing but a
/// plain file is ever read.
pub fn open_attr(dir: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    require_regular(fd.as_fd())?;
    Ok(fd)
}

/// Reads at most `limit` bytes of the regular file `name` (opened as [`open_attr`] does).
pub fn read_bounded_at(dir: BorrowedFd<'_>, name: &str, limit: usize) -> io::Result<Vec<u8>> {
    read_bounded(open_attr(dir, name)?.as_fd(), limit)
}

/// The final component of a link target (`../../../kernel/iommu_groups/12` -> `12`).
pub fn link_basename(target: &str) -> &str {
    target.rsplit('/').next().unwrap_or(target)
}

/// The size of a file, from `fstatat` without following a final symlink.
pub fn size_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<u64> {
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(u64::try_from(st.st_size).unwrap_or(0))
}

/// Lists a subdirectory of `dir`.
pub fn list_dir_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Vec<String>> {
    list_dir(open_dir_at(dir, name)?)
}

/// True for the errors that mean "this thing is gone or was never there": a device removed
/// mid-scan, an optional attribute that does not exist, a device in a state where the
/// attribute cannot be read.
pub fn is_absent(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(2 | 19 | 20 | 6)) // ENOENT, ENODEV, ENOTDIR, ENXIO
}

/// Resolves a relative link target lexically against the directory that holds the link
/// (both relative to the sysfs root), without touching the filesystem.
/// `("bus/pci/devices", "../../../devices/pci0000:00/0000:00:01.0")` -> `devices/pci0000:00/0000:00:01.0`.
pub fn resolve_relative(base: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_links_lexically() {
        assert_eq!(
            resolve_relative(
                "bus/pci/devices",
                "../../../devices/pci0000:00/0000:00:01.0"
            )
            .as_deref(),
            Some("devices/pci0000:00/0000:00:01.0")
        );
        assert_eq!(resolve_relative("bus/pci/devices", "../../../../etc"), None);
        assert_eq!(resolve_relative("a", "/abs"), None);
    }

    #[test]
    fn basename_of_link() {
        assert_eq!(link_basename("../../../kernel/iommu_groups/12"), "12");
        assert_eq!(link_basename("12"), "12");
    }
}
