//! Refusals: a device the host is using must not be taken away unless forced. A device
//! is in use when it backs a mounted filesystem or swap (block devices under it, and the
//! device-mapper/md devices stacked on them), has a network interface that is up with an
//! address or a route, or is the boot VGA device or drives the framebuffer console. A
//! platform function (host/ISA/LPC bridge, SMBus, the IOMMU, interrupt controllers, timers,
//! memory controllers) is refused for what it is, whatever uses it ([`platform_reason`]).
//!
//! `bind` asks before taking a device from its host driver, and `restore`/`unbind` ask
//! before unbinding anything but a vfio driver (a journal entry must not make them take a
//! disk that backs `/`). Sysfs is read through the bus's root (never outside it); procfs
//! files are read without blocking and with a size cap.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::sysfs::{BusPaths, DeviceFacts, PciBus};
use crate::bdf::{bdfs_in_path, Bdf};
use crate::beneath::RootDir;
use crate::error::Result;
use crate::pci::PlatformFunction;
use crate::sysfs::io::resolve_relative;

/// Interface flag `IFF_UP` from `<linux/if.h>`.
const IFF_UP: u32 = 0x1;
/// The most of a procfs table read (a host with tens of thousands of mounts stays under it).
const PROC_MAX: usize = 64 << 20;

/// Why the host is using `bdf`; empty when it is free to take.
pub fn in_use_reasons(bus: &PciBus, proc_root: &Path, bdf: Bdf) -> Result<Vec<String>> {
    let mut reasons = Vec::new();
    let dir = BusPaths::device_rel(bdf);
    if bus
        .read_attr(&dir.join("boot_vga"))?
        .is_some_and(|v| v == "1")
    {
        reasons.push("it is the boot VGA device (the host console may be on it)".to_owned());
    }
    for fb in bus
        .list(&dir.join("graphics"))
        .into_iter()
        .filter(|n| n.starts_with("fb"))
    {
        if framebuffer_console_bound(bus) {
            reasons.push(format!("it drives the framebuffer console ({fb})"));
        }
    }
    reasons.extend(block_reasons(bus, proc_root, bdf)?);
    for interface in bus.list(&dir.join("net")) {
        let net = dir.join("net").join(&interface);
        if let Some(why) = interface_busy(bus, &net, proc_root, &interface)? {
            reasons.push(format!("network interface {interface} is up with {why}"));
        }
    }
    Ok(reasons)
}

/// A procfs file as text; empty when missing or unreadable (the check then finds nothing
/// there, as on a host without that table).
fn read_proc(proc_root: &Path, name: &str) -> String {
    RootDir::open(proc_root)
        .and_then(|proc| proc.read_capped(name, PROC_MAX))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Why taking this function would take something the host platform needs: by its class, or
/// as an unclaimed system peripheral on a root bus (the boot VGA is judged by
/// [`in_use_reasons`], which reads `boot_vga`).
pub fn platform_reason(bus: &PciBus, facts: &DeviceFacts) -> Option<String> {
    let on_root_bus = || {
        bus.device_sysfs_path(facts.bdf)
            .is_some_and(|path| bdfs_in_path(&path).len() <= 1)
    };
    let class = facts.class_code;
    PlatformFunction::of(class, false)
        .or_else(|| {
            PlatformFunction::root_complex(class, on_root_bus(), facts.state.driver.is_some())
        })
        .map(|function| {
            format!(
                "it is {} ({}); binding it to vfio takes it from the host",
                function.description(),
                function.as_str()
            )
        })
}

/// A framebuffer console (fbcon) is bound to a virtual terminal.
fn framebuffer_console_bound(bus: &PciBus) -> bool {
    let vtcon = Path::new("class/vtconsole");
    bus.list(vtcon).iter().any(|con| {
        let name = bus
            .read_attr(&vtcon.join(con).join("name"))
            .ok()
            .flatten()
            .unwrap_or_default();
        let bound = bus
            .read_attr(&vtcon.join(con).join("bind"))
            .ok()
            .flatten()
            .unwrap_or_default();
        name.contains("frame buffer") && bound == "1"
    })
}

/// Mounted and swap block devices under `bdf`, with what uses them.
fn block_reasons(bus: &PciBus, proc_root: &Path, bdf: Bdf) -> Result<Vec<String>> {
    let Some(dev_path) = bus.device_sysfs_path(bdf) else {
        return Ok(Vec::new());
    };
    let class_block = PathBuf::from("class/block");
    let prefix = format!("{dev_path}/");
    let mut stack: Vec<String> = bus
        .list(&class_block)
        .into_iter()
        .filter(|name| {
            bus.root_dir()
                .read_link(class_block.join(name))
                .is_ok_and(|t| {
                    resolve_relative("class/block", &t).is_some_and(|p| p.starts_with(&prefix))
                })
        })
        .collect();
    // Follow holders (dm, md, bcache) so LVM or RAID on the disk counts too.
    let mut seen = BTreeSet::new();
    while let Some(name) = stack.pop() {
        if seen.len() > 4096 || !seen.insert(name.clone()) {
            continue;
        }
        stack.extend(bus.list(&class_block.join(&name).join("holders")));
    }
    let mounts = mounted_devices(proc_root);
    let swaps = swap_devices(proc_root);
    let mut reasons = Vec::new();
    for name in &seen {
        let devnum = bus.read_attr(&class_block.join(name).join("dev"))?;
        if let Some(points) = devnum.as_ref().and_then(|d| mounts.get(d)) {
            reasons.push(format!(
                "block device {name} is mounted at {}",
                points.join(", ")
            ));
        }
        let dm_name = bus.read_attr(&class_block.join(name).join("dm/name"))?;
        if swaps.contains(name) || dm_name.is_some_and(|n| swaps.contains(&n)) {
            reasons.push(format!("block device {name} is in use as swap"));
        }
    }
    Ok(reasons)
}

/// `MAJ:MIN` -> mount points, from `<proc>/self/mountinfo`.
fn mounted_devices(proc_root: &Path) -> HashMap<String, Vec<String>> {
    let text = read_proc(proc_root, "self/mountinfo");
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if let (Some(devnum), Some(point)) = (fields.get(2), fields.get(4)) {
            out.entry((*devnum).to_owned())
                .or_default()
                .push(unescape_mount(point));
        }
    }
    out
}

/// Mount points escape space, tab, newline and backslash as octal (`\040`).
fn unescape_mount(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Names (`nvme0n1p3`, `dm-1`, or a device-mapper name) of active swap devices.
fn swap_devices(proc_root: &Path) -> BTreeSet<String> {
    let text = read_proc(proc_root, "swaps");
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|path| path.rsplit('/').next())
        .map(ToOwned::to_owned)
        .collect()
}

/// Whether an interface is up with an IPv4 route, a non-link-local IPv6 address or an IPv6
/// route other than the automatic link-local and multicast ones; says which.
fn interface_busy(
    bus: &PciBus,
    dir: &Path,
    proc_root: &Path,
    name: &str,
) -> Result<Option<String>> {
    let flags = bus
        .read_attr(&dir.join("flags"))?
        .and_then(|f| super::sysfs::parse_hex(&f))
        .unwrap_or(0);
    let operstate = bus.read_attr(&dir.join("operstate"))?.unwrap_or_default();
    if flags & IFF_UP == 0 && operstate != "up" {
        return Ok(None);
    }
    let route = read_proc(proc_root, "net/route");
    if route
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().next() == Some(name))
    {
        return Ok(Some("an IPv4 route".to_owned()));
    }
    let inet6 = read_proc(proc_root, "net/if_inet6");
    for line in inet6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // address, ifindex, prefix length, scope, flags, name; scope 0x20 is link-local.
        if f.len() == 6 && f[5] == name && f[3] != "20" {
            return Ok(Some("an IPv6 address".to_owned()));
        }
    }
    let route6 = read_proc(proc_root, "net/ipv6_route");
    for line in route6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 10 && f[9] == name && !f[0].starts_with("fe80") && !f[0].starts_with("ff") {
            return Ok(Some("an IPv6 route".to_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bind::DriverState;

    fn facts(class_code: u32) -> DeviceFacts {
        DeviceFacts {
            bdf: Bdf::parse("00:1f.0").unwrap(),
            class_code,
            group: Some(13),
            modalias: None,
            state: DriverState::default(),
        }
    }

    #[test]
    fn platform_functions_are_refused_with_the_reason() {
        let bus = PciBus::open(std::env::temp_dir()).unwrap();
        let isa = platform_reason(&bus, &facts(0x060100)).unwrap();
        assert!(isa.starts_with("it is an ISA/LPC bridge"), "{isa}");
        assert!(isa.contains("(isa-bridge)"));
        assert!(platform_reason(&bus, &facts(0x0c0500))
            .unwrap()
            .contains("SMBus"));
        assert!(platform_reason(&bus, &facts(0x080600))
            .unwrap()
            .contains("IOMMU"));
        assert_eq!(platform_reason(&bus, &facts(0x030200)), None); // a GPU
        assert_eq!(platform_reason(&bus, &facts(0x020000)), None); // a NIC
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape_mount("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape_mount("/plain"), "/plain");
        assert_eq!(unescape_mount("/odd\\04"), "/odd\\04");
    }
}
