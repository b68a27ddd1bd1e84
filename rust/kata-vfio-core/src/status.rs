//! Whether the host has a working IOMMU and VFIO stack, and the evidence for the verdict.

use std::io;
use std::path::Path;

use crate::beneath::RootDir;
use crate::sysfs::io::{is_absent, read_bounded_at};
use crate::sysfs::problem::ReadFailure;

/// The host's IOMMU and VFIO state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IommuStatus {
    pub enabled: bool,
    pub reasons: Vec<String>,
    pub group_count: u32,
    pub iommu_class: Vec<String>,
    pub firmware_tables: Vec<String>,
    pub cmdline: Option<Vec<String>>,
    pub cpu_vendor: Option<String>,
    pub vfio_module: bool,
    pub vfio_pci_driver: bool,
    pub iommufd_module: bool,
    pub vfio_container_node: bool,
    pub iommufd_node: bool,
    pub noiommu: bool,
    /// Evidence that exists but could not be read, by path under its root (`dev/vfio/vfio`,
    /// `proc/cmdline`, `sys/class/iommu`): the matching facts above are unknown, not "no".
    pub unreadable: Vec<(&'static str, ReadFailure)>,
}

/// What the device walk found about groups, for the verdict.
#[derive(Debug, Clone, Copy)]
pub struct GroupEvidence {
    /// Groups listed under `kernel/iommu_groups` (None when the directory is missing).
    pub listed: Option<u32>,
    /// Distinct groups named by the devices' own `iommu_group` links.
    pub linked: u32,
    /// How many of those are vfio's software no-IOMMU groups (no evidence of an IOMMU).
    pub noiommu: u32,
}

/// Kernel arguments that matter for IOMMU and VFIO.
const CMDLINE_KEYS: &[&str] = &[
    "intel_iommu",
    "amd_iommu",
    "iommu",
    "iommufd",
    "vfio",
    "vfio-pci",
    "vfio_pci",
    "vfio_iommu_type1",
    "pcie_acs_override",
    "rd.driver.pre",
];

/// The longest `/proc/cmdline` read (the kernel's own limit is 2-4 KiB on most machines).
const CMDLINE_MAX: usize = 64 * 1024;
/// The head of `/proc/cpuinfo` that holds the first CPU's vendor.
const CPUINFO_HEAD: usize = 4096;

/// Reads the status. `sysfs` is the open sysfs root; `dev_root` and `proc_root` are paths,
/// read beneath themselves like the sysfs root.
pub fn read_status(
    sysfs: &RootDir,
    dev_root: &Path,
    proc_root: Option<&Path>,
    groups: GroupEvidence,
) -> IommuStatus {
    let mut unreadable = Vec::new();
    let mut note = |what: &'static str, err: &io::Error| {
        if !is_absent(err) {
            unreadable.push((what, ReadFailure::of(err)));
        }
    };
    let mut iommu_class = sysfs.list("class/iommu").unwrap_or_else(|e| {
        note("sys/class/iommu", &e);
        Vec::new()
    });
    iommu_class.sort();
    let firmware_tables: Vec<String> = ["DMAR", "IVRS", "IORT"]
        .iter()
        .filter(|t| sysfs.exists(format!("firmware/acpi/tables/{t}")))
        .map(|t| (*t).to_owned())
        .collect();
    let proc = proc_root.map(RootDir::open);
    let cmdline = match &proc {
        Some(Ok(proc)) => match read_bounded_at(proc.fd(), "cmdline", CMDLINE_MAX) {
            Ok(bytes) => Some(iommu_arguments(&String::from_utf8_lossy(&bytes))),
            Err(e) => {
                note("proc/cmdline", &e);
                None
            }
        },
        Some(Err(e)) => {
            note("proc", e);
            None
        }
        None => None,
    };
    let cpu_vendor = vendor_from_evidence(&firmware_tables, &iommu_class).or_else(|| match &proc {
        Some(Ok(proc)) => vendor_from_cpuinfo(proc),
        _ => None,
    });

    let noiommu_param = sysfs
        .read_text("module/vfio/parameters/enable_unsafe_noiommu_mode")
        .is_ok_and(|v| v == "Y" || v == "1");
    let dev = RootDir::open(dev_root);
    let mut dev_node = |rel: &'static str, what: &'static str| match &dev {
        Ok(dev) => match dev.stat(rel) {
            Ok(_) => true,
            Err(e) => {
                note(what, &e);
                false
            }
        },
        Err(_) => false,
    };
    let vfio_container_node = dev_node("vfio/vfio", "dev/vfio/vfio");
    let iommufd_node = dev_node("iommu", "dev/iommu");
    let noiommu_nodes = dev.as_ref().is_ok_and(|dev| {
        dev.list("vfio")
            .is_ok_and(|names| names.iter().any(|n| n.starts_with("noiommu-")))
    });

    let mut status = IommuStatus {
        group_count: groups.listed.unwrap_or(groups.linked).max(groups.linked),
        vfio_module: sysfs.exists("module/vfio"),
        vfio_pci_driver: sysfs.exists("bus/pci/drivers/vfio-pci"),
        iommufd_module: sysfs.exists("module/iommufd"),
        vfio_container_node,
        iommufd_node,
        noiommu: noiommu_param || noiommu_nodes,
        iommu_class,
        firmware_tables,
        cmdline,
        cpu_vendor,
        unreadable,
        ..IommuStatus::default()
    };
    let (enabled, reasons) = verdict(&status, groups);
    status.enabled = enabled;
    status.reasons = reasons;
    status
}

fn verdict(status: &IommuStatus, groups: GroupEvidence) -> (bool, Vec<String>) {
    let mut reasons = Vec::new();
    let real_listed = groups.listed.map(|n| n.saturating_sub(groups.noiommu));
    let real_linked = groups.linked.saturating_sub(groups.noiommu);
    let enabled = match real_listed {
        Some(n) if n > 0 => {
            reasons.push(format!("{n} IOMMU groups under /sys/kernel/iommu_groups"));
            true
        }
        _ if real_linked > 0 => {
            reasons.push(format!(
                "devices link to {real_linked} IOMMU groups (kernel/iommu_groups is missing from this tree)"
            ));
            true
        }
        Some(_) if groups.noiommu > 0 => {
            reasons.push(format!(
                "/sys/kernel/iommu_groups holds only {} vfio no-IOMMU groups: the kernel runs without an IOMMU",
                groups.noiommu
            ));
            false
        }
        Some(_) => {
            reasons.push(
                "/sys/kernel/iommu_groups is empty: the kernel runs without an IOMMU".to_owned(),
            );
            false
        }
        None => {
            reasons.push("no IOMMU groups: no device has an iommu_group link and /sys/kernel/iommu_groups is missing".to_owned());
            false
        }
    };
    if !status.iommu_class.is_empty() {
        reasons.push(format!(
            "IOMMU units registered in /sys/class/iommu: {}",
            status.iommu_class.join(", ")
        ));
    } else if !enabled {
        reasons.push("no IOMMU unit in /sys/class/iommu".to_owned());
    }
    if status.firmware_tables.is_empty() {
        if !enabled {
            reasons.push("no DMAR, IVRS or IORT ACPI table: the firmware does not describe an IOMMU (enable VT-d / AMD-Vi / SMMU in the firmware setup)".to_owned());
        }
    } else {
        reasons.push(format!(
            "firmware IOMMU tables: {}",
            status.firmware_tables.join(", ")
        ));
    }
    if let Some(args) = &status.cmdline {
        for arg in args {
            if matches!(
                arg.as_str(),
                "intel_iommu=off" | "amd_iommu=off" | "iommu=off"
            ) {
                reasons.push(format!("the kernel command line has {arg}"));
            }
        }
        if !enabled && args.is_empty() {
            reasons.push("the kernel command line has no IOMMU argument".to_owned());
        }
    }
    if status.noiommu {
        reasons.push("vfio's unsafe no-IOMMU mode is on: devices get no DMA isolation".to_owned());
    }
    (enabled, reasons)
}

/// The IOMMU/VFIO arguments of a kernel command line, in order.
pub fn iommu_arguments(cmdline: &str) -> Vec<String> {
    cmdline
        .split_whitespace()
        .filter(|arg| {
            let key = arg.split_once('=').map_or(*arg, |(k, _)| k);
            let head = key.split('.').next().unwrap_or(key);
            CMDLINE_KEYS.contains(&key) || CMDLINE_KEYS.contains(&head)
        })
        .map(str::to_owned)
        .collect()
}

fn vendor_from_evidence(tables: &[String], class: &[String]) -> Option<String> {
    let from_table = tables.iter().find_map(|t| match t.as_str() {
        "DMAR" => Some("intel"),
        "IVRS" => Some("amd"),
        "IORT" => Some("arm"),
        _ => None,
    });
    let from_class = || {
        class.iter().find_map(|c| {
            if c.starts_with("dmar") {
                Some("intel")
            } else if c.starts_with("ivhd") {
                Some("amd")
            } else if c.starts_with("smmu") {
                Some("arm")
            } else {
                None
            }
        })
    };
    from_table.or_else(from_class).map(str::to_owned)
}

fn vendor_from_cpuinfo(proc: &RootDir) -> Option<String> {
    let head = read_bounded_at(proc.fd(), "cpuinfo", CPUINFO_HEAD).ok()?;
    let text = String::from_utf8_lossy(&head);
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        match (key.trim(), value.trim()) {
            ("vendor_id", "GenuineIntel") => Some("intel".to_owned()),
            ("vendor_id", "AuthenticAMD" | "HygonGenuine") => Some("amd".to_owned()),
            ("CPU implementer", _) => Some("arm".to_owned()),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_iommu_arguments() {
        let args = iommu_arguments("BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on iommu=pt vfio-pci.ids=10de:2330 quiet iommu.strict=1");
        assert_eq!(
            args,
            [
                "intel_iommu=on",
                "iommu=pt",
                "vfio-pci.ids=10de:2330",
                "iommu.strict=1"
            ]
        );
    }

    #[test]
    fn vendor_evidence() {
        assert_eq!(
            vendor_from_evidence(&["IVRS".into()], &[]).as_deref(),
            Some("amd")
        );
        assert_eq!(
            vendor_from_evidence(&[], &["dmar0".into()]).as_deref(),
            Some("intel")
        );
        assert_eq!(vendor_from_evidence(&[], &[]), None);
    }
}
