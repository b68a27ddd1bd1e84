//! Is a device's VFIO group open? Unbinding a device from vfio-pci while a process (a
//! running QEMU) holds its group or cdev does not fail: the kernel asks the holder to let go
//! and the write blocks until it does. So `unbind` and `restore` look first and refuse.
//!
//! Two looks, both cheap next to a hung write: open the group node `/dev/vfio/<N>` (the
//! kernel answers `EBUSY` while the group is open elsewhere or a device of it is bound to an
//! iommufd through its cdev; an open that succeeds is closed at once and changes nothing),
//! and scan `<proc>/*/fd` for links to the group node or the device's cdev (which names the
//! holder, and also catches a cdev opened but not yet bound, which blocks the unbind too).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::beneath::read_file_capped;
use super::sysfs::PciBus;
use crate::bdf::Bdf;

/// A process holding a VFIO node open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command name (`<proc>/<pid>/comm`).
    pub comm: String,
    pub node: PathBuf,
}

/// Why `bdf` (on a vfio driver) cannot be unbound now; `None` when nothing holds it.
pub fn busy_reason(
    bus: &PciBus,
    dev_root: &Path,
    proc_root: &Path,
    bdf: Bdf,
    group: Option<u32>,
) -> Option<String> {
    let mut nodes = Vec::new();
    let mut kernel_busy = None;
    if let Some(id) = group {
        for name in [id.to_string(), format!("noiommu-{id}")] {
            let node = dev_root.join("vfio").join(name);
            if group_open_elsewhere(&node) {
                kernel_busy = Some(node.clone());
            }
            nodes.push(node);
        }
    }
    if let Some(cdev) = bus.vfio_cdev(bdf) {
        nodes.push(dev_root.join("vfio/devices").join(cdev));
    }
    let holders = holders_of(proc_root, &nodes);
    let mut why: Vec<String> = holders
        .iter()
        .map(|h| format!("pid {} ({}) holds {}", h.pid, h.comm, h.node.display()))
        .collect();
    match kernel_busy {
        Some(node) => why.push(format!(
            "the kernel answers EBUSY to opening {}",
            node.display()
        )),
        None if why.is_empty() => return None,
        None => {}
    }
    let what = group.map_or_else(
        || "its vfio device".to_owned(),
        |g| format!("IOMMU group {g}"),
    );
    Some(format!(
        "{bdf}: {what} is open in another process ({})",
        why.join("; ")
    ))
}

/// Opens a group node to see whether the kernel says it is open elsewhere (`EBUSY`). Only a
/// character device is opened, never through a symlink; the fd is closed at once.
fn group_open_elsewhere(node: &Path) -> bool {
    let Ok(anchor) = rfs::open(
        node,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let is_char = rfs::fstat(anchor.as_fd())
        .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::CharacterDevice);
    if !is_char {
        return false;
    }
    matches!(
        rfs::open(
            node,
            OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ),
        Err(Errno::BUSY)
    )
}

/// The processes with an fd on any of `nodes` (by the fd links' targets), in pid order.
pub fn holders_of(proc_root: &Path, nodes: &[PathBuf]) -> Vec<Holder> {
    if nodes.is_empty() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    pids.sort_unstable();
    let mut out = Vec::new();
    for pid in pids {
        let dir = proc_root.join(pid.to_string());
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue; // gone, or not ours to read
        };
        let held: Vec<&PathBuf> = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|target| nodes.iter().find(|n| **n == target))
            .collect();
        if let Some(node) = held.first() {
            let comm = read_file_capped(&dir.join("comm"), 256)
                .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                .unwrap_or_default();
            out.push(Holder {
                pid,
                comm: if comm.is_empty() {
                    "?".to_owned()
                } else {
                    comm
                },
                node: (*node).clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn holders_are_found_by_their_fd_links() {
        let dir = std::env::temp_dir().join(format!("kv-holders-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let proc_root = dir.join("proc");
        for (pid, comm, target) in [
            ("4242", "qemu-system-x86", "/dev/vfio/12"),
            ("17", "bash", "/dev/null"),
        ] {
            fs::create_dir_all(proc_root.join(pid).join("fd")).expect("mkdir");
            fs::write(proc_root.join(pid).join("comm"), format!("{comm}\n")).expect("comm");
            symlink(target, proc_root.join(pid).join("fd/3")).expect("link");
        }
        fs::create_dir_all(proc_root.join("self")).expect("not a pid");
        let held = holders_of(&proc_root, &[PathBuf::from("/dev/vfio/12")]);
        assert_eq!(
            held,
            [Holder {
                pid: 4242,
                comm: "qemu-system-x86".to_owned(),
                node: PathBuf::from("/dev/vfio/12"),
            }]
        );
        assert!(holders_of(&proc_root, &[PathBuf::from("/dev/vfio/13")]).is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_regular_file_is_never_opened_as_a_group() {
        assert!(!group_open_elsewhere(Path::new("/etc/hostname")));
        assert!(!group_open_elsewhere(Path::new("/nonexistent/vfio/12")));
    }
}
