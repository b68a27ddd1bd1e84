//! Root confinement: every path under a given root (`--sysfs-root`, `--dev-root`,
//! `--proc-root`) is resolved beneath it, so no read or write leaves the tree given.
//!
//! The real `/sys` has relative links only, and they stay inside it. A copied or hostile tree
//! may hold an absolute link (`driver_override -> /etc/passwd`) or a `..` chain that climbs
//! out; both are refused with `EXDEV`, as the kernel's `RESOLVE_BENEATH` does. Resolution
//! uses `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` (Linux 5.6+) and, where that call
//! is missing or filtered (old kernels, seccomp profiles that answer `ENOSYS`/`EPERM`), walks
//! the path one component at a time with `O_NOFOLLOW`, reading each link and resolving it
//! itself under the same rules.
//!
//! Both the scan (reads) and binding (writes) open through here: pass the flags the final
//! open needs (`O_NOFOLLOW` when the last component must not be a link, no `O_TRUNC` for
//! sysfs writes).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The kernel's limit on links followed in one lookup (`MAXSYMLINKS`).
const MAX_LINKS: u32 = 40;

/// Whether `openat2` works here: unknown until first used, then remembered.
static OPENAT2: AtomicU8 = AtomicU8::new(OPENAT2_UNKNOWN);
const OPENAT2_UNKNOWN: u8 = 0;
const OPENAT2_YES: u8 = 1;
const OPENAT2_NO: u8 = 2;

/// Opens `path` (relative; `/` and `..` may not leave `dir`) beneath `dir` with `flags`.
/// Links inside the path are followed while they stay beneath `dir`; the final component is
/// followed too unless `flags` has `O_NOFOLLOW`. A path that would leave `dir` fails with
/// `EXDEV`; more than 40 links with `ELOOP`.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
    mode: Mode,
) -> io::Result<OwnedFd> {
    if path.starts_with('/') {
        return Err(Errno::XDEV.into());
    }
    let path = if path.is_empty() { "." } else { path };
    let flags = flags | OFlags::CLOEXEC;
    if OPENAT2.load(Ordering::Relaxed) != OPENAT2_NO {
        match openat2_beneath(dir, path, flags, mode) {
            Err(Errno::NOSYS | Errno::PERM) if OPENAT2.load(Ordering::Relaxed) != OPENAT2_YES => {
                // Missing or filtered: the walk below gives the same answers.
                OPENAT2.store(OPENAT2_NO, Ordering::Relaxed);
            }
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
    path: &str,
    flags: OFlags,
    mode: Mode,
) -> rustix::io::Result<OwnedFd> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    // EAGAIN: a rename or mount raced a `..` step; the kernel asks for a retry.
    let mut attempts = 0;
    loop {
        match rfs::openat2(dir, path, flags, mode, resolve) {
            Err(Errno::AGAIN) if attempts < 8 => attempts += 1,
            result => return result,
        }
    }
}

/// The same resolution as `openat2(RESOLVE_BENEATH)`, in user space: each directory is opened
/// with `O_PATH | O_NOFOLLOW` relative to the one before, each link is read and its target
/// walked in its place, `..` goes back up the chain of opened directories and fails at `dir`.
pub(crate) fn walk_beneath(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
    mode: Mode,
) -> io::Result<OwnedFd> {
    if path.starts_with('/') {
        return Err(Errno::XDEV.into());
    }
    let mut chain: Vec<OwnedFd> = Vec::new();
    // Components still to walk, the next one last.
    let mut todo: Vec<String> = components_reversed(path);
    let mut links = 0;
    while let Some(name) = todo.pop() {
        let here = chain.last().map_or(dir, AsFd::as_fd);
        match name.as_str() {
            "" | "." => continue,
            ".." => {
                if chain.pop().is_none() {
                    return Err(Errno::XDEV.into());
                }
                continue;
            }
            _ => {}
        }
        let last = todo.iter().all(|c| c.is_empty() || c == ".");
        let st = rfs::statat(here, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        let is_link = FileType::from_raw_mode(st.st_mode) == FileType::Symlink;
        if is_link && !(last && flags.contains(OFlags::NOFOLLOW)) {
            links += 1;
            if links > MAX_LINKS {
                return Err(Errno::LOOP.into());
            }
            let target = rfs::readlinkat(here, name.as_str(), Vec::new())?;
            let target = target.to_str().map_err(|_| io::Error::from(Errno::INVAL))?;
            if target.starts_with('/') {
                return Err(Errno::XDEV.into());
            }
            todo.extend(components_reversed(target));
            continue;
        }
        if last {
            return rfs::openat(here, name.as_str(), flags | OFlags::NOFOLLOW, mode)
                .map_err(io::Error::from);
        }
        let next = rfs::openat(
            here,
            name.as_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        chain.push(next);
    }
    // The path named a directory (it ended in `.`, `..` or a link to one): open it again
    // with the caller's flags.
    let here = chain.last().map_or(dir, AsFd::as_fd);
    rfs::openat(here, ".", flags, mode).map_err(io::Error::from)
}

fn components_reversed(path: &str) -> Vec<String> {
    path.rsplit('/').map(str::to_owned).collect()
}

/// Splits `a/b/c` into `("a/b", "c")`; a single name has an empty parent.
pub fn split_parent(path: &str) -> (&str, &str) {
    let path = path.trim_end_matches('/');
    path.rsplit_once('/').unwrap_or(("", path))
}

/// A directory every later path is resolved beneath (the sysfs, dev or proc root).
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
    path: PathBuf,
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
        })
    }

    /// The root's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path the root was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a directory beneath the root (links followed while they stay inside).
    pub fn open_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        open_beneath(
            self.fd(),
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
    }

    /// The directory holding `rel`'s last component, opened beneath the root, and that name.
    pub fn parent_of<'p>(&self, rel: &'p str) -> io::Result<(OwnedFd, &'p str)> {
        let (parent, name) = split_parent(rel);
        if name.is_empty() || name == "." || name == ".." {
            return Err(Errno::INVAL.into());
        }
        let fd = open_beneath(
            self.fd(),
            parent,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        )?;
        Ok((fd, name))
    }

    /// Whether `rel` exists beneath the root (the last component itself: a link counts).
    pub fn exists(&self, rel: &str) -> bool {
        self.parent_of(rel)
            .is_ok_and(|(dir, name)| rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok())
    }

    /// Whether `rel` resolves beneath the root to something that exists (links followed
    /// inside the root; a dangling link or one that leaves is `false`).
    pub fn resolves(&self, rel: &str) -> bool {
        open_beneath(self.fd(), rel, OFlags::PATH, Mode::empty()).is_ok()
    }

    /// `lstat` of `rel` beneath the root: links on the way are followed while they stay
    /// inside, the last component itself is not.
    pub fn lstat(&self, rel: &str) -> io::Result<rfs::Stat> {
        let (dir, name) = self.parent_of(rel)?;
        rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
    }

    /// The file type `rel` resolves to beneath the root, with its device number.
    pub fn stat(&self, rel: &str) -> io::Result<rfs::Stat> {
        let fd = open_beneath(self.fd(), rel, OFlags::PATH, Mode::empty())?;
        rfs::fstat(&fd).map_err(io::Error::from)
    }

    /// A link's target (the link itself is not followed).
    pub fn readlink(&self, rel: &str) -> io::Result<String> {
        let (dir, name) = self.parent_of(rel)?;
        super::io::readlink_at(dir.as_fd(), name)
    }

    /// An attribute file beneath the root as trimmed text (regular files only, never
    /// blocking; see [`super::io::AttrReader`]).
    pub fn read_text(&self, rel: &str) -> io::Result<String> {
        let (dir, name) = self.parent_of(rel)?;
        super::io::read_text_at(dir.as_fd(), name)
    }

    /// The names in a directory beneath the root.
    pub fn list(&self, rel: &str) -> io::Result<Vec<String>> {
        super::io::list_dir(self.open_dir(rel)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "kata-vfio-root-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("root/devices/pci0000:00/0000:00:01.0")).unwrap();
            fs::create_dir_all(dir.join("root/bus/pci/devices")).unwrap();
            fs::write(dir.join("outside"), "secret\n").unwrap();
            fs::write(
                dir.join("root/devices/pci0000:00/0000:00:01.0/vendor"),
                "0x10de\n",
            )
            .unwrap();
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
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn both(root: &RootDir, rel: &str, flags: OFlags) -> [io::Result<OwnedFd>; 2] {
        [
            open_beneath(root.fd(), rel, flags, Mode::empty()),
            walk_beneath(root.fd(), rel, flags | OFlags::CLOEXEC, Mode::empty()),
        ]
    }

    fn errno(result: &io::Result<OwnedFd>) -> Option<i32> {
        result.as_ref().err().and_then(io::Error::raw_os_error)
    }

    #[test]
    fn relative_links_inside_resolve() {
        let tree = Tree::new("inside");
        let root = tree.root();
        for result in both(&root, "bus/pci/devices/0000:00:01.0/vendor", OFlags::RDONLY) {
            let fd = result.unwrap();
            let mut buf = [0u8; 16];
            let n = rustix::io::read(&fd, &mut buf).unwrap();
            assert_eq!(&buf[..n], b"0x10de\n");
        }
        assert_eq!(
            root.read_text("bus/pci/devices/0000:00:01.0/vendor")
                .unwrap(),
            "0x10de"
        );
    }

    #[test]
    fn absolute_links_are_refused() {
        let tree = Tree::new("absolute");
        symlink(
            tree.0.join("outside"),
            tree.0
                .join("root/devices/pci0000:00/0000:00:01.0/driver_override"),
        )
        .unwrap();
        symlink(&tree.0, tree.0.join("root/bus/escape")).unwrap();
        let root = tree.root();
        for rel in [
            "bus/pci/devices/0000:00:01.0/driver_override",
            "bus/escape/outside",
            "/etc/passwd",
        ] {
            for result in both(&root, rel, OFlags::RDONLY) {
                assert_eq!(errno(&result), Some(18), "{rel}"); // EXDEV
            }
        }
        assert!(root.read_text("bus/escape/outside").is_err());
    }

    #[test]
    fn dotdot_escapes_are_refused() {
        let tree = Tree::new("dotdot");
        symlink("../../../..", tree.0.join("root/bus/pci/devices/up")).unwrap();
        let root = tree.root();
        for rel in [
            "../outside",
            "bus/../../outside",
            "bus/pci/devices/up/outside",
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
        let rel = "bus/pci/devices/0000:00:01.0/alias";
        for result in both(&root, rel, OFlags::RDONLY | OFlags::NOFOLLOW) {
            assert_eq!(errno(&result), Some(40), "ELOOP"); // the link itself is not opened
        }
        for result in both(&root, rel, OFlags::RDONLY) {
            result.unwrap();
        }
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
        assert!(root.exists("bus/pci/devices/0000:00:01.0"));
        assert!(root.resolves("bus/pci/devices/0000:00:01.0"));
        assert!(!root.exists("bus/pci/devices/0000:00:02.0"));
        assert_eq!(
            root.readlink("bus/pci/devices/0000:00:01.0").unwrap(),
            "../../../devices/pci0000:00/0000:00:01.0"
        );
        assert_eq!(root.list("bus/pci/devices").unwrap(), ["0000:00:01.0"]);
        assert_eq!(split_parent("a/b/c"), ("a/b", "c"));
        assert_eq!(split_parent("c"), ("", "c"));
    }
}
