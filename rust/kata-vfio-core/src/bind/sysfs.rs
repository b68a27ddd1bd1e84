//! What binding reads from and writes to sysfs. Every path is built from a parsed [`Bdf`]
//! or a validated [`DriverName`] under the configured root, and every read and write goes
//! through that root's directory fd ([`RootDir`]), so nothing a tree contains (an absolute
//! symlink, a `..` chain, a FIFO where an attribute should be) reaches outside it or blocks.
//! Writes go through a [`SysfsWriter`] so tests can put a simulator of the kernel behind
//! them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::names::DriverName;
use crate::bdf::Bdf;
use crate::beneath::RootDir;
use crate::error::{Error, Remedy, Result};
use crate::sysfs::io::resolve_relative;

const ENOENT: i32 = 2;
const EBUSY: i32 = 16;

/// Performs one sysfs write. The default, [`FsWriter`], writes the file like `echo` does.
pub trait SysfsWriter: Send + Sync {
    /// Writes `value` to the attribute at `path` in one `write()`.
    fn write(&self, path: &Path, value: &[u8]) -> io::Result<()>;
}

/// Writes real files below the bus's root: open write-only through the root's fd (never
/// created, truncated, or reached through a symlink or a `..` above the root), one write of
/// the whole value; on the real `/sys`, only files of sysfs.
#[derive(Debug, Clone)]
pub struct FsWriter {
    root: Arc<RootDir>,
}

impl FsWriter {
    /// A writer confined to `bus`'s root.
    pub fn new(bus: &PciBus) -> Self {
        Self {
            root: Arc::clone(&bus.root),
        }
    }
}

impl SysfsWriter for FsWriter {
    fn write(&self, path: &Path, value: &[u8]) -> io::Result<()> {
        self.root.write_attr(self.root.relative(path)?, value)
    }
}

/// How often an EBUSY answer is retried, and the first pause (doubled each time).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts over about 0.3 s.
    fn default() -> Self {
        Self {
            attempts: 6,
            first_delay: Duration::from_millis(10),
        }
    }
}

/// One sysfs write, as performed or (in a dry run) planned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SysfsWrite {
    pub path: PathBuf,
    /// Exactly the bytes written (`"\n"` clears `driver_override`).
    pub value: String,
}

/// A device's driver binding: the bound driver and `driver_override`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct DriverState {
    pub driver: Option<String>,
    pub driver_override: Option<String>,
}

/// What binding needs to know about one PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    pub bdf: Bdf,
    pub class_code: u32,
    pub group: Option<u32>,
    pub modalias: Option<String>,
    pub state: DriverState,
}

impl DeviceFacts {
    /// PCI-to-PCI bridge or PCI Express port (class `0x0604`).
    pub fn is_bridge(&self) -> bool {
        self.class_code >> 8 == 0x0604
    }

    /// Host bridge (class `0x0600`).
    pub fn is_host_bridge(&self) -> bool {
        self.class_code >> 8 == 0x0600
    }

    /// Anything but a bridge: what must be bound for its group to be viable.
    pub fn is_endpoint(&self) -> bool {
        !self.is_bridge() && !self.is_host_bridge()
    }
}

/// The paths of the PCI bus's binding files under a sysfs root (no I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusPaths {
    root: PathBuf,
}

impl BusPaths {
    /// The paths under `sysfs_root` (normally `/sys`).
    pub fn new(sysfs_root: impl Into<PathBuf>) -> Self {
        Self {
            root: sysfs_root.into(),
        }
    }

    /// The sysfs root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `bus/pci/devices/<bdf>`, relative to the root.
    pub fn device_rel(bdf: Bdf) -> PathBuf {
        Path::new("bus/pci/devices").join(bdf.to_string())
    }

    /// `bus/pci/drivers/<driver>`, relative to the root.
    pub fn driver_rel(driver: &DriverName) -> PathBuf {
        Path::new("bus/pci/drivers").join(driver.as_str())
    }

    /// `<root>/bus/pci/devices/<bdf>`.
    pub fn device_dir(&self, bdf: Bdf) -> PathBuf {
        self.root.join(Self::device_rel(bdf))
    }

    /// `<root>/bus/pci/devices/<bdf>/driver_override`.
    pub fn override_path(&self, bdf: Bdf) -> PathBuf {
        self.device_dir(bdf).join("driver_override")
    }

    /// `<root>/bus/pci/drivers/<driver>`.
    pub fn driver_dir(&self, driver: &DriverName) -> PathBuf {
        self.root.join(Self::driver_rel(driver))
    }

    /// `<root>/bus/pci/drivers_probe`.
    pub fn probe_path(&self) -> PathBuf {
        self.root.join("bus/pci/drivers_probe")
    }
}

/// The PCI bus under an open sysfs root.
#[derive(Debug, Clone)]
pub struct PciBus {
    paths: BusPaths,
    root: Arc<RootDir>,
}

impl std::ops::Deref for PciBus {
    type Target = BusPaths;

    fn deref(&self) -> &BusPaths {
        &self.paths
    }
}

impl PciBus {
    /// Opens the bus under `sysfs_root` (normally `/sys`, which must then be a sysfs).
    pub fn open(sysfs_root: impl Into<PathBuf>) -> Result<Self> {
        let path = sysfs_root.into();
        let root = RootDir::open_sysfs(&path).map_err(|e| {
            Error::io("open sysfs root", &path, e)
                .with_hint("give the root of a sysfs tree (/sys, or a copy with bus/pci)")
        })?;
        Ok(Self {
            paths: BusPaths::new(path),
            root: Arc::new(root),
        })
    }

    /// The path builder.
    pub fn paths(&self) -> &BusPaths {
        &self.paths
    }

    /// The open root, for reads below it.
    pub fn root_dir(&self) -> &RootDir {
        &self.root
    }

    /// A text attribute below the root, trimmed; `None` when it does not exist.
    pub fn read_attr(&self, rel: &Path) -> Result<Option<String>> {
        match self.root.read_text(rel) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", self.root.path().join(rel), e)),
        }
    }

    /// The last component of a symlink's target (`driver` -> `e1000e`); `None` when absent.
    pub fn link_name(&self, rel: &Path) -> Result<Option<String>> {
        match self.root.read_link(rel) {
            Ok(target) => Ok(Path::new(&target)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("readlink", self.root.path().join(rel), e)),
        }
    }

    /// The names in a directory below the root, sorted; none when it is missing or cannot
    /// be read.
    pub fn list(&self, rel: &Path) -> Vec<String> {
        let mut names = self.root.list(rel).unwrap_or_default();
        names.sort();
        names
    }

    /// Whether the driver is registered (its directory exists).
    pub fn has_driver(&self, driver: &DriverName) -> bool {
        self.root.is_dir(BusPaths::driver_rel(driver))
    }

    /// Whether the device's directory is there.
    pub fn has_device(&self, bdf: Bdf) -> bool {
        self.root.is_dir(BusPaths::device_rel(bdf))
    }

    /// Reads the facts binding needs; `DeviceNotFound` when the device is not present.
    pub fn device(&self, bdf: Bdf) -> Result<DeviceFacts> {
        let dir = BusPaths::device_rel(bdf);
        if !self.has_device(bdf) {
            return Err(Error::NotFound {
                what: "PCI device",
                name: bdf.to_string(),
                hint: Some(format!(
                    "no {} on this host (or it leads outside the sysfs root)",
                    self.device_dir(bdf).display()
                )),
                remedies: vec![Remedy::ListDevices],
            });
        }
        let class_text = self.read_attr(&dir.join("class"))?.ok_or_else(|| {
            Error::io(
                "read",
                self.root.path().join(&dir).join("class"),
                io::Error::from_raw_os_error(ENOENT),
            )
        })?;
        let class_code = parse_hex(&class_text).ok_or_else(|| {
            Error::invalid(
                "PCI class",
                class_text.trim(),
                format!("unreadable in {}", self.device_dir(bdf).display()),
            )
        })?;
        Ok(DeviceFacts {
            bdf,
            class_code,
            group: self
                .link_name(&dir.join("iommu_group"))?
                .and_then(|n| n.parse().ok()),
            modalias: self.read_attr(&dir.join("modalias"))?,
            state: self.state(bdf)?,
        })
    }

    /// The current driver and `driver_override`.
    pub fn state(&self, bdf: Bdf) -> Result<DriverState> {
        let dir = BusPaths::device_rel(bdf);
        let driver_override = self
            .read_attr(&dir.join("driver_override"))?
            .filter(|s| !s.is_empty() && s != "(null)");
        Ok(DriverState {
            driver: self.link_name(&dir.join("driver"))?,
            driver_override,
        })
    }

    /// Whether the device has a `driver_override` attribute (PCI, Linux 3.16+).
    pub fn has_override(&self, bdf: Bdf) -> bool {
        self.root
            .exists(BusPaths::device_rel(bdf).join("driver_override"))
    }

    /// The device's vfio cdev (`vfio0`, from `vfio-dev/`), when it has one.
    pub fn vfio_cdev(&self, bdf: Bdf) -> Option<String> {
        self.list(&BusPaths::device_rel(bdf).join("vfio-dev"))
            .into_iter()
            .find(|n| n.starts_with("vfio") && n[4..].bytes().all(|b| b.is_ascii_digit()))
    }

    /// Members of IOMMU group `id`, in numeric order: from
    /// `kernel/iommu_groups/<id>/devices`, or (when that directory is missing, as in
    /// copied snapshots) from every device's `iommu_group` link.
    pub fn group_members(&self, id: u32) -> Result<Vec<Bdf>> {
        let dir = Path::new("kernel/iommu_groups")
            .join(id.to_string())
            .join("devices");
        let mut members: Vec<Bdf> = match self.root.list(&dir) {
            Ok(names) => names.iter().filter_map(|n| Bdf::parse(n).ok()).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.members_from_links(id)?,
            Err(e) => return Err(Error::io("list", self.root.path().join(dir), e)),
        };
        members.sort_unstable();
        members.dedup();
        Ok(members)
    }

    fn members_from_links(&self, id: u32) -> Result<Vec<Bdf>> {
        let devices = Path::new("bus/pci/devices");
        let names = self
            .root
            .list(devices)
            .map_err(|e| Error::io("list", self.root.path().join(devices), e))?;
        let mut out = Vec::new();
        for name in names {
            let Ok(bdf) = Bdf::parse(&name) else {
                continue;
            };
            let group = self.link_name(&devices.join(&name).join("iommu_group"))?;
            if group.and_then(|g| g.parse::<u32>().ok()) == Some(id) {
                out.push(bdf);
            }
        }
        Ok(out)
    }

    /// vfio runs without an IOMMU (`enable_unsafe_noiommu_mode=Y`).
    pub fn noiommu_enabled(&self) -> bool {
        self.read_attr(Path::new(
            "module/vfio/parameters/enable_unsafe_noiommu_mode",
        ))
        .ok()
        .flatten()
        .is_some_and(|v| v == "Y" || v == "1")
    }

    /// The device's real directory relative to the root (`devices/pci0000:00/...`), from
    /// the target of its `bus/pci/devices` link (`None` for one that leaves the root).
    pub fn device_sysfs_path(&self, bdf: Bdf) -> Option<String> {
        let target = self.root.read_link(BusPaths::device_rel(bdf)).ok()?;
        resolve_relative("bus/pci/devices", &target)
    }
}

/// Parses `0x030200` (any case, surrounding whitespace allowed).
pub fn parse_hex(text: &str) -> Option<u32> {
    let t = text.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// Writes through `writer`, retrying EBUSY with doubling pauses; records the write.
pub fn write_with_retry(
    writer: &dyn SysfsWriter,
    retry: RetryPolicy,
    path: &Path,
    value: &str,
    log: &mut Vec<SysfsWrite>,
) -> io::Result<()> {
    let mut delay = retry.first_delay;
    let mut attempt = 1;
    loop {
        match writer.write(path, value.as_bytes()) {
            Ok(()) => {
                log.push(SysfsWrite {
                    path: path.to_path_buf(),
                    value: value.to_owned(),
                });
                return Ok(());
            }
            Err(e) if e.raw_os_error() == Some(EBUSY) && attempt < retry.attempts.max(1) => {
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn parses_hex_attributes() {
        assert_eq!(parse_hex("0x030200\n"), Some(0x0003_0200));
        assert_eq!(parse_hex("0X10DE"), Some(0x10de));
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(parse_hex(""), None);
    }

    struct BusyTwice(AtomicU32);
    impl SysfsWriter for BusyTwice {
        fn write(&self, _: &Path, _: &[u8]) -> io::Result<()> {
            if self.0.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(io::Error::from_raw_os_error(EBUSY))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn retries_ebusy_then_gives_up() {
        let quick = RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_millis(1),
        };
        let mut log = Vec::new();
        let writer = BusyTwice(AtomicU32::new(0));
        write_with_retry(&writer, quick, Path::new("/x"), "v", &mut log).expect("third try works");
        assert_eq!(log.len(), 1);
        let writer = BusyTwice(AtomicU32::new(0));
        let once = RetryPolicy {
            attempts: 2,
            ..quick
        };
        let err = write_with_retry(&writer, once, Path::new("/x"), "v", &mut log)
            .expect_err("still busy");
        assert_eq!(err.raw_os_error(), Some(EBUSY));
        assert_eq!(log.len(), 1, "a failed write is not recorded");
    }
}
