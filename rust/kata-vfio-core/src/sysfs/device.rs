//! Reading one PCI device directory.
//!
//! The cost model is the syscall count (lowlevel.md section 9): one `readlinkat` of the bus
//! link, one confined open of the device directory, one `uevent` read for IDs, class and
//! driver, then `revision`, `numa_node`, `driver_override`, a `statat` of `config` and a probe
//! of `sriov_totalvfs`. Config space is never read. An attribute that is absent is `None`;
//! one that exists but cannot be read is `None` too and is recorded as a problem (permission
//! denied, not a regular file, invalid text), so verdicts built on it can say "unknown". A
//! device that vanishes mid-read is skipped; one that cannot be read at all is reported.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{Mode, OFlags};

use super::attrs::{self, Uevent};
use super::io::{is_absent, link_basename, list_dir_at, resolve_relative, size_at, AttrReader};
use super::problem::{ReadFailure, ReadProblem};
use crate::bdf::{bdfs_in_path, last_bdf_in_path, Bdf};
use crate::beneath::{open_beneath, RootDir};
use crate::pci::{is_vfio_driver, Details, Link, PciDevice};

/// Known vfio cdev names by function, from `class/vfio-dev` (read once per scan instead of
/// listing every device's `vfio-dev` directory). `None` when that class is missing.
pub type CdevMap = HashMap<Bdf, String>;

/// Configuration space of a conventional PCI function is 256 bytes; PCIe has 4096.
const CONVENTIONAL_CONFIG_SIZE: u64 = 256;
/// Class and subclass of a VGA-compatible controller, the only functions with `boot_vga`.
const CLASS_VGA: u32 = 0x0300;
const ENOENT: i32 = 2;

/// What the device walk shares between devices.
#[derive(Debug, Clone, Copy)]
pub struct WalkContext<'a> {
    pub root: &'a RootDir,
    /// `bus/pci/devices`, opened beneath the root.
    pub devices_dir: BorrowedFd<'a>,
    pub cdevs: Option<&'a CdevMap>,
    /// Function -> group from `kernel/iommu_groups/N/devices`, when that listing exists.
    pub group_of: Option<&'a HashMap<Bdf, u32>>,
    pub details: bool,
}

/// The outcome of reading one `bus/pci/devices` entry.
#[derive(Debug)]
pub enum DeviceRead {
    Found(Box<PciDevice>),
    /// Removed while the scan ran (or a dangling entry): not a finding.
    Gone,
    /// Present but unreadable: its directory, its bus link or its identity.
    Unreadable(ReadProblem),
}

/// Reads the device `name` (already parsed as `bdf`) from `bus/pci/devices`. `reader` is the
/// walking thread's buffer.
pub fn read_device(
    ctx: &WalkContext<'_>,
    bdf: Bdf,
    name: &str,
    reader: &mut AttrReader,
) -> DeviceRead {
    let unreadable = |attribute, failure| {
        DeviceRead::Unreadable(ReadProblem {
            bdf,
            attribute,
            failure,
        })
    };
    let sysfs_path = match reader.link(ctx.devices_dir, name) {
        Ok(target) => match resolve_relative("bus/pci/devices", target) {
            Some(path) => path,
            None => return unreadable("device", ReadFailure::EscapesRoot),
        },
        Err(e) if is_absent(&e) => return DeviceRead::Gone,
        Err(e) if e.raw_os_error() == Some(EINVAL) => {
            // Not a link: a copied tree may hold the directory itself there.
            format!("bus/pci/devices/{name}")
        }
        Err(e) => return unreadable("device", ReadFailure::of(&e)),
    };
    let dir = match open_beneath(
        ctx.root.fd(),
        &sysfs_path,
        OFlags::PATH | OFlags::DIRECTORY,
        Mode::empty(),
    ) {
        Ok(dir) => dir,
        Err(e) if is_absent(&e) => return DeviceRead::Gone,
        Err(e) => return unreadable("device", ReadFailure::of(&e)),
    };
    let reading = Reading {
        dir: dir.as_fd(),
        bdf,
        reader,
        problems: Vec::new(),
    };
    match reading.read(ctx, sysfs_path) {
        Ok(device) => DeviceRead::Found(Box::new(device)),
        Err(problem) => DeviceRead::Unreadable(problem),
    }
}

const EINVAL: i32 = 22;

/// One device directory being read, with the problems found so far.
struct Reading<'d, 'r> {
    dir: BorrowedFd<'d>,
    bdf: Bdf,
    reader: &'r mut AttrReader,
    problems: Vec<ReadProblem>,
}

impl Reading<'_, '_> {
    fn note(&mut self, attribute: &'static str, failure: ReadFailure) {
        self.problems.push(ReadProblem {
            bdf: self.bdf,
            attribute,
            failure,
        });
    }

    /// Notes a failed read unless the attribute is simply absent.
    fn note_err(&mut self, attribute: &'static str, err: &io::Error) {
        if !is_absent(err) {
            self.note(attribute, ReadFailure::of(err));
        }
    }

    /// An optional attribute parsed by `parse`: `None` when absent or unreadable (noted) or
    /// when `parse` rejects it (noted as invalid). `parse` gives `Ok(None)` for a valid "none".
    fn parsed<T>(
        &mut self,
        attribute: &'static str,
        parse: impl FnOnce(&str) -> Result<Option<T>, ()>,
    ) -> Option<T> {
        let parsed = match self.reader.text(self.dir, attribute) {
            Ok(text) => parse(text),
            Err(e) => {
                self.note_err(attribute, &e);
                return None;
            }
        };
        parsed.unwrap_or_else(|()| {
            self.note(attribute, ReadFailure::Invalid);
            None
        })
    }

    /// A link's basename (`driver`, `iommu_group`), `None` when absent or unreadable (noted).
    fn link_name(&mut self, attribute: &'static str) -> Option<String> {
        match self.reader.link(self.dir, attribute) {
            Ok(target) => Some(link_basename(target).to_owned()),
            Err(e) => {
                self.note_err(attribute, &e);
                None
            }
        }
    }

    fn read(mut self, ctx: &WalkContext<'_>, sysfs_path: String) -> Result<PciDevice, ReadProblem> {
        let bdf = self.bdf;
        let from_uevent = match self.reader.raw(self.dir, "uevent") {
            Ok(text) => {
                let parsed = attrs::parse_uevent(text);
                if parsed.is_none() {
                    self.note("uevent", ReadFailure::Invalid);
                }
                parsed
            }
            // Snapshots and odd kernels lack uevent: modalias and single files instead.
            Err(e) => {
                self.note_err("uevent", &e);
                None
            }
        };
        let trusted = from_uevent.is_some();
        let ids = self.complete_ids(from_uevent.unwrap_or_default())?;
        let driver = if trusted {
            ids.driver.clone()
        } else {
            self.link_name("driver")
        };
        let revision = self.parsed("revision", |t| {
            attrs::parse_hex_attr(t)
                .and_then(|r| u8::try_from(r).ok())
                .map(Some)
                .ok_or(())
        });
        let numa_node = self.parsed("numa_node", |t| {
            let value: i64 = t.parse().map_err(|_| ())?;
            Ok(u32::try_from(value).ok())
        });
        let driver_override =
            self.parsed("driver_override", |t| Ok(attrs::parse_driver_override(t)));
        // The group listing names each member; a device it does not list (or a tree without
        // the listing) is asked through its own link.
        let iommu_group = match ctx.group_of.and_then(|map| map.get(&bdf)) {
            Some(group) => Some(*group),
            None => self.link_name("iommu_group").and_then(|name| {
                let number = name.parse().ok();
                if number.is_none() {
                    self.note("iommu_group", ReadFailure::Invalid);
                }
                number
            }),
        };
        let is_pcie = match size_at(self.dir, "config") {
            Ok(size) => size > CONVENTIONAL_CONFIG_SIZE,
            Err(e) => {
                self.note_err("config", &e);
                false
            }
        };
        let vfio_cdev = match ctx.cdevs {
            Some(map) => map.get(&bdf).cloned(),
            None if driver.as_deref().is_some_and(is_vfio_driver) => self.find_cdev(),
            None => None,
        };
        let sriov = self.read_sriov();
        let boot_vga = ids.class_code.is_some_and(|c| c >> 8 == CLASS_VGA) && self.boot_vga();
        let details = ctx.details.then(|| self.read_details());

        let mut upstream = bdfs_in_path(&sysfs_path);
        if upstream.last() == Some(&bdf) {
            upstream.pop();
        }
        let (Some(vendor), Some(device), Some(class_code)) =
            (ids.vendor, ids.device, ids.class_code)
        else {
            return Err(self.identity_problem());
        };
        Ok(PciDevice {
            bdf,
            vendor,
            device,
            subsystem_vendor: ids.subsystem_vendor,
            subsystem_device: ids.subsystem_device,
            class_code,
            revision,
            driver,
            driver_override,
            iommu_group,
            numa_node,
            physfn: None,
            virtfns: sriov.virtfns,
            sriov_totalvfs: sriov.totalvfs,
            sriov_numvfs: sriov.numvfs,
            upstream,
            is_pcie,
            vfio_cdev,
            boot_vga,
            sysfs_path,
            details,
            problems: self.problems,
        })
    }

    /// Fills IDs and class that `uevent` did not give from `modalias`, then from the single
    /// attribute files. Fails when vendor, device or class cannot be found anywhere.
    fn complete_ids(&mut self, mut ids: Uevent) -> Result<Uevent, ReadProblem> {
        let complete =
            |ids: &Uevent| ids.vendor.is_some() && ids.device.is_some() && ids.class_code.is_some();
        if !complete(&ids) {
            if let Some(alias) = self.parsed("modalias", |t| {
                let alias = attrs::parse_modalias(t);
                alias.class_code.map(|_| Some(alias)).ok_or(())
            }) {
                ids.vendor = ids.vendor.or(alias.vendor);
                ids.device = ids.device.or(alias.device);
                ids.class_code = ids.class_code.or(alias.class_code);
                ids.subsystem_vendor = ids.subsystem_vendor.or(alias.subsystem_vendor);
                ids.subsystem_device = ids.subsystem_device.or(alias.subsystem_device);
            }
        }
        let hex = |limit: u32| {
            move |t: &str| {
                attrs::parse_hex_attr(t)
                    .filter(|v| *v <= limit)
                    .map(Some)
                    .ok_or(())
            }
        };
        let to16 = |v: Option<u32>| v.and_then(|v| u16::try_from(v).ok());
        if !complete(&ids) {
            if ids.vendor.is_none() {
                ids.vendor = to16(self.parsed("vendor", hex(0xffff)));
            }
            if ids.device.is_none() {
                ids.device = to16(self.parsed("device", hex(0xffff)));
            }
            if ids.class_code.is_none() {
                ids.class_code = self.parsed("class", hex(0xff_ffff));
            }
        }
        if !complete(&ids) {
            return Err(self.identity_problem());
        }
        if ids.subsystem_vendor.is_none() {
            ids.subsystem_vendor = to16(self.parsed("subsystem_vendor", hex(0xffff)));
        }
        if ids.subsystem_device.is_none() {
            ids.subsystem_device = to16(self.parsed("subsystem_device", hex(0xffff)));
        }
        Ok(ids)
    }

    /// Why the identity (vendor, device, class) could not be read: the first problem met on
    /// the way, else "missing".
    fn identity_problem(&self) -> ReadProblem {
        self.problems.first().copied().unwrap_or(ReadProblem {
            bdf: self.bdf,
            attribute: "class",
            failure: ReadFailure::Missing,
        })
    }

    /// `boot_vga` of a VGA function: absent means no; unreadable counts as yes, since a
    /// console the scan cannot rule out must not be offered for binding.
    fn boot_vga(&mut self) -> bool {
        match self.reader.text(self.dir, "boot_vga") {
            Ok("1") => true,
            Ok("0") => false,
            Ok(_) => {
                self.note("boot_vga", ReadFailure::Invalid);
                true
            }
            Err(e) if is_absent(&e) => false,
            Err(e) => {
                self.note("boot_vga", ReadFailure::of(&e));
                true
            }
        }
    }

    /// `vfio-dev/vfioN` of a device bound to a vfio driver with cdev support (none found is
    /// no cdev, which only makes plans stricter: iommufd needs one).
    fn find_cdev(&self) -> Option<String> {
        list_dir_at(self.dir, "vfio-dev")
            .ok()?
            .into_iter()
            .filter_map(|n| cdev_number(&n).map(|number| (number, n)))
            .min()
            .map(|(_, name)| name)
    }

    /// The SR-IOV side of a PF; all empty for other functions. Only PFs have
    /// `sriov_totalvfs`, so one failing open tells every other function apart. A PF whose
    /// counts cannot be read still lists its VFs: its `virtfnN` links are followed until the
    /// first missing one.
    fn read_sriov(&mut self) -> Sriov {
        let totalvfs = match self.reader.text(self.dir, "sriov_totalvfs") {
            Ok(text) => {
                let count = attrs::parse_count(text);
                if count.is_none() {
                    self.note("sriov_totalvfs", ReadFailure::Invalid);
                }
                count
            }
            Err(e) if e.raw_os_error() == Some(ENOENT) => return Sriov::default(),
            Err(e) => {
                self.note_err("sriov_totalvfs", &e);
                None
            }
        };
        let numvfs = self.parsed("sriov_numvfs", |t| {
            attrs::parse_count(t).map(Some).ok_or(())
        });
        let mut virtfns = Vec::new();
        for index in 0..numvfs.unwrap_or(u32::MAX) {
            match self.reader.link(self.dir, &format!("virtfn{index}")) {
                Ok(target) => virtfns.extend(last_bdf_in_path(target)),
                Err(_) if numvfs.is_none() => break,
                Err(_) => {}
            }
        }
        virtfns.sort_unstable();
        virtfns.dedup();
        Sriov {
            totalvfs,
            numvfs,
            virtfns,
        }
    }

    /// BARs, reset methods and link attributes. A `resource` that is absent, unreadable or
    /// malformed leaves the BARs unknown (`None`), never empty.
    fn read_details(&mut self) -> Details {
        // Untrimmed: line N is BAR N, so a leading blank line must not shift them.
        let bars = match self.reader.raw(self.dir, "resource") {
            Ok(text) => {
                let bars = attrs::parse_resource(text);
                if bars.is_none() {
                    self.note("resource", ReadFailure::Invalid);
                }
                bars
            }
            Err(e) => {
                self.note("resource", ReadFailure::of(&e));
                None
            }
        };
        let reset_methods = self.parsed("reset_method", |t| {
            Ok(Some(t.split_whitespace().map(str::to_owned).collect()))
        });
        let speed = |t: &str| Ok(attrs::parse_link_speed(t));
        let width = |t: &str| Ok(attrs::parse_link_width(t));
        let link = Link {
            current_speed: self.parsed("current_link_speed", speed),
            current_width: self.parsed("current_link_width", width),
            max_speed: self.parsed("max_link_speed", speed),
            max_width: self.parsed("max_link_width", width),
        };
        let link = (link != Link::default()).then_some(link);
        Details {
            bars,
            reset_methods,
            link,
        }
    }
}

/// The number of a vfio cdev name: `vfioN`, or `noiommu-vfioN` for a device in a no-IOMMU
/// group (the kernel's `"%svfio%d"` in vfio_main.c); N is decimal without leading zeros.
pub fn cdev_number(name: &str) -> Option<u32> {
    let digits = name
        .strip_prefix("noiommu-")
        .unwrap_or(name)
        .strip_prefix("vfio")?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// The SR-IOV side of a PF; all empty for other functions.
#[derive(Debug, Default)]
struct Sriov {
    totalvfs: Option<u32>,
    numvfs: Option<u32>,
    virtfns: Vec<Bdf>,
}
