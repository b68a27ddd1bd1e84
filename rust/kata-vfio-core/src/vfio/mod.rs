//! VFIO and iommufd from user space: the legacy container/group model and the device cdev
//! with iommufd, as QEMU uses them.
//!
//! * [`abi`]: the kernel structs and ioctl numbers, and [`abi::layout`] to check them;
//! * [`legacy`]: [`Container`] (`/dev/vfio/vfio`) and [`Group`] (`/dev/vfio/<N>`);
//! * [`iommufd`]: [`IommuFd`] (`/dev/iommu`) and the cdev (`/dev/vfio/devices/vfioN`);
//! * [`device`]: [`Device`], the device fd either path gives (info, regions, IRQs, reset);
//! * [`dma`]: [`DmaBuffer`], memory a device may DMA into.
//!
//! Every handle owns its fd and closes it on drop. Failures are [`Error::Vfio`] with the
//! errno, the node's path and a hint for the usual causes (group open elsewhere, not viable,
//! permissions, memlock).

pub mod abi;
pub mod device;
pub mod dma;
pub mod iommufd;
pub mod legacy;
mod sys;

use std::io;
use std::path::{Path, PathBuf};

pub use device::{
    Device, DeviceInfo, HotResetDevice, HotResetInfo, IrqInfo, RegionCap, RegionInfo,
};
pub use dma::DmaBuffer;
pub use iommufd::{IommuFd, IovaRanges};
pub use legacy::{Container, Group, GroupStatus, IommuInfo};

use crate::error::{Error, Remedy};

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const ENXIO: i32 = 6;
const ENOMEM: i32 = 12;
const EACCES: i32 = 13;
const EFAULT: i32 = 14;
const EBUSY: i32 = 16;
const ENODEV: i32 = 19;
const EINVAL: i32 = 22;
const ENOSPC: i32 = 28;
const EMSGSIZE: i32 = 90;
const ENOTTY: i32 = 25;

/// The hint for a failed VFIO operation, by operation and errno.
fn hint_for(op: &str, errno: Option<i32>) -> Option<String> {
    let text = match (op, errno?) {
        ("open group" | "VFIO_GROUP_SET_CONTAINER", EBUSY) => {
            "the group is already open in another process (a running QEMU or another tool): \
             a group node can be open only once; stop that process first"
        }
        ("VFIO_GROUP_SET_CONTAINER", EPERM) => {
            "the group is not viable: every endpoint in it must be bound to vfio-pci (or be \
             unbound), so bind the whole group"
        }
        ("open group" | "open container" | "open cdev" | "open iommufd", EPERM | EACCES) => {
            "permission denied: run as root, or give this user the node (udev rule or chown) \
             and allow it in the device cgroup (/dev/vfio/vfio, /dev/vfio/<group>, /dev/iommu)"
        }
        ("open group", ENOENT) => {
            "no such group node: the group's devices are not bound to vfio-pci, or the IOMMU \
             is off"
        }
        ("open container", ENOENT) => "no /dev/vfio/vfio: load the vfio module (modprobe vfio-pci)",
        ("open iommufd", ENOENT) => {
            "no /dev/iommu: the kernel lacks CONFIG_IOMMUFD (Linux 6.2+); use the legacy \
             container and group instead"
        }
        ("open cdev", ENOENT | ENXIO | ENODEV) => {
            "no such vfio device node: bind the device to vfio-pci on a kernel with \
             CONFIG_VFIO_DEVICE_CDEV (6.6+), or use the legacy group"
        }
        ("VFIO_IOMMU_MAP_DMA" | "IOMMU_IOAS_MAP", ENOMEM) => {
            "pinning the memory exceeded RLIMIT_MEMLOCK: raise it (ulimit -l, LimitMEMLOCK=) \
             to at least the VM's memory, or run with CAP_IPC_LOCK"
        }
        ("IOMMU_IOAS_MAP", EFAULT) => {
            "the memory could not be pinned (PFNMAP/MMIO pages cannot be mapped on this kernel)"
        }
        ("VFIO_SET_IOMMU", EINVAL) => {
            "the IOMMU type is not supported, or no group is attached to the container yet"
        }
        ("VFIO_SET_IOMMU", EPERM) => {
            "the no-IOMMU type needs CAP_SYS_RAWIO and vfio's enable_unsafe_noiommu_mode"
        }
        ("VFIO_GROUP_GET_DEVICE_FD", EINVAL | ENODEV) => {
            "the device is not in this group or not bound to a vfio driver; a VF whose PF is \
             on vfio-pci also needs its vf_token"
        }
        ("VFIO_GROUP_GET_DEVICE_FD", EPERM) => {
            "the group is not viable or has no container with an IOMMU set yet"
        }
        ("VFIO_DEVICE_BIND_IOMMUFD", EBUSY | EINVAL) => {
            "the device is already in use (open through its group, or bound elsewhere), or \
             another device of its group is still on a host driver"
        }
        ("VFIO_DEVICE_BIND_IOMMUFD", EPERM) => {
            "a VF whose PF is on vfio-pci needs its vf_token, or the group is not viable"
        }
        ("VFIO_DEVICE_RESET", _) => "the device cannot be reset now (no reset method, or in use)",
        ("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", ENODEV) => {
            "the device supports no bus or slot reset"
        }
        (_, ENOTTY) => "the fd does not support this ioctl (wrong node kind or old kernel)",
        (_, EBUSY) => "the device or group is in use by another process",
        (_, EPERM | EACCES) => "permission denied: run as root and check the device cgroup",
        _ => return None,
    };
    Some(text.to_owned())
}

/// Wraps an OS error from a VFIO operation with its op, path and hint.
pub(crate) fn vfio_error(op: &'static str, path: &Path, source: io::Error) -> Error {
    let errno = source.raw_os_error();
    let hint = hint_for(op, errno);
    // A group node that is missing, or a group the kernel finds not viable: bind it whole.
    let remedies = match (op, errno) {
        ("open group", Some(ENOENT)) | ("VFIO_GROUP_SET_CONTAINER", Some(EPERM)) => {
            vec![Remedy::BindGroup]
        }
        _ => Vec::new(),
    };
    Error::Vfio {
        op,
        path: path.to_path_buf(),
        source,
        hint,
        remedies,
    }
}

/// Opens a VFIO node read-write, close-on-exec.
pub(crate) fn open_node(
    op: &'static str,
    path: PathBuf,
) -> crate::Result<(std::os::fd::OwnedFd, PathBuf)> {
    use rustix::fs::{Mode, OFlags};
    match rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => Ok((fd, path)),
        Err(errno) => Err(vfio_error(op, &path, errno.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_usual_causes() {
        let busy = vfio_error(
            "open group",
            Path::new("/dev/vfio/12"),
            io::Error::from_raw_os_error(EBUSY),
        );
        assert!(busy.hint().unwrap_or_default().contains("already open"));
        assert_eq!(busy.errno(), Some(EBUSY));
        assert!(busy.to_string().contains("/dev/vfio/12"), "{busy}");
        let viable = vfio_error(
            "VFIO_GROUP_SET_CONTAINER",
            Path::new("/dev/vfio/12"),
            io::Error::from_raw_os_error(EPERM),
        );
        assert!(viable.hint().unwrap_or_default().contains("not viable"));
        let memlock = vfio_error(
            "VFIO_IOMMU_MAP_DMA",
            Path::new("/dev/vfio/vfio"),
            io::Error::from_raw_os_error(ENOMEM),
        );
        assert!(memlock
            .hint()
            .unwrap_or_default()
            .contains("RLIMIT_MEMLOCK"));
        assert!(hint_for("anything", Some(EMSGSIZE)).is_none());
        assert!(hint_for("anything", Some(ENOSPC)).is_none());
    }
}
