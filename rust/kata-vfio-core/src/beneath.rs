//! Root confinement: every path under a given root (the sysfs, dev or proc root a caller
//! names) is resolved beneath it, so no read or write leaves the tree given. The scan
//! (reads), binding (reads and writes), the device-node lookup and the IOMMU status all open
//! through here.
//!
//! The real `/sys` has relative links only, and they stay inside it. A copied or hostile tree
//! may hold an absolute link (`driver_override -> /etc/passwd`) or a `..` chain that climbs
//! out; both are refused with `EXDEV`, as the kernel's `RESOLVE_BENEATH` does. Resolution
//! uses `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` (Linux 5.6+) and, where that call
//! is missing or filtered (old kernels, seccomp profiles that answer `ENOSYS`/`EPERM`), or
//! keeps answering `EAGAIN` (renames racing a `..`), walks the path one component at a time
//! with `O_NOFOLLOW`, reading each link and resolving it itself under the same rules.
//!
//! Files are read only when they are regular files, opened without blocking (a FIFO where an
//! attribute should be is an error, never a hang) and with a size cap. Writes open write-only,
//! never create, never truncate (the kernel's sysfs store sees exactly the bytes written),
//! never through a final symlink, and on the host's own sysfs only files of sysfs.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// `SYSFS_MAGIC` from `<linux/magic.h>`: what `statfs` says of a real sysfs.
pub const SYSFS_MAGIC: i64 = 0x6265_6572;
/// Text attributes of sysfs are at most one page.
pub const ATTR_MAX: usize = 4096;
/// The kernel's limit on links followed in one lookup (`MAXSYMLINKS`).
const MAX_LINKS: usize = 40;
/// How often `openat2` answers `EAGAIN` (a rename or mount raced a `..` step) before the walk
/// takes over.
const OPENAT2_TRIES: usize = 8;

/// Whether `openat2` works here: unknown until first used, then remembered.
static OPENAT2: AtomicU8 = AtomicU8::new(OPENAT2_UNKNOWN);
const OPENAT2_UNKNOWN: u8 = 0;
const OPENAT2_YES: u8 = 1;
const OPENAT2_NO: u8 = 2;

/// Opens `path` (relative; `/` and `..` may not leave `dir`) beneath `dir` with `flags`
/// (`O_CLOEXEC` added). Links inside the path are followed while they stay beneath `dir`; the
/// final component is followed too unless `flags` has `O_NOFOLLOW`. A path that would leave
/// `dir` fails with `EXDEV`; more than 40 links with `ELOOP`.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    path: impl AsRef<Path>,
    flags: OFlags,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let path = path.as_ref();
    if path.is_absolute() {
        return Err(Errno::XDEV.into());
    }
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let flags = flags | OFlags::CLOEXEC;
    if OPENAT2.load(Ordering::Relaxed) != OPENAT2_NO {
        match openat2_beneath(dir, path, flags, mode) {
            Err(Errno::NOSYS | Errno::PERM) if OPENAT2.load(Ordering::Relaxed) != OPENAT2_YES => {
                // Missing or filtered: the walk below gives the same answers.
                OPENAT2.store(OPENAT2_NO, Ordering::Relaxed);
            }
            // Renames kept racing the lookup: the walk does not need the kernel's vouching.
            Err(Errno::AGAIN) => {}
            result => {
                OPENAT2.store(OPENAT2_YES, Ordering::Relaxed);
                return result.map_err(io::Error::from);
            }
        }
    }
    walk_beneath(dir, path, flags, mode)
}

fn openat2_beneath(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: OFlags,
    mode: Mode,
) -> rustix::io::Result<OwnedFd> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let mut result = Err(Errno::AGAIN);
    for _ in 0..OPENAT2_TRIES {
        result = rfs::openat2(dir, path, flags, mode, resolve);
        if !matches!(result, Err(Errno::AGAIN)) {
            break;
        }
    }
    result
}

/// The same resolution as `openat2(RESOLVE_BENEATH)`, in user space: one component at a time
/// from `dir`, each directory opened `O_PATH | O_NOFOLLOW` relative to the one before, each
/// link read and its target walked in its place; `..` goes back up the chain of opened
/// directories and fails at `dir`; an absolute target is `EXDEV`.
pub fn walk_beneath(
    dir: BorrowedFd<'_>,
    path: impl AsRef<Path>,
    flags: OFlags,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC;
    let follow_final = !flags.contains(OFlags::NOFOLLOW);
    // Components still to walk, the next one last.
    let mut todo: Vec<String> = Vec::new();
    push_components(&mut todo, path.as_ref())?;
    let mut chain: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            if chain.pop().is_none() {
                return Err(Errno::XDEV.into());
            }
            continue;
        }
        let here = chain.last().map_or(dir, AsFd::as_fd);
        let last = todo.is_empty();
        if last && !follow_final {
            return Ok(rfs::openat(here, name.as_str(), flags, mode)?);
        }
        match rfs::readlinkat(here, name.as_str(), Vec::new()) {
            Ok(target) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno::LOOP.into());
                }
                let target = target.into_string().map_err(|_| Errno::INVAL)?;
                push_components(&mut todo, Path::new(&target))?;
            }
            // Not a link: the last component is opened as asked, the others as directories.
            Err(Errno::INVAL) if last => {
                return Ok(rfs::openat(
                    here,
                    name.as_str(),
                    flags | OFlags::NOFOLLOW,
                    mode,
                )?);
            }
            Err(Errno::INVAL) => chain.push(rfs::openat(
                here,
                name.as_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?),
            Err(e) => return Err(e.into()),
        }
    }
    // The path named a directory reached through `.`, `..` or a link: open it itself.
    let here = chain.last().map_or(dir, AsFd::as_fd);
    Ok(rfs::openat(here, ".", flags, mode)?)
}

/// Queues `path`'s components to be walked next (the first one last); an absolute path is
/// `EXDEV`.
fn push_components(todo: &mut Vec<String>, path: &Path) -> io::Result<()> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => names.push(
                name.to_str()
                    .ok_or_else(|| io::Error::from(Errno::INVAL))?
                    .to_owned(),
            ),
            Component::ParentDir => names.push("..".to_owned()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(Errno::XDEV.into()),
        }
    }
    todo.extend(names.into_iter().rev());
    Ok(())
}

/// A directory every later path is resolved beneath (the sysfs, dev or proc root).
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
    path: PathBuf,
    /// The root is a sysfs mount: a write must land on sysfs too (not on a mount over it).
    sysfs: bool,
}

impl RootDir {
    /// Opens the root itself (a path the user gave: followed as given).
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            sysfs: false,
        })
    }

    /// Opens a sysfs root: the host's own `/sys` must be a sysfs mount (`statfs` magic), so a
    /// bind mount or tmpfs over it is refused before anything is read or written; a copy
    /// anywhere else is read as the tree it is.
    pub fn open_sysfs(path: &Path) -> io::Result<Self> {
        let mut root = Self::open(path)?;
        root.sysfs = on_sysfs(root.fd())?;
        if !root.sysfs && is_host_sys(root.fd(), path) {
            return Err(not_sysfs(path, root.fd()));
        }
        Ok(root)
    }

    /// The root's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path the root was opened from, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the root is a mounted sysfs (then every write is checked to land on sysfs).
    pub fn is_sysfs(&self) -> bool {
        self.sysfs
    }

    /// `path` relative to the root: itself when relative, else with the root's prefix
    /// removed. A path outside the root is `EXDEV`.
    pub fn relative<'p>(&self, path: &'p Path) -> io::Result<&'p Path> {
        if path.is_relative() {
            return Ok(path);
        }
        path.strip_prefix(&self.path).map_err(|_| {
            io::Error::other(format!(
                "{} is outside the root {} ({})",
                path.display(),
                self.path.display(),
                io::Error::from(Errno::XDEV)
            ))
        })
    }

    /// Opens `rel` beneath the root with `flags`, never following a final symlink.
    pub fn open_file(&self, rel: impl AsRef<Path>, flags: OFlags) -> io::Result<OwnedFd> {
        open_beneath(self.fd(), rel, flags | OFlags::NOFOLLOW, Mode::empty())
    }

    /// Opens the directory `rel` beneath the root (links followed while they stay inside,
    /// the final one too, as `bus/pci/devices/<bdf>` needs) for listing or as an anchor.
    pub fn open_dir(&self, rel: impl AsRef<Path>) -> io::Result<OwnedFd> {
        open_beneath(
            self.fd(),
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
    }

    /// The directory holding `rel`'s last component, opened beneath the root, and that name.
    pub fn parent_of<'p>(&self, rel: &'p Path) -> io::Result<(OwnedFd, &'p OsStr)> {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(Errno::INVAL.into());
        };
        let fd = open_beneath(
            self.fd(),
            parent,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        )?;
        Ok((fd, name))
    }

    /// Whether `rel` is a directory beneath the root (a missing or escaping one is not).
    pub fn is_dir(&self, rel: impl AsRef<Path>) -> bool {
        open_beneath(
            self.fd(),
            rel,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .is_ok()
    }

    /// Whether something (of any kind: a link counts) is at `rel` beneath the root.
    pub fn exists(&self, rel: impl AsRef<Path>) -> bool {
        self.lstat(rel).is_ok()
    }

    /// Whether `rel` resolves beneath the root to something that exists (links followed
    /// inside the root; a dangling link or one that leaves is `false`).
    pub fn resolves(&self, rel: impl AsRef<Path>) -> bool {
        open_beneath(self.fd(), rel, OFlags::PATH, Mode::empty()).is_ok()
    }

    /// `lstat` of `rel` beneath the root: links on the way are followed while they stay
    /// inside, the last component itself is not.
    pub fn lstat(&self, rel: impl AsRef<Path>) -> io::Result<rfs::Stat> {
        let (dir, name) = self.parent_of(rel.as_ref())?;
        Ok(rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// What `rel` resolves to beneath the root (file type, device number).
    pub fn stat(&self, rel: impl AsRef<Path>) -> io::Result<rfs::Stat> {
        let fd = open_beneath(self.fd(), rel, OFlags::PATH, Mode::empty())?;
        Ok(rfs::fstat(&fd)?)
    }

    /// A link's target (the link itself is not followed); `NotFound` when absent, `EINVAL`
    /// when it is not a link.
    pub fn read_link(&self, rel: impl AsRef<Path>) -> io::Result<String> {
        let (dir, name) = self.parent_of(rel.as_ref())?;
        readlink_at(dir.as_fd(), name)
    }

    /// A regular file beneath the root, read without blocking, at most `cap` bytes (a longer
    /// one is an error); the final component is never a link.
    pub fn read_capped(&self, rel: impl AsRef<Path>, cap: usize) -> io::Result<Vec<u8>> {
        let fd = self.open_file(rel, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)?;
        read_capped(fd.as_fd(), cap)
    }

    /// An attribute beneath the root as trimmed text ([`Self::read_capped`] at one page;
    /// invalid UTF-8 is an `InvalidData` error); `NotFound` when absent.
    pub fn read_text(&self, rel: impl AsRef<Path>) -> io::Result<String> {
        let bytes = self.read_capped(rel, ATTR_MAX)?;
        String::from_utf8(bytes)
            .map(|text| text.trim().to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// The names in a directory beneath the root (unsorted; names that are not UTF-8 are
    /// left out).
    pub fn list(&self, rel: impl AsRef<Path>) -> io::Result<Vec<String>> {
        list_dir(self.open_dir(rel)?)
    }

    /// Writes `value` to the attribute `rel` in one `write()`: opened write-only, never
    /// created, never truncated, never through a symlink, never blocking; a regular file,
    /// and under a sysfs root a file of sysfs.
    pub fn write_attr(&self, rel: impl AsRef<Path>, value: &[u8]) -> io::Result<()> {
        let rel = rel.as_ref();
        let fd = self.open_file(rel, OFlags::WRONLY | OFlags::NONBLOCK | OFlags::NOCTTY)?;
        require_regular(fd.as_fd())?;
        if self.sysfs && !on_sysfs(fd.as_fd())? {
            return Err(not_sysfs(&self.path.join(rel), fd.as_fd()));
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

/// Whether the file behind `fd` is on a sysfs mount.
fn on_sysfs(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let fs = rfs::fstatfs(fd)?;
    #[allow(clippy::cast_lossless, clippy::unnecessary_cast)] // f_type's width varies by arch
    Ok(fs.f_type as i64 == SYSFS_MAGIC)
}

fn not_sysfs(path: &Path, fd: BorrowedFd<'_>) -> io::Error {
    let magic = rfs::fstatfs(fd).map(|fs| fs.f_type).unwrap_or_default();
    io::Error::other(format!(
        "{} is not on sysfs (filesystem magic {magic:#x}): refusing to use it as the host's sysfs",
        path.display()
    ))
}

/// Whether `fd` (opened from `path`) is the host's own `/sys`: the literal path, or the same
/// directory reached another way.
fn is_host_sys(fd: BorrowedFd<'_>, path: &Path) -> bool {
    if path == Path::new("/sys") {
        return true;
    }
    match (rfs::fstat(fd), rfs::stat("/sys")) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

/// The error of a file that is not a regular file (a FIFO, a device node, a directory or a
/// link where a file should be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRegularFile {
    /// What it is instead (`a FIFO`, `a directory`), when known.
    pub kind: Option<&'static str>,
}

impl std::fmt::Display for NotRegularFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            Some(kind) => write!(f, "not a regular file ({kind})"),
            None => f.write_str("not a regular file"),
        }
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

/// Refuses anything but a regular file.
pub fn require_regular(fd: BorrowedFd<'_>) -> io::Result<()> {
    let kind = FileType::from_raw_mode(rfs::fstat(fd)?.st_mode);
    if kind == FileType::RegularFile {
        return Ok(());
    }
    let kind = match kind {
        FileType::Fifo => "a FIFO",
        FileType::Directory => "a directory",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Symlink => "a symlink",
        FileType::Socket => "a socket",
        _ => "of an unknown kind",
    };
    Err(io::Error::other(NotRegularFile { kind: Some(kind) }))
}

/// Reads at most `limit` bytes of a regular file, in as many reads as it takes (procfs files
/// report size 0 and may come in pieces); what follows is not read.
pub fn read_bounded(fd: BorrowedFd<'_>, limit: usize) -> io::Result<Vec<u8>> {
    require_regular(fd)?;
    let mut out = Vec::new();
    // A large limit (a procfs table) is not allocated up front: the file decides.
    let mut chunk = vec![0u8; limit.min(64 * 1024)];
    while out.len() < limit {
        let want = (limit - out.len()).min(chunk.len());
        match rustix::io::read(fd, &mut chunk[..want])? {
            0 => break,
            n => out.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(out)
}

/// Reads a whole regular file of at most `cap` bytes; a longer one is an error (`EFBIG`).
pub fn read_capped(fd: BorrowedFd<'_>, cap: usize) -> io::Result<Vec<u8>> {
    let bytes = read_bounded(fd, cap.saturating_add(1))?;
    if bytes.len() > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {cap} bytes ({})", io::Error::from(Errno::FBIG)),
        ));
    }
    Ok(bytes)
}

/// Reads a whole file by path (no root: `modules.alias` under the modules root, which may
/// lead anywhere on the host by design): non-blocking, regular files only, at most `cap`
/// bytes.
pub fn read_file_capped(path: &Path, cap: usize) -> io::Result<Vec<u8>> {
    let fd = rfs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    read_capped(fd.as_fd(), cap)
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

/// A symlink's target relative to `dir` (the link itself is not followed).
pub fn readlink_at(dir: BorrowedFd<'_>, name: impl AsRef<Path>) -> io::Result<String> {
    let target = rfs::readlinkat(dir, name.as_ref(), Vec::new())?;
    target
        .into_string()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A scratch tree: `root/` (a sysfs-like tree with a relative device link) and a file
    /// and a directory outside it; removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "kata-vfio-beneath-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            let device = dir.join("root/devices/pci0000:00/0000:00:01.0");
            fs::create_dir_all(&device).unwrap();
            fs::create_dir_all(dir.join("root/bus/pci/devices")).unwrap();
            fs::create_dir_all(dir.join("outside")).unwrap();
            fs::write(dir.join("outside/attr"), "secret\n").unwrap();
            fs::write(device.join("vendor"), "0x10de\n").unwrap();
            fs::write(device.join("driver_override"), "inside\n").unwrap();
            symlink(
                "../../../devices/pci0000:00/0000:00:01.0",
                dir.join("root/bus/pci/devices/0000:00:01.0"),
            )
            .unwrap();
            Self(dir)
        }

        fn root(&self) -> RootDir {
            RootDir::open(&self.0.join("root")).unwrap()
        }

        fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.0.join(rel)).unwrap()
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const DEVICE: &str = "bus/pci/devices/0000:00:01.0";

    /// The kernel's resolution and the walk, on the same path.
    fn both(root: &RootDir, rel: &str, flags: OFlags) -> [io::Result<OwnedFd>; 2] {
        [
            open_beneath(root.fd(), rel, flags, Mode::empty()),
            walk_beneath(root.fd(), rel, flags, Mode::empty()),
        ]
    }

    fn errno(result: &io::Result<OwnedFd>) -> Option<i32> {
        result.as_ref().err().and_then(io::Error::raw_os_error)
    }

    #[test]
    fn relative_links_inside_resolve() {
        let tree = Tree::new("inside");
        let root = tree.root();
        for result in both(&root, &format!("{DEVICE}/vendor"), OFlags::RDONLY) {
            let bytes = read_capped(result.unwrap().as_fd(), ATTR_MAX).unwrap();
            assert_eq!(bytes, b"0x10de\n");
        }
        assert_eq!(
            root.read_text(format!("{DEVICE}/vendor")).unwrap(),
            "0x10de"
        );
    }

    #[test]
    fn absolute_links_are_refused() {
        let tree = Tree::new("absolute");
        symlink(
            tree.0.join("outside/attr"),
            tree.0.join("root/devices/pci0000:00/0000:00:01.0/reset"),
        )
        .unwrap();
        symlink(tree.0.join("outside"), tree.0.join("root/bus/abs")).unwrap();
        let root = tree.root();
        for rel in [
            &format!("{DEVICE}/reset") as &str,
            "bus/abs/attr",
            "/etc/passwd",
        ] {
            for result in both(&root, rel, OFlags::RDONLY) {
                assert_eq!(errno(&result), Some(18), "{rel}"); // EXDEV
            }
        }
        assert!(root.read_text("bus/abs/attr").is_err());
        assert!(root.write_attr("bus/abs/attr", b"x").is_err());
        assert_eq!(tree.read("outside/attr"), "secret\n");
    }

    #[test]
    fn dotdot_escapes_are_refused() {
        let tree = Tree::new("dotdot");
        symlink("../../../..", tree.0.join("root/bus/pci/devices/up")).unwrap();
        symlink("../../../outside", tree.0.join("root/bus/pci/out")).unwrap();
        let root = tree.root();
        for rel in [
            "../outside/attr",
            "bus/../../outside/attr",
            "bus/pci/devices/up/outside/attr",
            "bus/pci/out/attr",
        ] {
            for result in both(&root, rel, OFlags::RDONLY) {
                assert_eq!(errno(&result), Some(18), "{rel}");
            }
        }
        // `..` that stays inside is fine.
        for result in both(&root, "bus/pci/../../devices/pci0000:00", OFlags::PATH) {
            result.unwrap();
        }
    }

    #[test]
    fn nofollow_applies_to_the_last_component_only() {
        let tree = Tree::new("nofollow");
        symlink(
            "vendor",
            tree.0.join("root/devices/pci0000:00/0000:00:01.0/alias"),
        )
        .unwrap();
        let root = tree.root();
        let rel = format!("{DEVICE}/alias");
        for result in both(&root, &rel, OFlags::RDONLY | OFlags::NOFOLLOW) {
            assert_eq!(errno(&result), Some(40), "ELOOP"); // the link itself is not opened
        }
        for result in both(&root, &rel, OFlags::RDONLY) {
            result.unwrap();
        }
        // The root's own helpers never follow a final link when reading or writing a file.
        assert!(is_not_regular(&root.read_text(&rel).unwrap_err()));
        assert!(root.write_attr(&rel, b"x").is_err());
    }

    #[test]
    fn link_loops_end() {
        let tree = Tree::new("loop");
        symlink("b", tree.0.join("root/a")).unwrap();
        symlink("a", tree.0.join("root/b")).unwrap();
        let root = tree.root();
        for result in both(&root, "a/x", OFlags::RDONLY) {
            assert_eq!(errno(&result), Some(40));
        }
    }

    #[test]
    fn helpers() {
        let tree = Tree::new("helpers");
        let root = tree.root();
        assert!(root.exists(DEVICE));
        assert!(root.resolves(DEVICE));
        assert!(root.is_dir(DEVICE));
        assert!(!root.exists("bus/pci/devices/0000:00:02.0"));
        assert_eq!(
            root.read_link(DEVICE).unwrap(),
            "../../../devices/pci0000:00/0000:00:01.0"
        );
        assert_eq!(root.list("bus/pci/devices").unwrap(), ["0000:00:01.0"]);
        assert_eq!(
            root.relative(&tree.0.join("root/bus")).unwrap(),
            Path::new("bus")
        );
        assert!(root.relative(&tree.0.join("outside")).is_err());
    }

    #[test]
    fn writes_never_truncate_create_or_follow() {
        let tree = Tree::new("writes");
        let root = tree.root();
        root.write_attr(format!("{DEVICE}/driver_override"), b"x")
            .unwrap();
        // No O_TRUNC: the kernel's sysfs store sees the whole write; a file keeps its tail.
        assert_eq!(
            tree.read("root/devices/pci0000:00/0000:00:01.0/driver_override"),
            "xnside\n"
        );
        symlink(
            "driver_override",
            tree.0.join("root/devices/pci0000:00/0000:00:01.0/link"),
        )
        .unwrap();
        assert!(root.write_attr(format!("{DEVICE}/link"), b"y").is_err());
        assert!(root.write_attr("devices/new", b"x").is_err());
        assert!(!tree.0.join("root/devices/new").exists());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let tree = Tree::new("fifo");
        let fifo = tree
            .0
            .join("root/devices/pci0000:00/0000:00:01.0/driver_override");
        fs::remove_file(&fifo).unwrap();
        rfs::mknodat(
            rfs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let root = tree.root();
        let rel = format!("{DEVICE}/driver_override");
        let err = root.read_text(&rel).unwrap_err();
        assert!(is_not_regular(&err), "{err}");
        assert!(
            err.to_string().contains("not a regular file (a FIFO)"),
            "{err}"
        );
        assert!(
            root.write_attr(&rel, b"x").is_err(),
            "no reader: ENXIO or refused, never a hang"
        );
    }

    #[test]
    fn reads_are_capped_or_bounded() {
        let tree = Tree::new("cap");
        fs::write(tree.0.join("root/big"), vec![b'x'; ATTR_MAX + 1]).unwrap();
        let root = tree.root();
        let err = root.read_text("big").unwrap_err();
        assert!(
            err.to_string().starts_with("longer than 4096 bytes"),
            "{err}"
        );
        let fd = root.open_file("big", OFlags::RDONLY).unwrap();
        assert_eq!(read_bounded(fd.as_fd(), 10).unwrap(), b"xxxxxxxxxx");
    }

    #[test]
    fn procfs_reads_beneath_proc() {
        // `self` and `net` are plain links inside procfs (not magic ones): binding's procfs
        // reads resolve beneath the proc root like any tree.
        if !Path::new("/proc/self/mountinfo").exists() {
            return;
        }
        let proc = RootDir::open(Path::new("/proc")).unwrap();
        assert!(!proc
            .read_capped("self/mountinfo", 64 << 20)
            .unwrap()
            .is_empty());
        assert!(proc.read_text("sys/kernel/osrelease").is_ok());
        let me = std::process::id().to_string();
        assert!(!proc.list(format!("{me}/fd")).unwrap().is_empty());
        // The magic links themselves are never walked through: ELOOP from openat2, EXDEV
        // from the walk (their targets read as absolute paths).
        let err = proc.open_dir("self/cwd").unwrap_err();
        assert!(matches!(err.raw_os_error(), Some(40 | 18)), "{err}");
    }

    #[test]
    fn only_the_hosts_sys_must_be_sysfs() {
        // A copied tree is not sysfs and need not be; its writes are not checked.
        let tree = Tree::new("magic");
        let copy = RootDir::open_sysfs(&tree.0.join("root")).unwrap();
        assert!(!copy.is_sysfs());
        assert!(!on_sysfs(copy.fd()).unwrap());
        assert!(!is_host_sys(copy.fd(), copy.path()));
        // On this machine /sys is a real sysfs.
        if Path::new("/sys/kernel").is_dir() {
            let sys = RootDir::open_sysfs(Path::new("/sys")).expect("real /sys");
            assert!(sys.is_sysfs());
            let again = RootDir::open(Path::new("/sys/kernel/..")).unwrap();
            assert!(is_host_sys(again.fd(), again.path()));
        }
    }
}
