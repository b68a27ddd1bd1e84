//! The binding journal: one small file per device in the state directory, recording the
//! driver and `driver_override` the device had before kata-vfio touched it. Each entry is
//! written atomically (temporary file, fsync, rename, fsync of the directory) *before* the
//! first sysfs write for that device, so `restore` can put the device back even if the
//! binding process was killed at any point. Entries are removed once a device is restored.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::names::DriverName;
use super::sysfs::DriverState;
use crate::bdf::Bdf;
use crate::error::{Error, Result};

const MAGIC: &str = "# kata-vfio binding journal v1: `kata-vfio restore` puts this device back";
const SUFFIX: &str = ".journal";

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

    /// Parses an entry; every field must be present and valid.
    fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |why: String| Error::Bind {
            message: format!("journal entry {} is damaged: {why}", path.display()),
            errno: None,
            hint: Some("check the device by hand, then delete the file".to_owned()),
        };
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(bad("it does not start with the journal header".to_owned()));
        }
        let (mut bdf, mut group, mut driver, mut over, mut target) = (None, None, None, None, None);
        for line in lines {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| bad(format!("line {line:?} is not key=value")))?;
            let name = |v: &str| -> Result<Option<DriverName>> {
                if v.is_empty() {
                    Ok(None)
                } else {
                    DriverName::parse(v)
                        .map(Some)
                        .map_err(|e| bad(e.to_string()))
                }
            };
            match key {
                "bdf" => bdf = Some(Bdf::parse(value).map_err(|e| bad(e.to_string()))?),
                "group" if value.is_empty() => group = Some(None),
                "group" => {
                    group = Some(Some(
                        value
                            .parse::<u32>()
                            .map_err(|_| bad(format!("group {value:?}")))?,
                    ));
                }
                "driver" => driver = Some(name(value)?),
                "override" => over = Some(name(value)?),
                "target" => target = name(value)?,
                _ => return Err(bad(format!("unknown key {key:?}"))),
            }
        }
        let missing = |k: &str| bad(format!("{k}= is missing"));
        Ok(Self {
            bdf: bdf.ok_or_else(|| missing("bdf"))?,
            group: group.ok_or_else(|| missing("group"))?,
            driver: driver.ok_or_else(|| missing("driver"))?,
            driver_override: over.ok_or_else(|| missing("override"))?,
            target: target.ok_or_else(|| missing("target"))?,
        })
    }
}

/// The journal directory, locked for the lifetime of this value.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    _lock: OwnedFd,
}

impl Journal {
    /// Opens (creating with mode 0700 if needed) `state_dir` and takes its exclusive lock,
    /// waiting for another kata-vfio process to finish.
    pub fn open(state_dir: &Path) -> Result<Self> {
        if !state_dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(state_dir)
                .map_err(|e| Error::io("create state directory", state_dir, e))?;
        }
        let lock_path = state_dir.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| Error::io("open", &lock_path, e))?;
        let lock = OwnedFd::from(lock);
        rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io("lock", &lock_path, e.into()))?;
        Ok(Self {
            dir: state_dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, bdf: Bdf) -> PathBuf {
        self.dir.join(format!("{bdf}{SUFFIX}"))
    }

    /// The entry for `bdf`, if any.
    pub fn get(&self, bdf: Bdf) -> Result<Option<JournalEntry>> {
        read_entry(&self.entry_path(bdf))
    }

    /// Every entry, in numeric PCI order.
    pub fn entries(&self) -> Result<Vec<JournalEntry>> {
        list_entries(&self.dir)
    }

    /// Records `entry` durably: temporary file, fsync, rename, fsync of the directory.
    pub fn record(&self, entry: &JournalEntry) -> Result<()> {
        let path = self.entry_path(entry.bdf);
        let tmp = self.dir.join(format!(".{}{SUFFIX}.tmp", entry.bdf));
        let fail = |op: &'static str, p: &Path, e: io::Error| Error::io(op, p, e);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("remove", &tmp, e)),
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail("create", &tmp, e))?;
        file.write_all(entry.render().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| fail("write", &tmp, e))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(|e| fail("rename", &path, e))?;
        self.sync_dir()
    }

    /// Removes the entry for `bdf` durably (no error when it is already gone).
    pub fn remove(&self, bdf: Bdf) -> Result<()> {
        let path = self.entry_path(bdf);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }

    fn sync_dir(&self) -> Result<()> {
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync", &self.dir, e))
    }
}

fn read_entry(path: &Path) -> Result<Option<JournalEntry>> {
    match fs::read_to_string(path) {
        Ok(text) => JournalEntry::parse(&text, path).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Every entry in `state_dir` (read without taking the lock), in numeric PCI order. A
/// missing directory has no entries.
pub fn list_entries(state_dir: &Path) -> Result<Vec<JournalEntry>> {
    let entries = match fs::read_dir(state_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", state_dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", state_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(SUFFIX) else {
            continue;
        };
        if Bdf::parse(stem).is_err() {
            continue;
        }
        if let Some(parsed) = read_entry(&entry.path())? {
            out.push(parsed);
        }
    }
    out.sort_by_key(|e| e.bdf);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            listed,
            vec![
                entry("0000:05:00.0", Some("e1000e")),
                entry("0000:05:00.1", None)
            ]
        );
        let path = dir.join("0000:05:00.0.journal");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(&path).expect("stat").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        journal
            .remove(Bdf::parse("0000:05:00.0").expect("bdf"))
            .expect("remove");
        journal
            .remove(Bdf::parse("0000:05:00.0").expect("bdf"))
            .expect("remove twice");
        assert_eq!(list_entries(&dir).expect("list").len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn damaged_entries_are_reported_by_path() {
        let dir = scratch("damaged");
        fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("0000:01:00.0.journal");
        fs::write(&path, format!("{MAGIC}\nbdf=0000:01:00.0\ndriver=../x\n")).expect("write");
        let err = list_entries(&dir).expect_err("damaged");
        assert!(err.to_string().contains("0000:01:00.0.journal"), "{err}");
        fs::write(&path, "hello\n").expect("write");
        assert!(list_entries(&dir).is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
