//! The binding journal: one small file per device in the state directory, recording the
//! driver and `driver_override` the device had before kata-vfio touched it. Each entry is
//! written atomically (temporary file, fsync, rename, fsync of the directory) *before* the
//! first sysfs write for that device, so `restore` can put the device back even if the
//! binding process was killed at any point. Entries are removed once a device is restored.
//!
//! The directory is trusted only as far as it deserves: `restore` acts on what it reads, as
//! root. So the directory is opened `O_DIRECTORY|O_NOFOLLOW` and must belong to the caller
//! with no group or other write (it is made 0700; components it creates are 0700 whatever
//! the umask); every file in it is opened relative to that fd with `O_NOFOLLOW` (the `lock`
//! is never created through a symlink), must be a regular file, and is read without
//! blocking and at most [`ENTRY_MAX`] bytes; an entry whose `bdf=` is not its file name is
//! damaged. A damaged entry is reported and skipped; the others still count.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::names::DriverName;
use super::sysfs::DriverState;
use crate::bdf::Bdf;
use crate::beneath::{read_capped, require_regular};
use crate::error::{Error, Remedy, Result};

const MAGIC: &str = "# kata-vfio binding journal v1: `kata-vfio restore` puts this device back";
const SUFFIX: &str = ".journal";
/// The largest entry read (a real one is about 200 bytes).
pub const ENTRY_MAX: usize = 4096;
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// What a device looked like before binding, and where it was being moved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JournalEntry {
    pub bdf: Bdf,
    pub group: Option<u32>,
    /// The driver it was bound to; `None` when it was unbound.
    pub driver: Option<DriverName>,
    /// Its `driver_override`; `None` when unset.
    pub driver_override: Option<DriverName>,
    /// The vfio driver it was being bound to.
    pub target: DriverName,
}

impl JournalEntry {
    /// The recorded state, as the device should be after a restore.
    pub fn original_state(&self) -> DriverState {
        DriverState {
            driver: self.driver.as_ref().map(ToString::to_string),
            driver_override: self.driver_override.as_ref().map(ToString::to_string),
        }
    }

    fn render(&self) -> String {
        let opt = |v: &Option<DriverName>| v.as_ref().map(ToString::to_string).unwrap_or_default();
        format!(
            "{MAGIC}\nbdf={}\ngroup={}\ndriver={}\noverride={}\ntarget={}\n",
            self.bdf,
            self.group.map(|g| g.to_string()).unwrap_or_default(),
            opt(&self.driver),
            opt(&self.driver_override),
            self.target,
        )
    }

    /// Parses an entry; every field must be present and valid. The error says why.
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err("it does not start with the journal header".to_owned());
        }
        let (mut bdf, mut group, mut driver, mut over, mut target) = (None, None, None, None, None);
        for line in lines {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("line {line:?} is not key=value"))?;
            let name = |v: &str| -> std::result::Result<Option<DriverName>, String> {
                if v.is_empty() {
                    Ok(None)
                } else {
                    DriverName::parse(v).map(Some).map_err(|e| e.to_string())
                }
            };
            match key {
                "bdf" => bdf = Some(Bdf::parse(value).map_err(|e| e.to_string())?),
                "group" if value.is_empty() => group = Some(None),
                "group" => {
                    group = Some(Some(
                        value
                            .parse::<u32>()
                            .map_err(|_| format!("group {value:?}"))?,
                    ));
                }
                "driver" => driver = Some(name(value)?),
                "override" => over = Some(name(value)?),
                "target" => target = name(value)?,
                _ => return Err(format!("unknown key {key:?}")),
            }
        }
        let missing = |k: &str| format!("{k}= is missing");
        Ok(Self {
            bdf: bdf.ok_or_else(|| missing("bdf"))?,
            group: group.ok_or_else(|| missing("group"))?,
            driver: driver.ok_or_else(|| missing("driver"))?,
            driver_override: over.ok_or_else(|| missing("override"))?,
            target: target.ok_or_else(|| missing("target"))?,
        })
    }
}

/// A journal file that could not be used: skipped, and reported.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JournalProblem {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for JournalProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "journal entry {} is damaged ({}); skipped: check the device by hand, then delete the file",
            self.path.display(),
            self.reason
        )
    }
}

/// The usable entries of a journal, in numeric PCI order, and the files that were not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub entries: Vec<JournalEntry>,
    pub problems: Vec<JournalProblem>,
}

/// The state directory, opened and checked.
#[derive(Debug)]
struct StateDir {
    fd: OwnedFd,
    path: PathBuf,
}

fn unsafe_dir(path: &Path, why: &str) -> Error {
    Error::Bind {
        message: format!("refusing the state directory {}: {why}", path.display()),
        errno: None,
        hint: Some(
            "the journal must be writable by this user only: fix its owner and mode \
             (chown, chmod 700)"
                .to_owned(),
        ),
        remedies: vec![Remedy::OtherStateDir],
    }
}

impl StateDir {
    /// Opens `path` for writing, creating it (and missing parents, each 0700) when needed,
    /// and makes it 0700.
    fn create(path: &Path) -> Result<Self> {
        create_missing(path).map_err(|e| Error::io("create state directory", path, e))?;
        let dir = Self::open(path, true)?.ok_or_else(|| {
            Error::io(
                "open state directory",
                path,
                io::Error::from(io::ErrorKind::NotFound),
            )
        })?;
        rfs::fchmod(dir.fd.as_fd(), Mode::from_raw_mode(DIR_MODE))
            .map_err(|e| Error::io("chmod", path, e.into()))?;
        Ok(dir)
    }

    /// Opens and checks an existing state directory; `None` when there is none. Writing
    /// needs it owned by this user; reading also accepts root's.
    fn open(path: &Path, for_writing: bool) -> Result<Option<Self>> {
        let fd = match rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(unsafe_dir(path, "it is a symlink or not a directory"))
            }
            Err(e) => return Err(Error::io("open state directory", path, e.into())),
        };
        let stat = rfs::fstat(fd.as_fd()).map_err(|e| Error::io("stat", path, e.into()))?;
        let me = rustix::process::geteuid().as_raw();
        let owner_ok = stat.st_uid == me || (!for_writing && stat.st_uid == 0);
        if !owner_ok {
            return Err(unsafe_dir(
                path,
                &format!(
                    "it belongs to uid {}, not to this user (uid {me})",
                    stat.st_uid
                ),
            ));
        }
        if stat.st_mode & 0o022 != 0 {
            return Err(unsafe_dir(
                path,
                &format!(
                    "its mode {:04o} lets others write in it",
                    stat.st_mode & 0o7777
                ),
            ));
        }
        Ok(Some(Self {
            fd,
            path: path.to_path_buf(),
        }))
    }

    fn file_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Reads one entry file (`None` when it does not exist); the error is why it is damaged.
    fn read(&self, name: &str, bdf: Bdf) -> std::result::Result<Option<JournalEntry>, String> {
        let fd = match rfs::openat(
            self.fd.as_fd(),
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err("it is a symlink".to_owned()),
            Err(e) => return Err(io::Error::from(e).to_string()),
        };
        let bytes = read_capped(fd.as_fd(), ENTRY_MAX).map_err(|e| e.to_string())?;
        let text = std::str::from_utf8(&bytes).map_err(|_| "it is not UTF-8 text".to_owned())?;
        let entry = JournalEntry::parse(text)?;
        if entry.bdf != bdf {
            return Err(format!("its bdf={} is not its file name {name}", entry.bdf));
        }
        Ok(Some(entry))
    }

    fn list(&self) -> Result<Listing> {
        let dir = rfs::Dir::read_from(self.fd.as_fd())
            .map_err(|e| Error::io("list", &self.path, e.into()))?;
        let mut listing = Listing::default();
        for item in dir {
            let item = item.map_err(|e| Error::io("list", &self.path, e.into()))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(bdf) = name.strip_suffix(SUFFIX).and_then(|s| Bdf::parse(s).ok()) else {
                continue;
            };
            match self.read(&name, bdf) {
                Ok(Some(entry)) => listing.entries.push(entry),
                Ok(None) => {}
                Err(reason) => listing.problems.push(JournalProblem {
                    path: self.file_path(&name),
                    reason,
                }),
            }
        }
        listing.entries.sort_by_key(|e| e.bdf);
        listing.problems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(listing)
    }

    fn sync(&self) -> Result<()> {
        rfs::fsync(self.fd.as_fd()).map_err(|e| Error::io("fsync", &self.path, e.into()))
    }
}

/// Creates the missing components of `path`, each with mode 0700 set on an `O_NOFOLLOW` fd
/// (so neither the umask nor a symlink raced in decides it). Existing components are left
/// as they are.
fn create_missing(path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut current = path;
    loop {
        match fs::symlink_metadata(current) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(current);
                match current.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => current = parent,
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for dir in missing.into_iter().rev() {
        match rfs::mkdir(dir, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) => {}
            // Someone else made it meanwhile: not ours to chmod; the final checks decide.
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
        let fd = rfs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rfs::fchmod(fd.as_fd(), Mode::from_raw_mode(DIR_MODE))?;
    }
    Ok(())
}

fn entry_name(bdf: Bdf) -> String {
    format!("{bdf}{SUFFIX}")
}

/// The journal directory, locked for the lifetime of this value.
#[derive(Debug)]
pub struct Journal {
    dir: StateDir,
    _lock: OwnedFd,
}

impl Journal {
    /// Opens (creating with mode 0700 if needed) `state_dir`, checks it, and takes its
    /// exclusive lock, waiting for another kata-vfio process to finish.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = StateDir::create(state_dir)?;
        let lock_path = dir.file_path("lock");
        let lock = rfs::openat(
            dir.fd.as_fd(),
            "lock",
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::from_raw_mode(FILE_MODE),
        )
        .map_err(|e| match e {
            Errno::LOOP => unsafe_dir(state_dir, "its lock file is a symlink"),
            e => Error::io("open", &lock_path, e.into()),
        })?;
        require_regular(lock.as_fd())
            .map_err(|e| unsafe_dir(state_dir, &format!("its lock file is {e}")))?;
        rfs::flock(lock.as_fd(), rfs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io("lock", &lock_path, e.into()))?;
        Ok(Self { dir, _lock: lock })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// The entry for `bdf`, if any; a damaged one is an error.
    pub fn get(&self, bdf: Bdf) -> Result<Option<JournalEntry>> {
        let name = entry_name(bdf);
        self.dir.read(&name, bdf).map_err(|reason| {
            let problem = JournalProblem {
                path: self.dir.file_path(&name),
                reason,
            };
            Error::Bind {
                message: format!(
                    "journal entry {} is damaged ({})",
                    problem.path.display(),
                    problem.reason
                ),
                errno: None,
                hint: Some("check the device by hand, then delete the file".to_owned()),
                remedies: Vec::new(),
            }
        })
    }

    /// Every usable entry, in numeric PCI order, and the damaged files.
    pub fn entries(&self) -> Result<Listing> {
        self.dir.list()
    }

    /// Records `entry` durably: temporary file, fsync, rename, fsync of the directory.
    pub fn record(&self, entry: &JournalEntry) -> Result<()> {
        let dirfd = self.dir.fd.as_fd();
        let name = entry_name(entry.bdf);
        let tmp = format!(".{name}.tmp");
        let tmp_path = self.dir.file_path(&tmp);
        let fail = |op: &'static str, e: Errno| Error::io(op, &tmp_path, e.into());
        match rfs::unlinkat(dirfd, tmp.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(fail("remove", e)),
        }
        let file = rfs::openat(
            dirfd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(FILE_MODE),
        )
        .map_err(|e| fail("create", e))?;
        rfs::fchmod(file.as_fd(), Mode::from_raw_mode(FILE_MODE)).map_err(|e| fail("chmod", e))?;
        write_all(file.as_fd(), entry.render().as_bytes()).map_err(|e| fail("write", e))?;
        rfs::fsync(file.as_fd()).map_err(|e| fail("fsync", e))?;
        drop(file);
        rfs::renameat(dirfd, tmp.as_str(), dirfd, name.as_str())
            .map_err(|e| Error::io("rename", self.dir.file_path(&name), e.into()))?;
        self.dir.sync()
    }

    /// Removes the entry for `bdf` durably (no error when it is already gone).
    pub fn remove(&self, bdf: Bdf) -> Result<()> {
        let name = entry_name(bdf);
        match rfs::unlinkat(self.dir.fd.as_fd(), name.as_str(), AtFlags::empty()) {
            Ok(()) => self.dir.sync(),
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io("remove", self.dir.file_path(&name), e.into())),
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> rustix::io::Result<()> {
    while !data.is_empty() {
        let n = rustix::io::write(fd, data)?;
        data = &data[n..];
    }
    Ok(())
}

/// Every entry in `state_dir` (read without taking the lock, nothing created or changed),
/// in numeric PCI order, with the damaged files. A missing directory has no entries.
pub fn list_entries(state_dir: &Path) -> Result<Listing> {
    match StateDir::open(state_dir, false)? {
        Some(dir) => dir.list(),
        None => Ok(Listing::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::FileType;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kv-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn entry(bdf: &str, driver: Option<&str>) -> JournalEntry {
        JournalEntry {
            bdf: Bdf::parse(bdf).expect("bdf"),
            group: Some(12),
            driver: driver.map(|d| DriverName::parse(d).expect("name")),
            driver_override: None,
            target: DriverName::vfio_pci(),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn records_lists_and_removes_entries() {
        let dir = scratch("roundtrip");
        let journal = Journal::open(&dir).expect("open");
        journal
            .record(&entry("0000:05:00.1", None))
            .expect("record");
        journal
            .record(&entry("0000:05:00.0", Some("e1000e")))
            .expect("record");
        let listed = journal.entries().expect("list");
        assert_eq!(
            listed.entries,
            vec![
                entry("0000:05:00.0", Some("e1000e")),
                entry("0000:05:00.1", None)
            ]
        );
        assert!(listed.problems.is_empty());
        assert_eq!(mode(&dir.join("0000:05:00.0.journal")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        journal
            .remove(Bdf::parse("0000:05:00.0").expect("bdf"))
            .expect("remove");
        journal
            .remove(Bdf::parse("0000:05:00.0").expect("bdf"))
            .expect("remove twice");
        assert_eq!(list_entries(&dir).expect("list").entries.len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn damaged_entries_are_reported_by_path_and_skipped() {
        let dir = scratch("damaged");
        Journal::open(&dir)
            .expect("open")
            .record(&entry("0000:02:00.0", None))
            .expect("record");
        let path = dir.join("0000:01:00.0.journal");
        fs::write(&path, format!("{MAGIC}\nbdf=0000:01:00.0\ndriver=../x\n")).expect("write");
        let listing = list_entries(&dir).expect("listing");
        assert_eq!(listing.entries, vec![entry("0000:02:00.0", None)]);
        assert_eq!(listing.problems.len(), 1);
        assert_eq!(listing.problems[0].path, path);
        let text = listing.problems[0].to_string();
        assert!(text.contains("0000:01:00.0.journal is damaged"), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_entry_must_carry_its_own_address() {
        let dir = scratch("renamed");
        Journal::open(&dir)
            .expect("open")
            .record(&entry("0000:02:00.0", None))
            .expect("record");
        fs::rename(
            dir.join("0000:02:00.0.journal"),
            dir.join("0000:03:00.0.journal"),
        )
        .expect("rename");
        let listing = list_entries(&dir).expect("listing");
        assert!(listing.entries.is_empty());
        assert!(
            listing.problems[0].reason.contains("not its file name"),
            "{:?}",
            listing.problems
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn oversized_fifo_and_linked_entries_are_skipped_without_blocking() {
        let dir = scratch("hostile");
        Journal::open(&dir).expect("open");
        fs::write(dir.join("0000:01:00.0.journal"), vec![b'#'; ENTRY_MAX + 1]).expect("write");
        rfs::mknodat(
            rfs::CWD,
            dir.join("0000:02:00.0.journal"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        symlink("/dev/zero", dir.join("0000:03:00.0.journal")).expect("link");
        let listing = list_entries(&dir).expect("listing");
        assert!(listing.entries.is_empty());
        let reasons: Vec<&str> = listing.problems.iter().map(|p| p.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("longer than 4096"), "{reasons:?}");
        assert!(reasons[1].contains("not a regular file"), "{reasons:?}");
        assert!(reasons[2].contains("symlink"), "{reasons:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unsafe_state_directory_is_refused() {
        let dir = scratch("unsafe");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = Journal::open(&dir).expect_err("world-writable");
        assert!(err.to_string().contains("lets others write"), "{err}");
        assert!(list_entries(&dir).is_err());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        Journal::open(&dir).expect("0755 is fine and becomes 0700");
        assert_eq!(mode(&dir), 0o700);
        let link = scratch("unsafe-link");
        symlink(&dir, &link).expect("link");
        let err = Journal::open(&link).expect_err("symlink");
        assert!(err.to_string().contains("symlink"), "{err}");
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_file(&link);
    }

    #[test]
    fn the_lock_is_never_created_through_a_symlink() {
        let dir = scratch("lock");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
        let target = scratch("lock-target");
        symlink(&target, dir.join("lock")).expect("link");
        let err = Journal::open(&dir).expect_err("lock is a symlink");
        assert!(err.to_string().contains("lock file is a symlink"), "{err}");
        assert!(!target.exists(), "nothing was created through the link");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn created_parents_are_private_whatever_the_umask() {
        let base = scratch("umask");
        let deep = base.join("a/b/state");
        let old = rustix::process::umask(Mode::empty());
        let opened = Journal::open(&deep);
        rustix::process::umask(old);
        opened.expect("open");
        for dir in [base.join("a"), base.join("a/b"), deep] {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
        let _ = fs::remove_dir_all(&base);
    }
}
