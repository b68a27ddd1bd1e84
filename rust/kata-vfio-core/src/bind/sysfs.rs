//! What binding reads from and writes to sysfs. Every path is built from a parsed [`Bdf`]
//! or a validated [`DriverName`] under the configured root; writes go through a
//! [`SysfsWriter`] so tests can put a simulator of the kernel behind them.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::names::DriverName;
use crate::bdf::Bdf;
use crate::error::{Error, Result};

const ENOENT: i32 = 2;
const EBUSY: i32 = 16;

/// Performs one sysfs write. The default, [`FsWriter`], writes the file like `echo` does.
pub trait SysfsWriter: Send + Sync {
    /// Writes `value` to the attribute at `path` in one `write()`.
    fn write(&self, path: &Path, value: &[u8]) -> io::Result<()>;
}

/// Writes real files: open for writing (never create), one write of the whole value.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsWriter;

impl SysfsWriter for FsWriter {
    fn write(&self, path: &Path, value: &[u8]) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)?;
        let written = file.write(value)?;
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

/// The PCI bus under a sysfs root.
#[derive(Debug, Clone)]
pub struct PciBus {
    root: PathBuf,
}

impl PciBus {
    /// The bus under `sysfs_root` (normally `/sys`).
    pub fn new(sysfs_root: impl Into<PathBuf>) -> Self {
        Self {
            root: sysfs_root.into(),
        }
    }

    /// The sysfs root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/bus/pci/devices/<bdf>`.
    pub fn device_dir(&self, bdf: Bdf) -> PathBuf {
        self.root.join("bus/pci/devices").join(bdf.to_string())
    }

    /// `<root>/bus/pci/devices/<bdf>/driver_override`.
    pub fn override_path(&self, bdf: Bdf) -> PathBuf {
        self.device_dir(bdf).join("driver_override")
    }

    /// `<root>/bus/pci/drivers/<driver>`.
    pub fn driver_dir(&self, driver: &DriverName) -> PathBuf {
        self.root.join("bus/pci/drivers").join(driver.as_str())
    }

    /// `<root>/bus/pci/drivers_probe`.
    pub fn probe_path(&self) -> PathBuf {
        self.root.join("bus/pci/drivers_probe")
    }

    /// Whether the driver is registered (its directory exists).
    pub fn has_driver(&self, driver: &DriverName) -> bool {
        self.driver_dir(driver).is_dir()
    }

    /// Reads the facts binding needs; `DeviceNotFound` when the device is not present.
    pub fn device(&self, bdf: Bdf) -> Result<DeviceFacts> {
        let dir = self.device_dir(bdf);
        if !dir.is_dir() {
            return Err(Error::NotFound {
                what: "PCI device",
                name: bdf.to_string(),
                hint: Some(format!(
                    "no {} on this host: check the address with `kata-vfio scan`",
                    dir.display()
                )),
            });
        }
        let class_text = read_attr(&dir.join("class"))?.ok_or_else(|| {
            Error::io(
                "read",
                dir.join("class"),
                io::Error::from_raw_os_error(ENOENT),
            )
        })?;
        let class_code = parse_hex(&class_text).ok_or_else(|| {
            Error::invalid(
                "PCI class",
                class_text.trim(),
                format!("unreadable in {}", dir.display()),
            )
        })?;
        Ok(DeviceFacts {
            bdf,
            class_code,
            group: link_name(&dir.join("iommu_group"))?.and_then(|n| n.parse().ok()),
            modalias: read_attr(&dir.join("modalias"))?.map(|s| s.trim().to_owned()),
            state: self.state(bdf)?,
        })
    }

    /// The current driver and `driver_override`.
    pub fn state(&self, bdf: Bdf) -> Result<DriverState> {
        let dir = self.device_dir(bdf);
        let driver_override = read_attr(&dir.join("driver_override"))?
            .map(|s| s.trim_end_matches('\n').to_owned())
            .filter(|s| !s.is_empty() && s != "(null)");
        Ok(DriverState {
            driver: link_name(&dir.join("driver"))?,
            driver_override,
        })
    }

    /// Whether the device has a `driver_override` attribute (PCI, Linux 3.16+).
    pub fn has_override(&self, bdf: Bdf) -> bool {
        self.override_path(bdf).exists()
    }

    /// Members of IOMMU group `id`, in numeric order: from
    /// `kernel/iommu_groups/<id>/devices`, or (when that directory is missing, as in
    /// copied snapshots) from every device's `iommu_group` link.
    pub fn group_members(&self, id: u32) -> Result<Vec<Bdf>> {
        let dir = self
            .root
            .join("kernel/iommu_groups")
            .join(id.to_string())
            .join("devices");
        let mut members: Vec<Bdf> = match fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| {
                    e.ok()
                        .and_then(|e| Bdf::parse(&e.file_name().to_string_lossy()).ok())
                })
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.members_from_links(id)?,
            Err(e) => return Err(Error::io("list", dir, e)),
        };
        members.sort_unstable();
        members.dedup();
        Ok(members)
    }

    fn members_from_links(&self, id: u32) -> Result<Vec<Bdf>> {
        let devices = self.root.join("bus/pci/devices");
        let entries = fs::read_dir(&devices).map_err(|e| Error::io("list", &devices, e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Ok(bdf) = Bdf::parse(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            let group = link_name(&entry.path().join("iommu_group"))?;
            if group.and_then(|g| g.parse::<u32>().ok()) == Some(id) {
                out.push(bdf);
            }
        }
        Ok(out)
    }

    /// vfio runs without an IOMMU (`enable_unsafe_noiommu_mode=Y`).
    pub fn noiommu_enabled(&self) -> bool {
        read_attr(
            &self
                .root
                .join("module/vfio/parameters/enable_unsafe_noiommu_mode"),
        )
        .ok()
        .flatten()
        .is_some_and(|v| v.trim() == "Y" || v.trim() == "1")
    }

    /// The device's real directory relative to the root (`devices/pci0000:00/...`), from
    /// the target of its `bus/pci/devices` link.
    pub fn device_sysfs_path(&self, bdf: Bdf) -> Option<String> {
        let target = fs::read_link(self.device_dir(bdf)).ok()?;
        Some(normalize_link(&target.to_string_lossy()))
    }
}

/// `../../../devices/pci0000:00/0000:00:01.0` -> `devices/pci0000:00/0000:00:01.0`.
pub fn normalize_link(target: &str) -> String {
    target
        .split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads a text attribute; `None` when it does not exist.
pub fn read_attr(path: &Path) -> Result<Option<String>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// The last component of a symlink's target (`driver` -> `e1000e`); `None` when absent.
pub fn link_name(path: &Path) -> Result<Option<String>> {
    match fs::read_link(path) {
        Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("readlink", path, e)),
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
    fn normalizes_link_targets() {
        assert_eq!(
            normalize_link("../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0"),
            "devices/pci0000:00/0000:00:01.0/0000:01:00.0"
        );
    }

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
