//! Files under a root directory, opened without ever leaving it.
//!
//! A tree given with `--sysfs-root` may be a copy made by anyone: an absolute symlink or a
//! `..` chain in it must not turn a write meant for the copy into a write somewhere else on
//! the host. Every open here is relative to the root's directory fd and resolved with
//! `openat2(RESOLVE_BENEATH)`, which makes the kernel refuse (`EXDEV`) any step above the
//! root; kernels before 5.6 (no `openat2`) get the same rule from a component-by-component
//! walk. The final component is never followed (`O_NOFOLLOW`) unless the caller opens a
//! directory (sysfs device directories are links), attribute opens never block
//! (`O_NONBLOCK`), and only regular files are read or written (sysfs attributes are).
//!
//! The walk is written so the scan's read side can share it later: nothing here knows PCI.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// `SYSFS_MAGIC` from `<linux/magic.h>`: what `statfs` says of a real sysfs.
pub const SYSFS_MAGIC: i64 = 0x6265_6572;
/// The most symlinks one lookup follows (the kernel's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;
/// How often `openat2` is tried before the walk takes over (it answers `EAGAIN` when a
/// rename elsewhere raced a `..` in the lookup).
const OPENAT2_TRIES: usize = 3;
/// Text attributes of sysfs are at most one page.
pub const ATTR_MAX: usize = 4096;

/// An open root directory; every path below is relative to it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    real_sysfs: bool,
}

impl Root {
    /// Opens `path` as a root. The real `/sys` must be a sysfs mount (`statfs` magic), so a
    /// bind mount of something else over it is refused before anything is written.
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let real_sysfs = path == Path::new("/sys");
        if real_sysfs {
            check_sysfs(fd.as_fd(), path)?;
        }
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            real_sysfs,
        })
    }

    /// The root's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is the host's own `/sys` (then written files must be on sysfs).
    pub fn is_real_sysfs(&self) -> bool {
        self.real_sysfs
    }

    /// `rel` as a path relative to the root: `path` itself when it is relative, else `path`
    /// with the root's prefix removed. A path outside the root is `EXDEV`.
    pub fn relative<'p>(&self, path: &'p Path) -> io::Result<&'p Path> {
        if path.is_relative() {
            return Ok(path);
        }
        path.strip_prefix(&self.path)
            .map_err(|_| outside(path, &self.path))
    }

    /// Opens `rel` below the root with `flags`, never following a final symlink.
    pub fn open_file(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        open_beneath(self.fd.as_fd(), rel, flags | OFlags::NOFOLLOW, false)
    }

    /// Opens the directory `rel` (following a final link, as `bus/pci/devices/<bdf>` needs)
    /// for listing or as an anchor.
    pub fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        open_beneath(
            self.fd.as_fd(),
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            true,
        )
    }

    /// Whether `rel` is a directory below the root (a missing or escaping one is not).
    pub fn is_dir(&self, rel: &Path) -> bool {
        open_beneath(
            self.fd.as_fd(),
            rel,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            true,
        )
        .is_ok()
    }

    /// Whether something (of any kind) is at `rel`, without following a final link.
    pub fn exists(&self, rel: &Path) -> bool {
        open_beneath(
            self.fd.as_fd(),
            rel,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            false,
        )
        .is_ok()
    }

    /// A symlink's target; `NotFound` when absent, `EINVAL` when it is not a link.
    pub fn read_link(&self, rel: &Path) -> io::Result<String> {
        let (parent, name) = split(rel)?;
        let dir = self.open_dir(parent)?;
        let target = rfs::readlinkat(dir.as_fd(), name, Vec::new())?;
        target
            .into_string()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    /// A text attribute (at most [`ATTR_MAX`] bytes, read without blocking from a regular
    /// file); `NotFound` when absent.
    pub fn read_attr(&self, rel: &Path) -> io::Result<String> {
        let fd = self.open_file(
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        )?;
        let bytes = read_regular(fd.as_fd(), ATTR_MAX)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The names in directory `rel` (unsorted, without `.` and `..`); `NotFound` when absent.
    pub fn list(&self, rel: &Path) -> io::Result<Vec<String>> {
        let dir = self.open_dir(rel)?;
        let mut names = Vec::new();
        for entry in rfs::Dir::new(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy();
            if name != "." && name != ".." {
                names.push(name.into_owned());
            }
        }
        Ok(names)
    }

    /// Writes `value` to the attribute `rel` in one `write()`: opened write-only, never
    /// created, never truncated, never through a symlink, never blocking; a regular file,
    /// and on the real `/sys` a file of sysfs.
    pub fn write_attr(&self, rel: &Path, value: &[u8]) -> io::Result<()> {
        let fd = self.open_file(
            rel,
            OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        )?;
        require_regular(fd.as_fd())?;
        if self.real_sysfs {
            check_sysfs(fd.as_fd(), &self.path.join(rel))?;
        }
        let written = rustix::io::write(fd.as_fd(), value)?;
        if written == value.len() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "short write ({written} of {} bytes)",
                value.len()
            )))
        }
    }
}

fn outside(path: &Path, root: &Path) -> io::Error {
    io::Error::other(format!(
        "{} is outside the root {} ({})",
        path.display(),
        root.display(),
        io::Error::from(Errno::XDEV)
    ))
}

fn split(rel: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    match (rel.parent(), rel.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(Errno::INVAL.into()),
    }
}

/// Refuses a file that is not on sysfs (a bind mount or a tmpfs over `/sys`).
fn check_sysfs(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let fs = rfs::fstatfs(fd)?;
    #[allow(clippy::cast_lossless, clippy::unnecessary_cast)] // f_type's width varies by arch
    if fs.f_type as i64 == SYSFS_MAGIC {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{} is not on sysfs (filesystem magic {:#x}): refusing to write there",
            path.display(),
            fs.f_type
        )))
    }
}

/// Refuses anything but a regular file (a FIFO, a device node or a directory where an
/// attribute should be).
pub fn require_regular(fd: BorrowedFd<'_>) -> io::Result<()> {
    let kind = FileType::from_raw_mode(rfs::fstat(fd)?.st_mode);
    if kind == FileType::RegularFile {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file (a {kind:?})"),
        ))
    }
}

/// Reads a regular file of at most `cap` bytes; a longer one is `EFBIG`.
pub fn read_regular(fd: BorrowedFd<'_>, cap: usize) -> io::Result<Vec<u8>> {
    require_regular(fd)?;
    let mut out = Vec::new();
    let mut chunk = vec![0u8; cap.min(64 * 1024) + 1];
    loop {
        let n = rustix::io::read(fd, &mut chunk)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&chunk[..n]);
        if out.len() > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("longer than {cap} bytes ({})", io::Error::from(Errno::FBIG)),
            ));
        }
    }
}

/// Reads a whole file by path (any path, no root): non-blocking, regular files only, at
/// most `cap` bytes. For procfs files and `modules.alias`.
pub fn read_file_capped(path: &Path, cap: usize) -> io::Result<Vec<u8>> {
    let fd = rfs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    read_regular(fd.as_fd(), cap)
}

/// Opens `rel` below `root`. `follow_final`: whether a final symlink is followed (still
/// beneath the root).
pub fn open_beneath(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    follow_final: bool,
) -> io::Result<OwnedFd> {
    if rel.is_absolute() {
        return Err(Errno::XDEV.into());
    }
    let flags = if follow_final {
        flags
    } else {
        flags | OFlags::NOFOLLOW
    };
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    for _ in 0..OPENAT2_TRIES {
        match rfs::openat2(
            root,
            rel,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            // A rename anywhere on the system while a `..` was resolved: the kernel cannot
            // vouch for the result and asks for a retry.
            Err(Errno::AGAIN) => {}
            // No openat2 (Linux < 5.6, or a seccomp filter that does not know it).
            Err(Errno::NOSYS | Errno::PERM) => break,
            other => return other.map_err(Into::into),
        }
    }
    walk_beneath(root, rel, flags, follow_final)
}

/// `openat2(RESOLVE_BENEATH)` done by hand: one component at a time from the root, reading
/// each symlink and queueing its target's components; an absolute target or a `..` above
/// the root is `EXDEV`.
pub fn walk_beneath(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    follow_final: bool,
) -> io::Result<OwnedFd> {
    let flags = if follow_final {
        flags
    } else {
        flags | OFlags::NOFOLLOW
    };
    let mut queue: VecDeque<String> = VecDeque::new();
    push_components(&mut queue, rel, false)?;
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            if stack.pop().is_none() {
                return Err(Errno::XDEV.into());
            }
            continue;
        }
        let here = stack.last().map_or(root, AsFd::as_fd);
        let last = queue.is_empty();
        if last && !follow_final {
            return Ok(rfs::openat(here, name.as_str(), flags, Mode::empty())?);
        }
        match rfs::readlinkat(here, name.as_str(), Vec::new()) {
            Ok(target) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno::LOOP.into());
                }
                let target = PathBuf::from(
                    target
                        .into_string()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
                );
                push_components(&mut queue, &target, true)?;
            }
            Err(Errno::INVAL) if last => {
                return Ok(rfs::openat(
                    here,
                    name.as_str(),
                    flags | OFlags::NOFOLLOW,
                    Mode::empty(),
                )?);
            }
            Err(Errno::INVAL) => stack.push(rfs::openat(
                here,
                name.as_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?),
            Err(e) => return Err(e.into()),
        }
    }
    // The path named a directory reached through `..` or a link: open it itself.
    let here = stack.last().map_or(root, AsFd::as_fd);
    Ok(rfs::openat(here, ".", flags, Mode::empty())?)
}

/// Queues `path`'s components (at the front when `front`, for a link target); an absolute
/// path is `EXDEV`.
fn push_components(queue: &mut VecDeque<String>, path: &Path, front: bool) -> io::Result<()> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => names.push(name.to_string_lossy().into_owned()),
            Component::ParentDir => names.push("..".to_owned()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(Errno::XDEV.into()),
        }
    }
    if front {
        for name in names.into_iter().rev() {
            queue.push_front(name);
        }
    } else {
        queue.extend(names);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kv-beneath-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("root/devices/real")).expect("mkdir");
        fs::create_dir_all(dir.join("outside")).expect("mkdir");
        fs::write(dir.join("root/devices/real/attr"), "inside\n").expect("write");
        fs::write(dir.join("outside/attr"), "outside\n").expect("write");
        fs::create_dir_all(dir.join("root/bus")).expect("mkdir");
        symlink("../devices/real", dir.join("root/bus/rel")).expect("link");
        symlink(dir.join("outside"), dir.join("root/bus/abs")).expect("link");
        symlink("../../../outside", dir.join("root/bus/up")).expect("link");
        symlink("../devices/real/attr", dir.join("root/bus/attr-link")).expect("link");
        dir
    }

    type Opener = fn(BorrowedFd<'_>, &Path, OFlags, bool) -> io::Result<OwnedFd>;

    fn read_via(open: Opener, root: &Path, rel: &str) -> io::Result<String> {
        let root = Root::open(root)?;
        let fd = open(
            root.fd.as_fd(),
            Path::new(rel),
            OFlags::RDONLY | OFlags::CLOEXEC,
            false,
        )?;
        Ok(String::from_utf8_lossy(&read_regular(fd.as_fd(), ATTR_MAX)?).into_owned())
    }

    #[test]
    fn relative_links_inside_the_root_resolve_and_escapes_are_refused() {
        let dir = scratch("links");
        let root = dir.join("root");
        for open in [open_beneath as Opener, walk_beneath as Opener] {
            assert_eq!(
                read_via(open, &root, "bus/rel/attr").expect("inside"),
                "inside\n"
            );
            for escape in [
                "bus/abs/attr",
                "bus/up/attr",
                "../outside/attr",
                "bus/../../x",
            ] {
                let err = read_via(open, &root, escape).expect_err(escape);
                assert_eq!(
                    err.raw_os_error(),
                    Some(Errno::XDEV.raw_os_error()),
                    "{escape}"
                );
            }
            // The final component is never followed.
            let err = read_via(open, &root, "bus/attr-link").expect_err("final link");
            assert_eq!(err.raw_os_error(), Some(Errno::LOOP.raw_os_error()));
        }
        assert_eq!(
            fs::read_to_string(dir.join("outside/attr")).expect("read"),
            "outside\n"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn writes_never_truncate_create_or_follow() {
        let dir = scratch("writes");
        let root = Root::open(&dir.join("root")).expect("root");
        root.write_attr(Path::new("bus/rel/attr"), b"x")
            .expect("write");
        // No O_TRUNC: the kernel's sysfs store sees the whole write; a file keeps its tail.
        assert_eq!(
            fs::read_to_string(dir.join("root/devices/real/attr")).expect("read"),
            "xnside\n"
        );
        assert!(root.write_attr(Path::new("bus/abs/attr"), b"x").is_err());
        assert!(root.write_attr(Path::new("bus/attr-link"), b"x").is_err());
        assert!(root.write_attr(Path::new("devices/new"), b"x").is_err());
        assert!(!dir.join("root/devices/new").exists());
        assert_eq!(
            fs::read_to_string(dir.join("outside/attr")).expect("read"),
            "outside\n"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = scratch("fifo");
        let fifo = dir.join("root/devices/real/driver_override");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let root = Root::open(&dir.join("root")).expect("root");
        let read = root.read_attr(Path::new("devices/real/driver_override"));
        assert!(read
            .expect_err("fifo")
            .to_string()
            .contains("not a regular file"));
        let write = root.write_attr(Path::new("devices/real/driver_override"), b"x");
        assert!(write.is_err(), "no reader: ENXIO or refused, never a hang");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_are_capped() {
        let dir = scratch("cap");
        fs::write(dir.join("root/big"), vec![b'x'; ATTR_MAX + 1]).expect("write");
        let root = Root::open(&dir.join("root")).expect("root");
        assert!(root.read_attr(Path::new("big")).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_tree_posing_as_sys_is_not_sysfs() {
        // Only the literal /sys is checked; on this machine /sys is a real sysfs.
        if Path::new("/sys/kernel").is_dir() {
            let root = Root::open(Path::new("/sys")).expect("real /sys");
            assert!(root.is_real_sysfs());
        }
        let dir = scratch("magic");
        let err = check_sysfs(
            Root::open(&dir.join("root")).expect("root").fd.as_fd(),
            &dir,
        )
        .expect_err("tmp is not sysfs");
        assert!(err.to_string().contains("not on sysfs"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
