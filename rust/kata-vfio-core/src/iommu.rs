//! IOMMU groups and the kernel's viability rule.
//!
//! The kernel lets VFIO use a group only when every member is unbound or bound to a driver
//! that does no kernel DMA on it (vfio-pci and its variants, pci-stub, pcieport). Bridges
//! and host bridges in a group are fine as they are and are never passed to a guest; every
//! other function (NVSwitch-like 0x0680 included) is an endpoint that must go to the guest
//! together with the rest of its group.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::bdf::Bdf;
use crate::pci::{is_dma_safe_driver, is_vfio_driver, PciDevice};

/// Why a member blocks its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// An endpoint on a host driver that does DMA: the group is not viable.
    HostDriver,
    /// A bridge on a driver other than pcieport: the group is not viable.
    BridgeDriver,
    /// An endpoint without a driver: viable, but QEMU needs it on vfio-pci.
    Unbound,
    /// An endpoint on pci-stub: viable, but QEMU needs it on vfio-pci.
    Stub,
}

/// A member that keeps its group from being assignable. The texts (reason, fix command,
/// manual sysfs writes) are built when asked for, not for every blocker of every scan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Blocker {
    pub bdf: Bdf,
    pub driver: Option<String>,
    pub kind: BlockKind,
    pub group: u32,
    /// The group has several endpoints, so the fix binds the whole group.
    pub several_endpoints: bool,
    /// The sysfs root the manual writes are spelled against.
    pub sysfs_root: Arc<str>,
}

impl Blocker {
    /// True when this member alone makes the kernel refuse the group (not viable); false
    /// when the group is viable but the member is not ready for QEMU (not on vfio).
    pub fn breaks_viability(&self) -> bool {
        matches!(self.kind, BlockKind::HostDriver | BlockKind::BridgeDriver)
    }

    fn driver_name(&self) -> &str {
        self.driver.as_deref().unwrap_or("")
    }

    /// One sentence on why.
    pub fn reason(&self) -> String {
        match self.kind {
            BlockKind::HostDriver => format!(
                "endpoint bound to host driver {}, which does DMA, so the kernel refuses the whole group (not viable)",
                self.driver_name()
            ),
            BlockKind::BridgeDriver => format!(
                "bridge bound to {}, a driver that uses DMA, so the kernel will not make the group viable",
                self.driver_name()
            ),
            BlockKind::Unbound => "endpoint has no driver: the group is viable, but QEMU can only open it through vfio-pci".to_owned(),
            BlockKind::Stub => "endpoint is on pci-stub: the group is viable, but QEMU can only open it through vfio-pci".to_owned(),
        }
    }

    /// The one command that fixes it (`kata-vfio bind --group 12`).
    pub fn fix(&self) -> String {
        match self.kind {
            BlockKind::BridgeDriver => format!(
                "unbind it from {} (bridges are never bound to vfio-pci)",
                self.driver_name()
            ),
            _ if self.several_endpoints => format!("kata-vfio bind --group {}", self.group),
            _ => format!("kata-vfio bind {}", self.bdf),
        }
    }

    /// The same fix as the sysfs writes a user would type, in order.
    pub fn manual(&self) -> Vec<String> {
        let root = self.sysfs_root.trim_end_matches('/');
        let bdf = self.bdf;
        let unbind = |driver: &str| format!("echo {bdf} > {root}/bus/pci/drivers/{driver}/unbind");
        if self.kind == BlockKind::BridgeDriver {
            return vec![unbind(self.driver_name())];
        }
        let mut steps = vec![format!(
            "echo vfio-pci > {root}/bus/pci/devices/{bdf}/driver_override"
        )];
        if let Some(driver) = &self.driver {
            steps.push(unbind(driver));
        }
        steps.push(format!("echo {bdf} > {root}/bus/pci/drivers_probe"));
        steps
    }
}

/// An IOMMU group with its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IommuGroup {
    pub id: u32,
    pub devices: Vec<Bdf>,
    pub endpoints: Vec<Bdf>,
    pub viable: bool,
    pub assignable: bool,
    pub blockers: Vec<Blocker>,
}

/// Builds the groups from their members (`group id -> member addresses`) and the scanned
/// devices. Members the scan did not see (vanished, not PCI) are listed but not judged.
pub fn build_groups(
    members: BTreeMap<u32, Vec<Bdf>>,
    devices: &[PciDevice],
    sysfs_root: &str,
) -> Vec<IommuGroup> {
    let by_bdf: HashMap<Bdf, &PciDevice> = devices.iter().map(|d| (d.bdf, d)).collect();
    let root: Arc<str> = Arc::from(sysfs_root);
    members
        .into_iter()
        .map(|(id, mut bdfs)| {
            bdfs.sort_unstable();
            bdfs.dedup();
            let known: Vec<&PciDevice> =
                bdfs.iter().filter_map(|b| by_bdf.get(b).copied()).collect();
            judge_group(id, bdfs, &known, &root)
        })
        .collect()
}

/// Groups taken from the devices' own `iommu_group` numbers (when the listing is missing).
pub fn members_from_devices(devices: &[PciDevice]) -> BTreeMap<u32, Vec<Bdf>> {
    let mut members: BTreeMap<u32, Vec<Bdf>> = BTreeMap::new();
    for device in devices {
        if let Some(group) = device.iommu_group {
            members.entry(group).or_default().push(device.bdf);
        }
    }
    members
}

fn judge_group(
    id: u32,
    devices: Vec<Bdf>,
    known: &[&PciDevice],
    sysfs_root: &Arc<str>,
) -> IommuGroup {
    let endpoints: Vec<Bdf> = known
        .iter()
        .filter(|d| d.is_endpoint())
        .map(|d| d.bdf)
        .collect();
    let several_endpoints = endpoints.len() > 1;
    let blockers: Vec<Blocker> = known
        .iter()
        .filter_map(|d| block_kind(d).map(|kind| (d, kind)))
        .map(|(d, kind)| Blocker {
            bdf: d.bdf,
            driver: d.driver.clone(),
            kind,
            group: id,
            several_endpoints,
            sysfs_root: Arc::clone(sysfs_root),
        })
        .collect();
    let viable = !blockers.iter().any(Blocker::breaks_viability);
    let assignable = viable && !endpoints.is_empty() && blockers.is_empty();
    IommuGroup {
        id,
        devices,
        endpoints,
        viable,
        assignable,
        blockers,
    }
}

/// The kernel's rule for one member: `None` when it leaves the group usable as it is.
fn block_kind(device: &PciDevice) -> Option<BlockKind> {
    match device.driver.as_deref() {
        Some(name) if is_vfio_driver(name) => None,
        // Bridges stay as they are: unbound or on a driver without kernel DMA (pcieport).
        None if !device.is_endpoint() => None,
        Some(name) if !device.is_endpoint() && is_dma_safe_driver(name) => None,
        Some(_) if !device.is_endpoint() => Some(BlockKind::BridgeDriver),
        None => Some(BlockKind::Unbound),
        Some("pci-stub") => Some(BlockKind::Stub),
        Some(_) => Some(BlockKind::HostDriver),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(bdf: &str, class_code: u32, driver: Option<&str>) -> PciDevice {
        PciDevice {
            bdf: Bdf::parse(bdf).unwrap(),
            vendor: 0x10de,
            device: 0x2330,
            subsystem_vendor: None,
            subsystem_device: None,
            class_code,
            revision: None,
            driver: driver.map(str::to_owned),
            driver_override: None,
            iommu_group: Some(1),
            numa_node: None,
            physfn: None,
            virtfns: vec![],
            sriov_totalvfs: None,
            sriov_numvfs: None,
            upstream: vec![],
            is_pcie: true,
            vfio_cdev: None,
            sysfs_path: String::new(),
            details: None,
        }
    }

    fn group_of(devices: &[PciDevice]) -> IommuGroup {
        let members = BTreeMap::from([(1, devices.iter().map(|d| d.bdf).collect())]);
        build_groups(members, devices, "/sys").remove(0)
    }

    #[test]
    fn gpu_with_audio_on_host_driver_is_not_viable() {
        let group = group_of(&[
            dev("01:00.0", 0x030200, Some("vfio-pci")),
            dev("01:00.1", 0x040300, Some("snd_hda_intel")),
        ]);
        assert!(!group.viable);
        assert!(!group.assignable);
        assert_eq!(group.endpoints.len(), 2);
        assert_eq!(group.blockers.len(), 1);
        let blocker = &group.blockers[0];
        assert_eq!(blocker.bdf.to_string(), "0000:01:00.1");
        assert_eq!(blocker.fix(), "kata-vfio bind --group 1");
        assert_eq!(
            blocker.manual(),
            [
                "echo vfio-pci > /sys/bus/pci/devices/0000:01:00.1/driver_override",
                "echo 0000:01:00.1 > /sys/bus/pci/drivers/snd_hda_intel/unbind",
                "echo 0000:01:00.1 > /sys/bus/pci/drivers_probe",
            ]
        );
    }

    #[test]
    fn bridges_stay_and_do_not_block() {
        let group = group_of(&[
            dev("00:01.0", 0x060400, Some("pcieport")),
            dev("02:00.0", 0x060400, None),
            dev("03:00.0", 0x030200, Some("vfio-pci")),
            dev("00:00.0", 0x060000, None),
        ]);
        assert!(group.viable && group.assignable, "{group:?}");
        assert_eq!(group.endpoints, vec![Bdf::parse("03:00.0").unwrap()]);
        assert_eq!(group.devices.first().unwrap().to_string(), "0000:00:00.0");
    }

    #[test]
    fn nvswitch_is_an_endpoint() {
        let group = group_of(&[dev("05:00.0", 0x068000, Some("nvidia-nvswitch"))]);
        assert_eq!(group.endpoints.len(), 1);
        assert!(!group.viable);
    }

    #[test]
    fn unbound_and_stub_are_viable_but_not_ready() {
        let group = group_of(&[
            dev("01:00.0", 0x020000, None),
            dev("01:00.1", 0x020000, Some("pci-stub")),
        ]);
        assert!(group.viable);
        assert!(!group.assignable);
        assert_eq!(group.blockers.len(), 2);
        assert!(group.blockers.iter().all(|b| !b.breaks_viability()));
    }

    #[test]
    fn variant_drivers_count_as_vfio() {
        let group = group_of(&[dev("01:00.0", 0x030200, Some("nvgrace-gpu-vfio-pci"))]);
        assert!(group.assignable);
    }

    #[test]
    fn bridge_on_other_driver_blocks() {
        let group = group_of(&[
            dev("06:00.0", 0x060400, Some("shpchp")),
            dev("07:01.0", 0x020000, Some("vfio-pci")),
        ]);
        assert!(!group.viable);
        assert_eq!(
            group.blockers[0].manual(),
            ["echo 0000:06:00.0 > /sys/bus/pci/drivers/shpchp/unbind"]
        );
    }

    #[test]
    fn bridge_only_group_is_not_assignable() {
        let group = group_of(&[dev("00:01.0", 0x060400, Some("pcieport"))]);
        assert!(group.viable);
        assert!(!group.assignable);
        assert!(group.blockers.is_empty());
    }
}
