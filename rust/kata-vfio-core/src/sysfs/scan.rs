//! The host scan: one pass over `bus/pci/devices`, the group listing, the VFIO nodes and the
//! IOMMU status, tolerant of devices that come and go while it runs. Every path is resolved
//! beneath the sysfs root ([`crate::beneath`]).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use super::device::{read_device, CdevMap, DeviceRead, WalkContext};
use super::io::{is_absent, AttrReader};
use super::problem::{ReadFailure, ReadProblem};
use crate::bdf::Bdf;
use crate::beneath::{list_dir, open_beneath, RootDir};
use crate::devnode::{read_registered_nodes, DevNode, DevNodeKind};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::iommu::{build_groups, GroupInputs};
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

/// What a root that cannot be opened means, for the hint.
fn root_hint(err: &io::Error, what: &str) -> String {
    match ReadFailure::of(err) {
        ReadFailure::PermissionDenied => format!("permission denied on {what}: read it as root"),
        ReadFailure::EscapesRoot => format!("{what} is a link that leaves the sysfs root"),
        ReadFailure::Missing => format!("{what} is missing: the sysfs root must be the directory that holds bus/ and devices/"),
        _ => format!("{what} cannot be read: the sysfs root must be the directory that holds bus/ and devices/"),
    }
}

/// Opens the sysfs root and its `bus/pci/devices`.
fn open_bus(sysfs_root: &Path) -> Result<(RootDir, std::os::fd::OwnedFd)> {
    let root = RootDir::open_sysfs(sysfs_root).map_err(|e| {
        let hint = root_hint(&e, "the sysfs root");
        Error::io("open sysfs root", sysfs_root, e).with_hint(hint)
    })?;
    let devices_dir = root.open_dir("bus/pci/devices").map_err(|e| {
        let hint = root_hint(&e, "bus/pci/devices");
        Error::io("open", sysfs_root.join("bus/pci/devices"), e).with_hint(hint)
    })?;
    Ok((root, devices_dir))
}

/// Scans the host. Fails only when the sysfs root or its `bus/pci/devices` cannot be opened,
/// or when the scan itself fails (never silently: a device the walk lost is an error, not a
/// shorter list); anything wrong with a single device or attribute is recorded and judged.
pub fn scan(options: &ScanOptions) -> Result<Host> {
    let (root, devices_dir) = open_bus(&options.sysfs_root)?;
    let devices_path = options.sysfs_root.join("bus/pci/devices");
    let names = list_dir(
        root.open_dir("bus/pci/devices")
            .map_err(|e| Error::io("open", &devices_path, e))?,
    )
    .map_err(|e| Error::io("list", &devices_path, e))?;
    let entries: Vec<(Bdf, String)> = names
        .into_iter()
        .filter_map(|n| Bdf::parse(&n).ok().map(|b| (b, n)))
        .collect();

    let listing = read_group_listing(&root);
    let group_of: Option<HashMap<Bdf, u32>> = listing.as_ref().map(|l| {
        l.members
            .iter()
            .flat_map(|(id, bdfs)| bdfs.iter().map(move |b| (*b, *id)))
            .collect()
    });
    let nodes = read_registered_nodes(&root);
    let cdevs = cdev_map(&root, &nodes);
    let threads = options
        .threads
        .unwrap_or_else(|| auto_threads(entries.len()))
        .max(1);
    let ctx = WalkContext {
        root: &root,
        devices_dir: devices_dir.as_fd(),
        cdevs: cdevs.as_ref(),
        group_of: group_of.as_ref(),
        details: options.details,
    };
    let (mut devices, mut unreadable) = walk(&ctx, &entries, threads)?;
    devices.sort_unstable_by_key(|d| d.bdf);
    unreadable.sort_unstable_by_key(|p| p.bdf);
    link_vfs_to_pfs(&mut devices);

    let linked = members_from_devices(&devices);
    let fake_groups = noiommu_groups(&root);
    let to_u32 = |count: usize| u32::try_from(count).unwrap_or(u32::MAX);
    let evidence = GroupEvidence {
        listed: listing
            .as_ref()
            .filter(|l| l.unreadable.is_none())
            .map(|l| to_u32(l.count)),
        linked: to_u32(linked.len()),
        noiommu: to_u32(fake_groups.len()),
    };
    // Without the kernel's listing, a function whose own group link cannot be read could be
    // in any group.
    let unplaced: Vec<Bdf> = if listing.is_none() {
        unreadable
            .iter()
            .map(|p| p.bdf)
            .chain(
                devices
                    .iter()
                    .filter(|d| d.problem("iommu_group").is_some())
                    .map(|d| d.bdf),
            )
            .collect()
    } else {
        Vec::new()
    };
    let (members, listing_failures) = match listing {
        // The listing exists but cannot be read: no group can be checked against it.
        Some(GroupListing {
            unreadable: Some(failure),
            ..
        }) => {
            let failures = linked.keys().map(|id| (*id, failure)).collect();
            (linked, failures)
        }
        Some(listing) => (merge_members(listing.members, linked), listing.failures),
        None => (linked, BTreeMap::new()),
    };
    let groups = build_groups(GroupInputs {
        members,
        devices: &devices,
        unreadable: &unreadable,
        listing_failures: &listing_failures,
        unplaced: &unplaced,
        sysfs_root: &options.sysfs_root.to_string_lossy(),
    });
    let proc_root = options.effective_proc_root();
    let iommu = read_status(&root, &options.dev_root, proc_root.as_deref(), evidence);
    Ok(Host::new(
        options.sysfs_root.clone(),
        options.dev_root.clone(),
        proc_root,
        devices,
        unreadable,
        groups,
        iommu,
        nodes,
        options.details,
    ))
}

/// Reads one device, with its detail attributes, without scanning the rest of the host.
pub fn read_one_device(sysfs_root: &Path, bdf: Bdf) -> Result<PciDevice> {
    let (root, devices_dir) = open_bus(sysfs_root)?;
    let devices_path = sysfs_root.join("bus/pci/devices");
    let name = bdf.to_string();
    let ctx = WalkContext {
        root: &root,
        devices_dir: devices_dir.as_fd(),
        cdevs: None,
        group_of: None,
        details: true,
    };
    match read_device(&ctx, bdf, &name, &mut AttrReader::default()) {
        DeviceRead::Found(device) => Ok(*device),
        DeviceRead::Gone => Err(Error::NotFound {
            what: "PCI device",
            name,
            hint: Some(format!("it is not under {}", devices_path.display())),
            remedies: Vec::new(),
        }),
        DeviceRead::Unreadable(problem) => {
            let path = devices_path.join(&name).join(problem.attribute);
            Err(Error::io("read", path, unreadable_error(problem.failure)))
        }
    }
}

/// An I/O error that says what a [`ReadFailure`] says.
fn unreadable_error(failure: ReadFailure) -> io::Error {
    match failure.errno() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::new(io::ErrorKind::InvalidData, failure.as_str()),
    }
}

fn auto_threads(devices: usize) -> usize {
    if devices < PARALLEL_THRESHOLD {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

type Walked = (Vec<PciDevice>, Vec<ReadProblem>);

/// Reads every device, in chunks on `threads` threads.
fn walk(ctx: &WalkContext<'_>, entries: &[(Bdf, String)], threads: usize) -> Result<Walked> {
    let read_chunk = |chunk: &[(Bdf, String)]| -> Walked {
        let mut reader = AttrReader::default();
        let mut devices = Vec::with_capacity(chunk.len());
        let mut unreadable = Vec::new();
        for (bdf, name) in chunk {
            match read_device(ctx, *bdf, name, &mut reader) {
                DeviceRead::Found(device) => devices.push(*device),
                DeviceRead::Gone => {}
                DeviceRead::Unreadable(problem) => unreadable.push(problem),
            }
        }
        (devices, unreadable)
    };
    let lost = |_| Error::Io {
        op: "scan",
        path: ctx.root.path().join("bus/pci/devices"),
        source: io::Error::other("a scan worker stopped unexpectedly"),
        hint: Some("this is a bug in kata-vfio: please report it with the tree scanned".into()),
    };
    if threads <= 1 || entries.len() < 2 {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_chunk(entries)))
            .map_err(lost);
    }
    let chunk_size = entries.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = entries
            .chunks(chunk_size)
            .map(|chunk| scope.spawn(move || read_chunk(chunk)))
            .collect();
        let mut out: Walked = (Vec::with_capacity(entries.len()), Vec::new());
        // A worker that panicked would leave its devices out: the scan fails instead of
        // looking smaller (and so more assignable) than the host is.
        for worker in workers {
            let (devices, unreadable) = worker.join().map_err(lost)?;
            out.0.extend(devices);
            out.1.extend(unreadable);
        }
        Ok(out)
    })
}

/// `kernel/iommu_groups`: each group's members as the kernel lists them.
#[derive(Debug)]
struct GroupListing {
    /// Groups listed (numeric names), readable or not.
    count: usize,
    members: BTreeMap<u32, Vec<Bdf>>,
    /// Groups whose `devices` directory could not be listed.
    failures: BTreeMap<u32, ReadFailure>,
    /// `kernel/iommu_groups` itself exists but cannot be listed.
    unreadable: Option<ReadFailure>,
}

/// The group listing, or `None` when `kernel/iommu_groups` is missing (the real snapshots
/// lack it; membership then comes from each device's `iommu_group` link).
fn read_group_listing(root: &RootDir) -> Option<GroupListing> {
    let mut listing = GroupListing {
        count: 0,
        members: BTreeMap::new(),
        failures: BTreeMap::new(),
        unreadable: None,
    };
    let opened = root
        .open_dir("kernel/iommu_groups")
        .and_then(|dir| Ok((list_dir(dir)?, root.open_dir("kernel/iommu_groups")?)));
    let (names, groups_dir) = match opened {
        Ok(found) => found,
        Err(e) if is_absent(&e) => return None,
        Err(e) => {
            listing.unreadable = Some(ReadFailure::of(&e));
            return Some(listing);
        }
    };
    for name in names {
        let Some(id) = parse_group_number(&name) else {
            continue;
        };
        listing.count += 1;
        match list_group(groups_dir.as_fd(), &name) {
            Ok(members) => {
                listing.members.insert(id, members);
            }
            Err(e) => {
                listing.failures.insert(id, ReadFailure::of(&e));
                listing.members.insert(id, Vec::new());
            }
        }
    }
    Some(listing)
}

/// The PCI functions in `N/devices` (other names, platform devices, are left out).
fn list_group(groups_dir: BorrowedFd<'_>, name: &str) -> io::Result<Vec<Bdf>> {
    let dir = open_beneath(
        groups_dir,
        format!("{name}/devices"),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )?;
    Ok(list_dir(dir)?
        .iter()
        .filter_map(|n| Bdf::parse(n).ok())
        .collect())
}

/// A group directory's name as the kernel writes it (decimal, no leading zeros).
fn parse_group_number(name: &str) -> Option<u32> {
    let canonical = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_digit())
        && (name == "0" || !name.starts_with('0'));
    canonical.then(|| name.parse().ok()).flatten()
}

/// Groups taken from the devices' own `iommu_group` numbers.
fn members_from_devices(devices: &[PciDevice]) -> BTreeMap<u32, Vec<Bdf>> {
    let mut members: BTreeMap<u32, Vec<Bdf>> = BTreeMap::new();
    for device in devices {
        if let Some(group) = device.iommu_group {
            members.entry(group).or_default().push(device.bdf);
        }
    }
    members
}

/// The listing's members plus any device whose own link names a group (a tree where the two
/// disagree is judged on every member either names).
fn merge_members(
    mut listed: BTreeMap<u32, Vec<Bdf>>,
    linked: BTreeMap<u32, Vec<Bdf>>,
) -> BTreeMap<u32, Vec<Bdf>> {
    for (id, bdfs) in linked {
        listed.entry(id).or_default().extend(bdfs);
    }
    listed
}

/// The software groups vfio makes in its unsafe no-IOMMU mode (their `name` reads
/// `vfio-noiommu`): they hold devices but are no evidence of an IOMMU. Only looked for when
/// that mode is on, so a normal scan pays nothing.
fn noiommu_groups(root: &RootDir) -> Vec<u32> {
    let mode = root.read_text("module/vfio/parameters/enable_unsafe_noiommu_mode");
    if !mode.is_ok_and(|m| m == "Y" || m == "1") {
        return Vec::new();
    }
    root.list("kernel/iommu_groups")
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.parse::<u32>().ok())
        .filter(|g| {
            root.read_text(format!("kernel/iommu_groups/{g}/name"))
                .is_ok_and(|name| name == "vfio-noiommu")
        })
        .collect()
}

/// Function -> cdev name from the registered cdev nodes; `None` without `class/vfio-dev`.
fn cdev_map(root: &RootDir, nodes: &[DevNode]) -> Option<CdevMap> {
    if !root.exists("class/vfio-dev") {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A host with one IOMMU group of two functions: a GPU on vfio-pci and its audio
    /// function on snd_hda_intel, both listed in `kernel/iommu_groups/5/devices`.
    fn gpu_with_audio(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("kata-vfio-scan-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let sys = root.join("sys");
        for (bdf, driver, class, id) in [
            ("0000:01:00.0", "vfio-pci", "30200", "10DE:2330"),
            ("0000:01:00.1", "snd_hda_intel", "40300", "10DE:22BA"),
        ] {
            let dir = sys.join("devices/pci0000:00").join(bdf);
            fs::create_dir_all(&dir).unwrap();
            let (vendor, device) = id.split_once(':').unwrap();
            let modalias = format!(
                "pci:v0000{vendor}d0000{device}sv00000000sd00000000bc{}sc{}i{}",
                &format!("{class:0>6}")[..2],
                &format!("{class:0>6}")[2..4],
                &format!("{class:0>6}")[4..]
            );
            fs::write(
                dir.join("uevent"),
                format!("DRIVER={driver}\nPCI_CLASS={class}\nPCI_ID={id}\nPCI_SUBSYS_ID=0000:0000\nMODALIAS={modalias}\n"),
            )
            .unwrap();
            fs::create_dir_all(sys.join("bus/pci/drivers").join(driver)).unwrap();
            symlink(
                format!("../../../../bus/pci/drivers/{driver}"),
                dir.join("driver"),
            )
            .unwrap();
            fs::create_dir_all(sys.join("bus/pci/devices")).unwrap();
            symlink(
                format!("../../../devices/pci0000:00/{bdf}"),
                sys.join("bus/pci/devices").join(bdf),
            )
            .unwrap();
            let listed = sys.join("kernel/iommu_groups/5/devices");
            fs::create_dir_all(&listed).unwrap();
            symlink(
                format!("../../../../devices/pci0000:00/{bdf}"),
                listed.join(bdf),
            )
            .unwrap();
        }
        root
    }

    fn group_5(sys: &Path) -> (crate::iommu::GroupVerdict, Vec<ReadProblem>, Vec<String>) {
        let host = scan(&ScanOptions {
            sysfs_root: sys.to_path_buf(),
            dev_root: sys.join("../dev"),
            ..ScanOptions::default()
        })
        .unwrap();
        let group = host.group(5).unwrap();
        let kinds = group
            .blockers
            .iter()
            .map(|b| format!("{} {}", b.bdf, b.kind.as_str()))
            .collect();
        (group.verdict, host.unreadable.clone(), kinds)
    }

    #[test]
    fn a_member_the_caller_may_not_read_makes_the_group_unknown() {
        let root = gpu_with_audio("eacces");
        let sys = root.join("sys");
        let audio = sys.join("devices/pci0000:00/0000:01:00.1");
        assert_eq!(group_5(&sys).0, crate::iommu::GroupVerdict::NotViable);
        fs::set_permissions(&audio, fs::Permissions::from_mode(0o000)).unwrap();
        // Root reads through mode 000: drop this one thread to nobody (the kernel then also
        // drops its capabilities) so the scan meets EACCES the way an unprivileged user does.
        let seen = std::thread::spawn({
            let sys = sys.clone();
            move || {
                if rustix::process::geteuid().is_root() {
                    rustix::thread::set_thread_groups(&[]).unwrap();
                    rustix::thread::set_thread_gid(rustix::fs::Gid::from_raw(65534)).unwrap();
                    rustix::thread::set_thread_uid(rustix::fs::Uid::from_raw(65534)).unwrap();
                }
                group_5(&sys)
            }
        })
        .join()
        .unwrap();
        fs::set_permissions(&audio, fs::Permissions::from_mode(0o755)).unwrap();
        let _ = fs::remove_dir_all(&root);
        let (verdict, unreadable, kinds) = seen;
        assert_eq!(verdict, crate::iommu::GroupVerdict::Unknown);
        assert_eq!(kinds, ["0000:01:00.1 unknown"]);
        assert_eq!(unreadable.len(), 1);
        assert_eq!(unreadable[0].failure, ReadFailure::PermissionDenied);
        assert_eq!(unreadable[0].bdf.to_string(), "0000:01:00.1");
    }

    #[test]
    fn a_listed_member_without_its_directory_makes_the_group_unknown() {
        let root = gpu_with_audio("missing");
        let sys = root.join("sys");
        fs::remove_file(sys.join("bus/pci/devices/0000:01:00.1")).unwrap();
        let (verdict, unreadable, kinds) = group_5(&sys);
        let _ = fs::remove_dir_all(&root);
        assert_eq!(verdict, crate::iommu::GroupVerdict::Unknown);
        assert!(unreadable.is_empty());
        assert_eq!(kinds, ["0000:01:00.1 unknown"]);
    }
}
