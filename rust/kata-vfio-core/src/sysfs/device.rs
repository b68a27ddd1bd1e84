//! Reading one PCI device directory.
//!
//! The cost model is the syscall count (lowlevel.md section 9): one `readlinkat` of the bus
//! link, one `openat` of the device directory, one `uevent` read for IDs, class and driver,
//! then `revision`, `numa_node`, `driver_override`, a `statat` of `config` and a probe of
//! `sriov_totalvfs`. Config space is never read. Optional attributes that are missing or
//! unreadable are simply absent; a device that vanishes mid-read is skipped.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};

use super::attrs::{self, Uevent};
use super::io::{link_basename, list_dir_at, read_text_at, resolve_relative, size_at, AttrReader};
use crate::bdf::{bdfs_in_path, last_bdf_in_path, Bdf};
use crate::pci::{is_vfio_driver, Details, Link, PciDevice};

/// Known vfio cdev names by function, from `class/vfio-dev` (read once per scan instead of
/// listing every device's `vfio-dev` directory). `None` when that class is missing.
pub type CdevMap = HashMap<Bdf, String>;

/// Configuration space of a conventional PCI function is 256 bytes; PCIe has 4096.
const CONVENTIONAL_CONFIG_SIZE: u64 = 256;

/// Reads the device `name` (already parsed as `bdf`) from `bus/pci/devices`. Returns `None`
/// when the device vanished or cannot be identified (no vendor/device/class anywhere).
/// `reader` is the walking thread's buffer.
pub fn read_device(
    devices_dir: BorrowedFd<'_>,
    bdf: Bdf,
    name: &str,
    cdevs: Option<&CdevMap>,
    details: bool,
    reader: &mut AttrReader,
) -> Option<PciDevice> {
    let sysfs_path = {
        let target = reader.link(devices_dir, name).ok()?;
        resolve_relative("bus/pci/devices", target).unwrap_or_else(|| target.to_owned())
    };
    let dir = super::io::open_anchor_at(devices_dir, name).ok()?;
    let dir = dir.as_fd();

    let (ids, uevent_read) = match reader.text(dir, "uevent") {
        Ok(text) => (attrs::parse_uevent(text), true),
        // Snapshots and odd kernels lack uevent: fall back to modalias and single files.
        Err(_) => (Uevent::default(), false),
    };
    let ids = complete_ids(dir, ids, reader)?;
    let driver = if uevent_read {
        ids.driver.clone()
    } else {
        reader
            .link(dir, "driver")
            .ok()
            .map(|t| link_basename(t).to_owned())
    };

    let revision = reader
        .text(dir, "revision")
        .ok()
        .and_then(attrs::parse_hex_attr)
        .and_then(|r| u8::try_from(r).ok());
    let numa_node = reader
        .text(dir, "numa_node")
        .ok()
        .and_then(attrs::parse_numa_node);
    let driver_override = reader
        .text(dir, "driver_override")
        .ok()
        .and_then(attrs::parse_driver_override);
    // One readlink per device is cheaper than listing every group's devices directory
    // (open, two getdents and close per group), and gives the same PCI membership.
    let iommu_group = reader
        .link(dir, "iommu_group")
        .ok()
        .and_then(|t| link_basename(t).parse().ok());
    let is_pcie = size_at(dir, "config").is_ok_and(|size| size > CONVENTIONAL_CONFIG_SIZE);
    let vfio_cdev = match cdevs {
        Some(map) => map.get(&bdf).cloned(),
        None if driver.as_deref().is_some_and(is_vfio_driver) => find_cdev(dir),
        None => None,
    };
    let sriov = read_sriov(dir, reader);

    let mut upstream = bdfs_in_path(&sysfs_path);
    if upstream.last() == Some(&bdf) {
        upstream.pop();
    }

    Some(PciDevice {
        bdf,
        vendor: ids.vendor?,
        device: ids.device?,
        subsystem_vendor: ids.subsystem_vendor,
        subsystem_device: ids.subsystem_device,
        class_code: ids.class_code?,
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
        sysfs_path,
        details: details.then(|| read_details(dir)),
    })
}

/// Fills IDs and class that `uevent` did not give from `modalias`, then from the single
/// attribute files. `None` when vendor, device or class cannot be found anywhere.
fn complete_ids(dir: BorrowedFd<'_>, mut ids: Uevent, reader: &mut AttrReader) -> Option<Uevent> {
    let complete =
        |ids: &Uevent| ids.vendor.is_some() && ids.device.is_some() && ids.class_code.is_some();
    if !complete(&ids) {
        if let Ok(text) = reader.text(dir, "modalias") {
            let alias = attrs::parse_modalias(text);
            ids.vendor = ids.vendor.or(alias.vendor);
            ids.device = ids.device.or(alias.device);
            ids.class_code = ids.class_code.or(alias.class_code);
            ids.subsystem_vendor = ids.subsystem_vendor.or(alias.subsystem_vendor);
            ids.subsystem_device = ids.subsystem_device.or(alias.subsystem_device);
        }
    }
    let hex16 = |name: &str| {
        read_small(dir, name)
            .and_then(|t| attrs::parse_hex_attr(&t))
            .and_then(|v| u16::try_from(v).ok())
    };
    if !complete(&ids) {
        ids.vendor = ids.vendor.or_else(|| hex16("vendor"));
        ids.device = ids.device.or_else(|| hex16("device"));
        ids.class_code = ids.class_code.or_else(|| {
            read_small(dir, "class")
                .and_then(|t| attrs::parse_hex_attr(&t))
                .filter(|c| *c <= 0xff_ffff)
        });
    }
    if complete(&ids) && (ids.subsystem_vendor.is_none() || ids.subsystem_device.is_none()) {
        ids.subsystem_vendor = ids.subsystem_vendor.or_else(|| hex16("subsystem_vendor"));
        ids.subsystem_device = ids.subsystem_device.or_else(|| hex16("subsystem_device"));
    }
    complete(&ids).then_some(ids)
}

/// An optional attribute as text; any failure (missing, unreadable, not text) is `None`.
fn read_small(dir: BorrowedFd<'_>, name: &str) -> Option<String> {
    read_text_at(dir, name).ok()
}

/// `vfio-dev/vfioN` of a device bound to a vfio driver with cdev support.
fn find_cdev(dir: BorrowedFd<'_>) -> Option<String> {
    let names = list_dir_at(dir, "vfio-dev").ok()?;
    names
        .into_iter()
        .filter_map(|n| cdev_number(&n).map(|number| (number, n)))
        .min()
        .map(|(_, name)| name)
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

/// Only PFs have `sriov_totalvfs`, so one failing open tells every other function apart. A
/// PF whose counts cannot be read still lists its VFs: its `virtfnN` links are followed until
/// the first missing one.
fn read_sriov(dir: BorrowedFd<'_>, reader: &mut AttrReader) -> Sriov {
    let totalvfs = match reader.text(dir, "sriov_totalvfs") {
        Ok(text) => attrs::parse_count(text),
        Err(e) if e.raw_os_error() == Some(ENOENT) => return Sriov::default(),
        Err(_) => None,
    };
    let numvfs = reader
        .text(dir, "sriov_numvfs")
        .ok()
        .and_then(attrs::parse_count);
    let mut virtfns = Vec::new();
    for index in 0..numvfs.unwrap_or(u32::MAX) {
        match reader.link(dir, &format!("virtfn{index}")) {
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

const ENOENT: i32 = 2;

/// BARs, reset methods and link attributes.
fn read_details(dir: BorrowedFd<'_>) -> Details {
    let bars = read_small(dir, "resource")
        .map(|t| attrs::parse_resource(&t))
        .unwrap_or_default();
    let reset_methods =
        read_small(dir, "reset_method").map(|t| t.split_whitespace().map(str::to_owned).collect());
    let link = Link {
        current_speed: read_small(dir, "current_link_speed")
            .and_then(|t| attrs::parse_link_speed(&t)),
        current_width: read_small(dir, "current_link_width")
            .and_then(|t| attrs::parse_link_width(&t)),
        max_speed: read_small(dir, "max_link_speed").and_then(|t| attrs::parse_link_speed(&t)),
        max_width: read_small(dir, "max_link_width").and_then(|t| attrs::parse_link_width(&t)),
    };
    let link = (link != Link::default()).then_some(link);
    Details {
        bars,
        reset_methods,
        link,
    }
}
