//! The host scan: one pass over `bus/pci/devices`, the group listing, the VFIO nodes and the
//! IOMMU status, tolerant of devices that come and go while it runs.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use super::device::{read_device, CdevMap};
use super::io::{
    exists_at, list_dir, list_dir_at, open_dir, open_dir_at, read_text_at, AttrReader,
};
use crate::bdf::Bdf;
use crate::devnode::{read_registered_nodes, DevNode, DevNodeKind};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::iommu::{build_groups, members_from_devices};
use crate::pci::PciDevice;
use crate::status::{read_status, GroupEvidence};

/// Below this many devices one thread is faster than starting more.
const PARALLEL_THRESHOLD: usize = 256;

/// What to scan and how.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub sysfs_root: PathBuf,
    pub dev_root: PathBuf,
    /// `None`: `/proc` for the real `/sys`, else a `proc` directory beside the sysfs root
    /// when there is one.
    pub proc_root: Option<PathBuf>,
    /// Also read BARs, reset methods and link attributes.
    pub details: bool,
    /// Worker threads for the device walk; `None` picks by host size and CPU count.
    pub threads: Option<usize>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            sysfs_root: "/sys".into(),
            dev_root: "/dev".into(),
            proc_root: None,
            details: false,
            threads: None,
        }
    }
}

impl ScanOptions {
    fn effective_proc_root(&self) -> Option<PathBuf> {
        if let Some(p) = &self.proc_root {
            return Some(p.clone());
        }
        if self.sysfs_root == Path::new("/sys") {
            return Some("/proc".into());
        }
        let beside = self.sysfs_root.parent()?.join("proc");
        beside.is_dir().then_some(beside)
    }
}

/// Scans the host. Fails only when the sysfs root or its `bus/pci/devices` cannot be opened;
/// anything wrong with a single device or attribute is tolerated.
pub fn scan(options: &ScanOptions) -> Result<Host> {
    let root = open_dir(&options.sysfs_root).map_err(|e| {
        Error::io("open sysfs root", &options.sysfs_root, e).with_hint(
            "point --sysfs-root at a sysfs tree (the directory that holds bus/ and devices/)",
        )
    })?;
    let root_fd = root.as_fd();
    let devices_path = options.sysfs_root.join("bus/pci/devices");
    let devices_dir = open_dir_at(root_fd, "bus/pci/devices").map_err(|e| {
        Error::io("open", &devices_path, e)
            .with_hint("this sysfs tree has no PCI bus (bus/pci/devices is missing)")
    })?;
    let names = list_dir(
        open_dir_at(root_fd, "bus/pci/devices").map_err(|e| Error::io("open", &devices_path, e))?,
    )
    .map_err(|e| Error::io("list", &devices_path, e))?;
    let entries: Vec<(Bdf, String)> = names
        .into_iter()
        .filter_map(|n| Bdf::parse(&n).ok().map(|b| (b, n)))
        .collect();

    let nodes = read_registered_nodes(root_fd);
    let cdevs = cdev_map(root_fd, &nodes);
    let threads = options
        .threads
        .unwrap_or_else(|| auto_threads(entries.len()))
        .max(1);
    let mut devices = walk(
        devices_dir.as_fd(),
        &entries,
        cdevs.as_ref(),
        options.details,
        threads,
    );
    devices.sort_unstable_by_key(|d| d.bdf);
    link_vfs_to_pfs(&mut devices);

    let members = members_from_devices(&devices);
    let fake_groups = noiommu_groups(root_fd);
    let to_u32 = |count: usize| u32::try_from(count).unwrap_or(u32::MAX);
    let evidence = GroupEvidence {
        listed: count_listed_groups(root_fd).map(to_u32),
        linked: to_u32(members.len()),
        noiommu: to_u32(fake_groups.len()),
    };
    let sysfs_text = options.sysfs_root.to_string_lossy().into_owned();
    let groups = build_groups(members, &devices, &sysfs_text);
    let proc_root = options.effective_proc_root();
    let iommu = read_status(root_fd, &options.dev_root, proc_root.as_deref(), evidence);
    Ok(Host::new(
        options.sysfs_root.clone(),
        options.dev_root.clone(),
        proc_root,
        devices,
        groups,
        iommu,
        nodes,
        options.details,
    ))
}

/// Reads one device, with its detail attributes, without scanning the rest of the host.
pub fn read_one_device(sysfs_root: &Path, bdf: Bdf) -> Result<PciDevice> {
    let root = open_dir(sysfs_root).map_err(|e| Error::io("open sysfs root", sysfs_root, e))?;
    let devices_path = sysfs_root.join("bus/pci/devices");
    let devices_dir = open_dir_at(root.as_fd(), "bus/pci/devices")
        .map_err(|e| Error::io("open", &devices_path, e))?;
    let name = bdf.to_string();
    read_device(
        devices_dir.as_fd(),
        bdf,
        &name,
        None,
        true,
        &mut AttrReader::default(),
    )
    .ok_or_else(|| Error::NotFound {
        what: "PCI device",
        name,
        hint: Some(format!("it is not under {}", devices_path.display())),
    })
}

fn auto_threads(devices: usize) -> usize {
    if devices < PARALLEL_THRESHOLD {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Reads every device, in chunks on `threads` threads.
fn walk(
    devices_dir: BorrowedFd<'_>,
    entries: &[(Bdf, String)],
    cdevs: Option<&CdevMap>,
    details: bool,
    threads: usize,
) -> Vec<PciDevice> {
    let read_chunk = |chunk: &[(Bdf, String)]| -> Vec<PciDevice> {
        chunk
            .iter()
            .filter_map({
                let mut reader = AttrReader::default();
                move |(bdf, name)| read_device(devices_dir, *bdf, name, cdevs, details, &mut reader)
            })
            .collect()
    };
    if threads <= 1 || entries.len() < 2 {
        return read_chunk(entries);
    }
    let chunk_size = entries.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = entries
            .chunks(chunk_size)
            .map(|chunk| scope.spawn(move || read_chunk(chunk)))
            .collect();
        // A worker can only fail by panicking; its devices are then left out rather than
        // failing the scan.
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

/// How many groups `kernel/iommu_groups` lists (`None` when the directory is missing).
fn count_listed_groups(root: BorrowedFd<'_>) -> Option<usize> {
    let names = list_dir_at(root, "kernel/iommu_groups").ok()?;
    Some(names.iter().filter(|n| n.parse::<u32>().is_ok()).count())
}

/// The software groups vfio makes in its unsafe no-IOMMU mode (their `name` reads
/// `vfio-noiommu`): they hold devices but are no evidence of an IOMMU. Only looked for when
/// that mode is on, so a normal scan pays nothing.
fn noiommu_groups(root: BorrowedFd<'_>) -> Vec<u32> {
    let mode = read_text_at(root, "module/vfio/parameters/enable_unsafe_noiommu_mode");
    if !mode.is_ok_and(|m| m == "Y" || m == "1") {
        return Vec::new();
    }
    list_dir_at(root, "kernel/iommu_groups")
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.parse::<u32>().ok())
        .filter(|g| {
            read_text_at(root, &format!("kernel/iommu_groups/{g}/name"))
                .is_ok_and(|name| name == "vfio-noiommu")
        })
        .collect()
}

/// Function -> cdev name from the registered cdev nodes; `None` without `class/vfio-dev`.
fn cdev_map(root: BorrowedFd<'_>, nodes: &[DevNode]) -> Option<CdevMap> {
    if !exists_at(root, "class/vfio-dev") {
        return None;
    }
    Some(
        nodes
            .iter()
            .filter(|n| n.kind == DevNodeKind::Cdev)
            .filter_map(|n| Some((*n.bdfs.first()?, n.cdev.clone()?)))
            .collect(),
    )
}

/// Sets each VF's `physfn` from its PF's `virtfnN` links (the kernel keeps the two in step, so
/// one side is enough and saves a readlink per device).
fn link_vfs_to_pfs(devices: &mut [PciDevice]) {
    let pf_of: HashMap<Bdf, Bdf> = devices
        .iter()
        .flat_map(|pf| pf.virtfns.iter().map(move |vf| (*vf, pf.bdf)))
        .collect();
    if pf_of.is_empty() {
        return;
    }
    for device in devices.iter_mut() {
        device.physfn = pf_of.get(&device.bdf).copied();
    }
}
