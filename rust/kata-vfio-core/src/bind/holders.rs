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

use rustix::fs::{FileType, OFlags};
use rustix::io::Errno;

use super::sysfs::PciBus;
use crate::bdf::Bdf;
use crate::beneath::{readlink_at, RootDir};

/// A process holding a VFIO node open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command name (`<proc>/<pid>/comm`).
    pub comm: String,
    pub node: PathBuf,
}

/// Why `bdf` (on a vfio driver) cannot be unbound now; `None` when nothing holds it. The
/// nodes are looked up beneath the dev root and the holders beneath the proc root.
pub fn busy_reason(
    bus: &PciBus,
    dev_root: &Path,
    proc_root: &Path,
    bdf: Bdf,
    group: Option<u32>,
) -> Option<String> {
    let dev = RootDir::open(dev_root).ok();
    let mut nodes = Vec::new();
    let mut kernel_busy = None;
    if let Some(id) = group {
        for name in [id.to_string(), format!("noiommu-{id}")] {
            let rel = Path::new("vfio").join(name);
            if dev.as_ref().is_some_and(|d| group_open_elsewhere(d, &rel)) {
                kernel_busy = Some(dev_root.join(&rel));
            }
            nodes.push(dev_root.join(rel));
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
/// character device is opened, never through a symlink, never outside the dev root; the fd
/// is closed at once.
fn group_open_elsewhere(dev: &RootDir, rel: &Path) -> bool {
    let is_char = dev
        .lstat(rel)
        .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::CharacterDevice);
    if !is_char {
        return false;
    }
    dev.open_file(rel, OFlags::RDWR | OFlags::NONBLOCK | OFlags::NOCTTY)
        .is_err_and(|e| e.raw_os_error() == Some(Errno::BUSY.raw_os_error()))
}

/// The processes with an fd on any of `nodes` (by the fd links' targets), in pid order.
pub fn holders_of(proc_root: &Path, nodes: &[PathBuf]) -> Vec<Holder> {
    if nodes.is_empty() {
        return Vec::new();
    }
    let Ok(proc) = RootDir::open(proc_root) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = proc
        .list("")
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    pids.sort_unstable();
    let mut out = Vec::new();
    for pid in pids {
        let fd_dir = format!("{pid}/fd");
        let (Ok(fds), Ok(anchor)) = (proc.list(&fd_dir), proc.open_dir(&fd_dir)) else {
            continue; // gone, or not ours to read
        };
        let held = fds
            .iter()
            .filter_map(|fd| readlink_at(anchor.as_fd(), fd).ok())
            .find_map(|target| nodes.iter().find(|n| n.as_os_str() == target.as_str()));
        if let Some(node) = held {
            let comm = proc
                .read_capped(format!("{pid}/comm"), 256)
                .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                .unwrap_or_default();
            out.push(Holder {
                pid,
                comm: if comm.is_empty() {
                    "?".to_owned()
                } else {
                    comm
                },
                node: node.clone(),
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
        let etc = RootDir::open(Path::new("/etc")).expect("/etc");
        assert!(!group_open_elsewhere(&etc, Path::new("hostname")));
        assert!(!group_open_elsewhere(&etc, Path::new("vfio/12")));
        // Never outside the dev root, whatever a link in it says.
        assert!(!group_open_elsewhere(&etc, Path::new("../dev/null")));
    }
}
