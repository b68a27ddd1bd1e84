//! The immutable snapshot a scan produces, and the lookups the rest of the project needs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustix::fs::FileType;

use crate::bdf::Bdf;
use crate::beneath::RootDir;
use crate::devnode::{self, DevNode, DevNodeKind};
use crate::iommu::IommuGroup;
use crate::pci::PciDevice;
use crate::status::IommuStatus;
use crate::sysfs::problem::ReadProblem;

/// A host's PCI devices (numeric order), IOMMU groups (numeric order), VFIO nodes and status.
#[derive(Debug, Clone)]
pub struct Host {
    pub sysfs_root: PathBuf,
    pub dev_root: PathBuf,
    pub proc_root: Option<PathBuf>,
    /// Shared, so bindings can hand out records without copying them.
    pub devices: Vec<Arc<PciDevice>>,
    /// Functions listed under `bus/pci/devices` that could not be read (numeric order).
    pub unreadable: Vec<ReadProblem>,
    pub groups: Vec<Arc<IommuGroup>>,
    pub iommu: IommuStatus,
    /// VFIO nodes the kernel registered (class/vfio, class/vfio-dev, class/misc), without
    /// their device numbers; [`Host::nodes`] adds those on first use.
    registered: Vec<DevNode>,
    numbered: OnceLock<Vec<DevNode>>,
    pub details: bool,
    device_index: HashMap<Bdf, usize>,
    group_index: HashMap<u32, usize>,
}

impl Host {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        sysfs_root: PathBuf,
        dev_root: PathBuf,
        proc_root: Option<PathBuf>,
        devices: Vec<PciDevice>,
        unreadable: Vec<ReadProblem>,
        groups: Vec<IommuGroup>,
        iommu: IommuStatus,
        mut nodes: Vec<DevNode>,
        details: bool,
    ) -> Self {
        let devices: Vec<Arc<PciDevice>> = devices.into_iter().map(Arc::new).collect();
        let groups: Vec<Arc<IommuGroup>> = groups.into_iter().map(Arc::new).collect();
        let device_index = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.bdf, i))
            .collect();
        let group_index: HashMap<u32, usize> =
            groups.iter().enumerate().map(|(i, g)| (g.id, i)).collect();
        for node in &mut nodes {
            if let Some(group) = node.group.and_then(|g| group_index.get(&g)) {
                node.bdfs.clone_from(&groups[*group].devices);
            }
        }
        nodes.sort_by_key(node_order);
        Self {
            sysfs_root,
            dev_root,
            proc_root,
            devices,
            unreadable,
            groups,
            iommu,
            registered: nodes,
            numbered: OnceLock::new(),
            details,
            device_index,
            group_index,
        }
    }

    /// The registered VFIO nodes with their device numbers (read from sysfs on the first
    /// call), control nodes first, then groups and cdevs in numeric order.
    pub fn nodes(&self) -> &[DevNode] {
        self.numbered.get_or_init(|| {
            let mut nodes = self.registered.clone();
            if let Ok(root) = RootDir::open(&self.sysfs_root) {
                devnode::fill_numbers(&root, &mut nodes);
            }
            nodes
        })
    }

    pub fn device(&self, bdf: Bdf) -> Option<&PciDevice> {
        self.device_index.get(&bdf).map(|i| &*self.devices[*i])
    }

    pub fn group(&self, id: u32) -> Option<&IommuGroup> {
        self.group_index.get(&id).map(|i| &*self.groups[*i])
    }

    pub fn group_of(&self, bdf: Bdf) -> Option<&IommuGroup> {
        self.device(bdf)
            .and_then(|d| d.iommu_group)
            .and_then(|g| self.group(g))
    }

    /// `/dev/vfio/<group>`, or `/dev/vfio/noiommu-<group>` when the kernel registered that.
    pub fn group_node(&self, bdf: Bdf) -> Option<String> {
        let group = self.device(bdf)?.iommu_group?;
        let noiommu = self
            .registered
            .iter()
            .any(|n| n.kind == DevNodeKind::NoIommuGroup && n.group == Some(group));
        Some(if noiommu {
            format!("/dev/vfio/noiommu-{group}")
        } else {
            format!("/dev/vfio/{group}")
        })
    }

    /// `/dev/vfio/devices/vfioN` for a device with a vfio cdev.
    pub fn cdev_node(&self, bdf: Bdf) -> Option<String> {
        self.device(bdf)?
            .vfio_cdev
            .as_ref()
            .map(|name| format!("/dev/vfio/devices/{name}"))
    }

    /// Classifies `path` and fills in the functions and device numbers behind it: from the
    /// snapshot first; for a cdev the kernel did not list, from `stat` of the node under the
    /// dev root and the `dev/char/M:m` link.
    pub fn resolve_devnode(&self, path: &str) -> DevNode {
        let mut node = devnode::classify(path);
        if let Some(known) = self.nodes().iter().find(|n| n.path == node.path) {
            return known.clone();
        }
        match node.kind {
            DevNodeKind::Group | DevNodeKind::NoIommuGroup => {
                if let Some(group) = node.group.and_then(|g| self.group(g)) {
                    node.bdfs.clone_from(&group.devices);
                }
            }
            DevNodeKind::Cdev => {
                if let Some(name) = &node.cdev {
                    if let Some(device) = self
                        .devices
                        .iter()
                        .find(|d| d.vfio_cdev.as_ref() == Some(name))
                    {
                        node.bdfs = vec![device.bdf];
                    } else if let Some((major, minor)) = self.stat_char_device(path) {
                        node.major = Some(major);
                        node.minor = Some(minor);
                        if let Ok(root) = RootDir::open(&self.sysfs_root) {
                            node.bdfs = devnode::bdf_of_char_device(&root, major, minor)
                                .into_iter()
                                .collect();
                        }
                    }
                }
            }
            _ => {}
        }
        node
    }

    /// The registered node with this character device number, or the `/dev` path the kernel
    /// gives it (`dev/char/M:m/uevent` `DEVNAME`), classified and resolved.
    pub fn devnode_by_number(&self, major: u32, minor: u32) -> Option<DevNode> {
        if let Some(node) = self
            .nodes()
            .iter()
            .find(|n| n.major == Some(major) && n.minor == Some(minor))
        {
            return Some(node.clone());
        }
        let root = RootDir::open(&self.sysfs_root).ok()?;
        let path = devnode::devname_of_char_device(&root, major, minor)?;
        let mut node = self.resolve_devnode(&path);
        node.major = Some(major);
        node.minor = Some(minor);
        Some(node)
    }

    /// Major and minor of a character device under the dev root (`/dev/x` -> `<dev_root>/x`,
    /// resolved beneath the dev root; the node itself is not followed).
    fn stat_char_device(&self, path: &str) -> Option<(u32, u32)> {
        let relative = path.strip_prefix("/dev/")?;
        let st = RootDir::open(&self.dev_root)
            .and_then(|dev| dev.lstat(relative))
            .ok()?;
        (FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice)
            .then(|| devnode::decode_dev(st.st_rdev))
    }
}

/// Control nodes first, then groups by number, then cdevs by number.
fn node_order(node: &DevNode) -> (u8, u64, String) {
    let rank = match node.kind {
        DevNodeKind::Container => 0,
        DevNodeKind::Iommufd => 1,
        DevNodeKind::Group | DevNodeKind::NoIommuGroup => 2,
        DevNodeKind::Cdev => 3,
        DevNodeKind::Other => 4,
    };
    let number = node
        .group
        .map(u64::from)
        .or_else(|| {
            node.cdev
                .as_deref()
                .and_then(crate::sysfs::device::cdev_number)
                .map(u64::from)
        })
        .unwrap_or(0);
    (rank, number, node.path.clone())
}
