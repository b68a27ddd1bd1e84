//! `/dev` paths of VFIO: which kind of node a path is, and the functions behind it.
//!
//! Group nodes `/dev/vfio/<N>` (or `noiommu-<N>`) stand for every function of IOMMU group N;
//! cdev nodes `/dev/vfio/devices/vfio<M>` for exactly one function; `/dev/vfio/vfio` and
//! `/dev/iommu` are control nodes that pass no device.

use std::collections::BTreeMap;

use crate::bdf::{last_bdf_in_path, Bdf};
use crate::beneath::RootDir;
use crate::sysfs::device::cdev_number;

/// The kind of a device path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DevNodeKind {
    Group,
    NoIommuGroup,
    Cdev,
    Container,
    Iommufd,
    Other,
}

impl DevNodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::NoIommuGroup => "noiommu-group",
            Self::Cdev => "cdev",
            Self::Container => "container",
            Self::Iommufd => "iommufd",
            Self::Other => "other",
        }
    }
}

/// A classified (and possibly resolved) device path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DevNode {
    pub path: String,
    pub kind: DevNodeKind,
    pub group: Option<u32>,
    pub cdev: Option<String>,
    pub bdfs: Vec<Bdf>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
}

impl DevNode {
    pub fn is_vfio_device(&self) -> bool {
        matches!(
            self.kind,
            DevNodeKind::Group | DevNodeKind::NoIommuGroup | DevNodeKind::Cdev
        )
    }

    pub fn is_control(&self) -> bool {
        matches!(self.kind, DevNodeKind::Container | DevNodeKind::Iommufd)
    }
}

/// A decimal number as the kernel prints it (no sign, no leading zeros).
fn parse_kernel_decimal(text: &str) -> Option<u32> {
    if text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

/// Classifies a path by its name only. The path must be spelled exactly as the kernel's
/// devtmpfs names it (`/dev/vfio/12`); anything else, `/dev/vfio/` and `/dev/vfio/vfio/12`
/// included, is `Other`.
pub fn classify(path: &str) -> DevNode {
    let mut node = DevNode {
        path: path.to_owned(),
        kind: DevNodeKind::Other,
        group: None,
        cdev: None,
        bdfs: Vec::new(),
        major: None,
        minor: None,
    };
    if path == "/dev/iommu" {
        node.kind = DevNodeKind::Iommufd;
    } else if let Some(rest) = path.strip_prefix("/dev/vfio/") {
        if rest == "vfio" {
            node.kind = DevNodeKind::Container;
        } else if let Some(name) = rest.strip_prefix("devices/") {
            if cdev_number(name).is_some() {
                node.kind = DevNodeKind::Cdev;
                node.cdev = Some(name.to_owned());
            }
        } else if let Some(number) = rest.strip_prefix("noiommu-").and_then(parse_kernel_decimal) {
            node.kind = DevNodeKind::NoIommuGroup;
            node.group = Some(number);
        } else if let Some(number) = parse_kernel_decimal(rest) {
            node.kind = DevNodeKind::Group;
            node.group = Some(number);
        }
    }
    node
}

/// Linux `dev_t` decoding (glibc's `major()`/`minor()`): 12 bits of major and 20 of minor,
/// split across the word. `rdev >> 8` / `rdev & 0xff` is wrong for minors above 255.
pub fn decode_dev(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (
        u32::try_from(major).unwrap_or(u32::MAX),
        u32::try_from(minor).unwrap_or(u32::MAX),
    )
}

/// Parses a sysfs `dev` attribute (`245:0`).
pub fn parse_dev_attr(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// VFIO nodes the kernel registered, read from sysfs class directories: group nodes from
/// `class/vfio`, cdevs from `class/vfio-dev` (with their function), the two control nodes from
/// `class/misc`. Group members are filled in later from the group table.
pub fn read_registered_nodes(sysfs: &RootDir) -> Vec<DevNode> {
    let mut nodes = Vec::new();
    for name in sysfs.list("class/vfio").unwrap_or_default() {
        let node = classify(&format!("/dev/vfio/{name}"));
        if matches!(node.kind, DevNodeKind::Group | DevNodeKind::NoIommuGroup) {
            nodes.push(node);
        }
    }
    for name in sysfs.list("class/vfio-dev").unwrap_or_default() {
        let mut node = classify(&format!("/dev/vfio/devices/{name}"));
        if node.kind != DevNodeKind::Cdev {
            continue;
        }
        // class/vfio-dev/vfioN -> ../../devices/pci0000:00/.../0000:01:00.0/vfio-dev/vfioN
        if let Some(bdf) = sysfs
            .read_link(format!("class/vfio-dev/{name}"))
            .ok()
            .and_then(|t| last_bdf_in_path(&t))
        {
            node.bdfs = vec![bdf];
        }
        nodes.push(node);
    }
    for (misc, path) in [("vfio", "/dev/vfio/vfio"), ("iommu", "/dev/iommu")] {
        if sysfs.exists(format!("class/misc/{misc}")) {
            nodes.push(classify(path));
        }
    }
    nodes
}

/// The sysfs `dev` attribute (`MAJOR:MINOR`) of a registered node.
fn dev_attribute(node: &DevNode) -> Option<String> {
    let name = node.path.rsplit('/').next()?;
    match node.kind {
        DevNodeKind::Group | DevNodeKind::NoIommuGroup => Some(format!("class/vfio/{name}/dev")),
        DevNodeKind::Cdev => Some(format!("class/vfio-dev/{name}/dev")),
        DevNodeKind::Container => Some("class/misc/vfio/dev".to_owned()),
        DevNodeKind::Iommufd => Some("class/misc/iommu/dev".to_owned()),
        DevNodeKind::Other => None,
    }
}

/// Fills in each node's device numbers from sysfs. Done on demand, not in every scan: it
/// costs an open, a read and a close per node, and most callers never ask.
pub fn fill_numbers(sysfs: &RootDir, nodes: &mut [DevNode]) {
    for node in nodes {
        let numbers = dev_attribute(node)
            .and_then(|attr| sysfs.read_text(&attr).ok())
            .and_then(|text| parse_dev_attr(&text));
        if let Some((major, minor)) = numbers {
            node.major = Some(major);
            node.minor = Some(minor);
        }
    }
}

/// The function behind a character device number, from the `dev/char/MAJOR:MINOR` link
/// (`../../devices/pci0000:00/.../0000:01:00.0/vfio-dev/vfio0`): the last address in it.
pub fn bdf_of_char_device(sysfs: &RootDir, major: u32, minor: u32) -> Option<Bdf> {
    sysfs
        .read_link(format!("dev/char/{major}:{minor}"))
        .ok()
        .and_then(|t| last_bdf_in_path(&t))
}

/// The `/dev` path of a character device number, from `dev/char/M:m/uevent` `DEVNAME=`.
pub fn devname_of_char_device(sysfs: &RootDir, major: u32, minor: u32) -> Option<String> {
    let text = sysfs
        .read_text(format!("dev/char/{major}:{minor}/uevent"))
        .ok()?;
    devname(&text).map(|name| format!("/dev/{name}"))
}

/// `DEVNAME=` of a device's `uevent`, when it is a clean path under `/dev` (no empty, `.` or
/// `..` components).
fn devname(uevent: &str) -> Option<&str> {
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    let clean = !name.is_empty()
        && !name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    clean.then_some(name)
}

/// Whether a device number is a character or a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DevKind {
    Char,
    Block,
}

impl DevKind {
    /// `c` or `b`, as OCI and CDI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Char => "c",
            Self::Block => "b",
        }
    }
}

/// The longest `uevent` of a device node taken as whole (the kernel's are a few lines).
const UEVENT_MAX: usize = 4096;

/// Every device node the kernel names, from `dev/char/M:m/uevent` and `dev/block/M:m/uevent`:
/// `DEVNAME` (relative to `/dev`, as udev names the node) -> kind, major, minor. A copied tree
/// is outside input: an entry counts only when its `uevent` is a regular file under 4 KiB whose
/// `MAJOR` and `MINOR` are the numbers the entry is named by. The first entry wins when two
/// claim a name (character devices first, each kind in numeric order).
pub fn device_numbers(sysfs: &RootDir) -> BTreeMap<String, (DevKind, u32, u32)> {
    let mut out = BTreeMap::new();
    for (kind, folder) in [(DevKind::Char, "dev/char"), (DevKind::Block, "dev/block")] {
        let mut numbers: Vec<(u32, u32)> = sysfs
            .list(folder)
            .unwrap_or_default()
            .iter()
            .filter_map(|name| parse_dev_attr(name))
            .collect();
        numbers.sort_unstable();
        for (major, minor) in numbers {
            let Some(text) = read_uevent(sysfs, &format!("{folder}/{major}:{minor}")) else {
                continue;
            };
            let field = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(parse_kernel_decimal)
            };
            if field("MAJOR=") != Some(major) || field("MINOR=") != Some(minor) {
                continue;
            }
            if let Some(name) = devname(&text) {
                out.entry(name.to_owned()).or_insert((kind, major, minor));
            }
        }
    }
    out
}

/// A node's `uevent`: a regular file, read without blocking, refused past [`UEVENT_MAX`].
fn read_uevent(sysfs: &RootDir, entry: &str) -> Option<String> {
    let bytes = sysfs
        .read_capped(format!("{entry}/uevent"), UEVENT_MAX)
        .ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_like_kata_but_strictly() {
        let kind = |p: &str| classify(p).kind;
        assert_eq!(kind("/dev/vfio/16"), DevNodeKind::Group);
        assert_eq!(classify("/dev/vfio/16").group, Some(16));
        assert_eq!(kind("/dev/vfio/1"), DevNodeKind::Group);
        assert_eq!(kind("/dev/vfio/"), DevNodeKind::Other);
        assert_eq!(kind("/dev/vfio"), DevNodeKind::Other);
        assert_eq!(kind("/dev/vf"), DevNodeKind::Other);
        assert_eq!(kind("/dev"), DevNodeKind::Other);
        assert_eq!(kind("/dev/vfio/vfio"), DevNodeKind::Container);
        assert_eq!(kind("/dev/vfio/vfio/12"), DevNodeKind::Other);
        assert_eq!(kind("/dev/vfio/devices/vfio99"), DevNodeKind::Cdev);
        assert_eq!(
            classify("/dev/vfio/devices/vfio99").cdev.as_deref(),
            Some("vfio99")
        );
        assert_eq!(kind("/dev/vfio/devices/vfio"), DevNodeKind::Other);
        assert_eq!(kind("/dev/vfio/devices/vfio01"), DevNodeKind::Other);
        assert_eq!(kind("/dev/vfio/devices/noiommu-vfio0"), DevNodeKind::Cdev);
        assert_eq!(kind("/dev/vfio/devices/noiommu-0"), DevNodeKind::Other);
        assert_eq!(kind("/dev/vfio/noiommu-3"), DevNodeKind::NoIommuGroup);
        assert_eq!(kind("/dev/iommu"), DevNodeKind::Iommufd);
        assert_eq!(kind("/dev/vfio/012"), DevNodeKind::Other);
        assert_eq!(kind("/dev/vfio/invalid"), DevNodeKind::Other);
        assert_eq!(kind("/dev/other/42"), DevNodeKind::Other);
        assert_eq!(kind("/dev/vfio/../vfio/1"), DevNodeKind::Other);
    }

    #[test]
    fn decodes_large_minors() {
        // makedev(511, 300): minor above 255 and major above 255.
        let (major, minor): (u64, u64) = (0x1ff, 0x12c);
        let rdev = ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & !0xff) << 12);
        assert_eq!(decode_dev(rdev), (511, 300));
        assert_eq!(decode_dev((245 << 8) | 3), (245, 3));
    }

    #[test]
    fn dev_attribute() {
        assert_eq!(parse_dev_attr("245:0\n"), Some((245, 0)));
        assert_eq!(parse_dev_attr("x"), None);
    }
}
