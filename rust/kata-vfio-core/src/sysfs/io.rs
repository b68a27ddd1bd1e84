//! Directory-fd-relative reads of sysfs attributes.
//!
//! Every open is relative to an already open directory, so the kernel never re-resolves the
//! `bus/pci/devices/<bdf>` symlink, and links are read with `readlinkat` (never realpath).
//! Names passed here are single components (compile-time constants or parsed values, never
//! raw outside strings); paths of several components go through [`super::root::RootDir`],
//! which resolves them beneath the root.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

/// The size of the stack buffer for attribute reads. sysfs text attributes are at most one
/// page; `uevent` of a PCI device is about 200 bytes.
pub const ATTR_BUF: usize = 4096;

/// Opens a directory by absolute (or cwd-relative) path: a root the user gave.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Opens a subdirectory by its name alone (one component; a link there is not followed).
/// Paths of several components go through [`super::root::open_beneath`].
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
    /// attribute should be is a [`NotRegularFile`] error, never a hang), then one read.
    /// Invalid UTF-8 is an `InvalidData` error.
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

/// The error of an attribute that is not a regular file (a FIFO, a device node, a directory
/// or a link where the kernel puts a file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRegularFile;

impl std::fmt::Display for NotRegularFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a regular file")
    }
}

impl std::error::Error for NotRegularFile {}

/// Whether `err` is a [`NotRegularFile`] (or the kernel's way of saying so: a link where
/// `O_NOFOLLOW` forbids one, a directory read).
pub fn is_not_regular(err: &io::Error) -> bool {
    err.get_ref()
        .is_some_and(<dyn std::error::Error + Send + Sync>::is::<NotRegularFile>)
        || matches!(err.raw_os_error(), Some(ELOOP | EISDIR))
}

const ELOOP: i32 = 40;
const EISDIR: i32 = 21;

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
    let st = rfs::fstat(&fd)?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
        return Err(io::Error::other(NotRegularFile));
    }
    Ok(fd)
}

/// Reads at most `limit` bytes of a regular file (opened as [`open_attr`] does), in as many
/// reads as it takes (procfs files report size 0 and may come in pieces).
pub fn read_bounded_at(dir: BorrowedFd<'_>, name: &str, limit: usize) -> io::Result<Vec<u8>> {
    let fd = open_attr(dir, name)?;
    let mut out = vec![0u8; limit];
    let mut filled = 0;
    while filled < limit {
        match rustix::io::read(&fd, &mut out[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    out.truncate(filled);
    Ok(out)
}

/// Reads an attribute as trimmed, owned text (off the hot path: the device walk uses one
/// [`AttrReader`] per thread instead). Invalid UTF-8 is an `InvalidData` error.
pub fn read_text_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<String> {
    AttrReader::default().text(dir, name).map(str::to_owned)
}

/// Reads a symlink's target relative to `dir`.
pub fn readlink_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<String> {
    let mut buf = [0u8; 1024];
    let len = rfs::readlinkat_raw(dir, name, &mut buf)?;
    if len == buf.len() {
        // Truncated: fall back to the allocating call.
        let owned = rfs::readlinkat(dir, name, Vec::new())?;
        return owned
            .into_string()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
    }
    String::from_utf8(buf[..len].to_vec())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
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

/// The names in a directory, without `.` and `..`; names that are not UTF-8 are skipped.
pub fn list_dir(dir: OwnedFd) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in rfs::Dir::new(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name != "." && name != ".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
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
