//! IOMMU groups and the kernel's viability rule.
//!
//! The kernel lets VFIO use a group only when every member is unbound or bound to a driver
//! that does no kernel DMA on it (vfio-pci and its variants, pci-stub, pcieport). Bridges
//! and host bridges in a group are fine as they are and are never passed to a guest; every
//! other function (NVSwitch-like 0x0680 included) is an endpoint that must go to the guest
//! together with the rest of its group.
//!
//! Verdicts are never more optimistic than the kernel: a member the scan could not read makes
//! the group unknown. Blockers carry their fix as data ([`Fix`]), never as UI text; no fix
//! moves a platform function ([`crate::pci::PlatformFunction`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use crate::bdf::Bdf;
use crate::pci::{is_dma_safe_driver, is_vfio_driver, PciDevice, PlatformFunction};
use crate::sysfs::problem::{ReadFailure, ReadProblem};

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
    /// A member the scan could not read (its device directory, identity or driver): the group
    /// may be anything, so it is not assignable.
    Unknown {
        attribute: &'static str,
        failure: ReadFailure,
    },
}

impl BlockKind {
    /// A stable name: `host-driver`, `bridge-driver`, `unbound`, `stub` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HostDriver => "host-driver",
            Self::BridgeDriver => "bridge-driver",
            Self::Unbound => "unbound",
            Self::Stub => "stub",
            Self::Unknown { .. } => "unknown",
        }
    }
}

/// What would make a blocked group assignable, as data (callers spell it as a command).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fix {
    /// Bind every endpoint of the group to vfio.
    BindGroup { group: u32 },
    /// Bind this one function to vfio.
    BindDevice { bdf: Bdf },
    /// Unbind the bridge from its driver (bridges are never bound to vfio-pci).
    UnbindBridge { bdf: Bdf },
    /// No safe fix exists.
    Nothing(NoFix),
}

impl Fix {
    /// A stable name: `bind-group`, `bind-device`, `unbind-bridge` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BindGroup { .. } => "bind-group",
            Self::BindDevice { .. } => "bind-device",
            Self::UnbindBridge { .. } => "unbind-bridge",
            Self::Nothing(_) => "none",
        }
    }
}

/// Why no fix is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoFix {
    /// The fix would take a function the host platform needs.
    PlatformFunction {
        bdf: Bdf,
        function: PlatformFunction,
    },
    /// A member could not be read; nothing can be promised until it can.
    UnknownMember { bdf: Bdf },
}

impl NoFix {
    /// A stable name: `platform-function` or `unknown-member`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformFunction { .. } => "platform-function",
            Self::UnknownMember { .. } => "unknown-member",
        }
    }

    /// The member the reason is about.
    pub fn bdf(self) -> Bdf {
        match self {
            Self::PlatformFunction { bdf, .. } | Self::UnknownMember { bdf } => bdf,
        }
    }
}

/// A member that keeps its group from being assignable, with the fix as data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Blocker {
    pub bdf: Bdf,
    pub driver: Option<String>,
    pub kind: BlockKind,
    pub group: u32,
    pub fix: Fix,
    /// The sysfs root the manual writes are spelled against.
    pub sysfs_root: Arc<str>,
}

impl Blocker {
    /// True when this member alone makes the kernel refuse the group (not viable), or may
    /// (unknown); false when the group is viable but the member is not ready for QEMU.
    pub fn breaks_viability(&self) -> bool {
        matches!(
            self.kind,
            BlockKind::HostDriver | BlockKind::BridgeDriver | BlockKind::Unknown { .. }
        )
    }

    /// The fix as the sysfs writes (path, value) a user would make by hand, in order; none
    /// when there is no safe fix.
    pub fn manual_writes(&self) -> Vec<(PathBuf, String)> {
        let root = PathBuf::from(self.sysfs_root.as_ref());
        let bdf = self.bdf.to_string();
        let unbind = |driver: &str| {
            (
                root.join("bus/pci/drivers").join(driver).join("unbind"),
                bdf.clone(),
            )
        };
        match (self.fix, &self.driver) {
            (Fix::UnbindBridge { .. }, Some(driver)) => vec![unbind(driver)],
            (Fix::Nothing(_) | Fix::UnbindBridge { .. }, _) => Vec::new(),
            (_, driver) => {
                let mut steps = vec![(
                    root.join("bus/pci/devices")
                        .join(&bdf)
                        .join("driver_override"),
                    "vfio-pci".to_owned(),
                )];
                steps.extend(driver.as_deref().map(unbind));
                steps.push((root.join("bus/pci/drivers_probe"), bdf.clone()));
                steps
            }
        }
    }
}

/// The verdict on a group, from the best case down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupVerdict {
    /// Viable, and every endpoint is on a vfio driver.
    Assignable,
    /// Viable, but some endpoint is unbound or on pci-stub.
    NotReady,
    /// The kernel refuses the group.
    NotViable,
    /// A member (or the member list) could not be read.
    Unknown,
    /// Only bridges: nothing to pass.
    NoEndpoints,
}

impl GroupVerdict {
    /// A stable name: `assignable`, `not-ready`, `not-viable`, `unknown`, `no-endpoints`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Assignable => "assignable",
            Self::NotReady => "not-ready",
            Self::NotViable => "not-viable",
            Self::Unknown => "unknown",
            Self::NoEndpoints => "no-endpoints",
        }
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
    pub verdict: GroupVerdict,
    pub blockers: Vec<Blocker>,
    /// `kernel/iommu_groups/N/devices` exists but could not be listed.
    pub listing_failure: Option<ReadFailure>,
    /// Functions the scan could not place in any group (a tree without the group listing and
    /// a function whose `iommu_group` link cannot be read): each may belong to this group.
    pub unplaced: Vec<Bdf>,
}

/// What the groups are judged from.
#[derive(Debug)]
pub struct GroupInputs<'a> {
    /// Group id -> member addresses (the kernel's listing, plus devices whose own link names
    /// the group).
    pub members: BTreeMap<u32, Vec<Bdf>>,
    pub devices: &'a [PciDevice],
    /// Devices present but unreadable.
    pub unreadable: &'a [ReadProblem],
    /// Groups whose member listing could not be read.
    pub listing_failures: &'a BTreeMap<u32, ReadFailure>,
    /// Functions whose group cannot be known (see [`IommuGroup::unplaced`]).
    pub unplaced: &'a [Bdf],
    pub sysfs_root: &'a str,
}

/// Builds the groups. A member the scan could not read (listed by the kernel without a device
/// directory, or unreadable) makes its group unknown, never fine.
pub fn build_groups(inputs: GroupInputs<'_>) -> Vec<IommuGroup> {
    let by_bdf: HashMap<Bdf, &PciDevice> = inputs.devices.iter().map(|d| (d.bdf, d)).collect();
    let unreadable: HashMap<Bdf, &ReadProblem> =
        inputs.unreadable.iter().map(|p| (p.bdf, p)).collect();
    let root: Arc<str> = Arc::from(inputs.sysfs_root);
    inputs
        .members
        .into_iter()
        .map(|(id, mut bdfs)| {
            bdfs.sort_unstable();
            bdfs.dedup();
            let members: Vec<Member<'_>> = bdfs
                .iter()
                .map(|b| match by_bdf.get(b) {
                    Some(device) => Member::Read(device),
                    None => Member::Unread(
                        *b,
                        unreadable
                            .get(b)
                            .map_or(("device", ReadFailure::Missing), |p| {
                                (p.attribute, p.failure)
                            }),
                    ),
                })
                .collect();
            let listing_failure = inputs.listing_failures.get(&id).copied();
            judge_group(
                id,
                bdfs,
                &members,
                (listing_failure, inputs.unplaced),
                &root,
            )
        })
        .collect()
}

/// A group member as the scan saw it.
enum Member<'a> {
    Read(&'a PciDevice),
    /// Listed, but without a readable record: which attribute failed and how.
    Unread(Bdf, (&'static str, ReadFailure)),
}

fn judge_group(
    id: u32,
    devices: Vec<Bdf>,
    members: &[Member<'_>],
    (listing_failure, unplaced): (Option<ReadFailure>, &[Bdf]),
    sysfs_root: &Arc<str>,
) -> IommuGroup {
    let read = || {
        members.iter().filter_map(|m| match m {
            Member::Read(d) => Some(*d),
            Member::Unread(..) => None,
        })
    };
    let endpoints: Vec<Bdf> = read().filter(|d| d.is_endpoint()).map(|d| d.bdf).collect();
    let kinds: Vec<(Bdf, Option<&PciDevice>, BlockKind)> = members
        .iter()
        .filter_map(|m| match m {
            Member::Read(d) => block_kind(d).map(|kind| (d.bdf, Some(*d), kind)),
            Member::Unread(bdf, (attribute, failure)) => Some((
                *bdf,
                None,
                BlockKind::Unknown {
                    attribute,
                    failure: *failure,
                },
            )),
        })
        .collect();
    let unknown_member = kinds
        .iter()
        .find(|(_, _, kind)| matches!(kind, BlockKind::Unknown { .. }))
        .map(|(bdf, _, _)| *bdf)
        .or_else(|| unplaced.first().copied());
    // The first function a whole-group bind would move that the platform needs.
    let platform_moved = read()
        .filter(|d| d.is_endpoint() && !d.is_vfio_bound())
        .find_map(|d| d.platform_function().map(|f| (d.bdf, f)));
    let several_endpoints = endpoints.len() > 1;
    let blockers: Vec<Blocker> = kinds
        .into_iter()
        .map(|(bdf, device, kind)| {
            let own_platform = device.and_then(|d| d.platform_function().map(|f| (bdf, f)));
            let fix = choose_fix(
                id,
                bdf,
                kind,
                unknown_member,
                if several_endpoints {
                    platform_moved
                } else {
                    own_platform
                },
                own_platform,
                several_endpoints,
            );
            Blocker {
                bdf,
                driver: device.and_then(|d| d.driver.clone()),
                kind,
                group: id,
                fix,
                sysfs_root: Arc::clone(sysfs_root),
            }
        })
        .collect();
    let unknown = listing_failure.is_some() || unknown_member.is_some();
    let unplaced = unplaced
        .iter()
        .copied()
        .filter(|b| !devices.contains(b))
        .collect();
    let viable = !unknown && !blockers.iter().any(Blocker::breaks_viability);
    let assignable = viable && !endpoints.is_empty() && blockers.is_empty();
    let verdict = if unknown {
        GroupVerdict::Unknown
    } else if endpoints.is_empty() {
        GroupVerdict::NoEndpoints
    } else if assignable {
        GroupVerdict::Assignable
    } else if viable {
        GroupVerdict::NotReady
    } else {
        GroupVerdict::NotViable
    };
    IommuGroup {
        id,
        devices,
        endpoints,
        viable,
        assignable,
        verdict,
        blockers,
        listing_failure,
        unplaced,
    }
}

/// The fix for one blocker. `moved_platform` is the platform function the bind would take
/// (the group's, for a whole-group bind; the member's own otherwise).
fn choose_fix(
    group: u32,
    bdf: Bdf,
    kind: BlockKind,
    unknown_member: Option<Bdf>,
    moved_platform: Option<(Bdf, PlatformFunction)>,
    own_platform: Option<(Bdf, PlatformFunction)>,
    several_endpoints: bool,
) -> Fix {
    let platform = |(bdf, function)| Fix::Nothing(NoFix::PlatformFunction { bdf, function });
    if let Some(unknown) = unknown_member {
        return Fix::Nothing(NoFix::UnknownMember { bdf: unknown });
    }
    match kind {
        BlockKind::Unknown { .. } => Fix::Nothing(NoFix::UnknownMember { bdf }),
        BlockKind::BridgeDriver => own_platform.map_or(Fix::UnbindBridge { bdf }, platform),
        _ => match moved_platform {
            Some(found) => platform(found),
            None if several_endpoints => Fix::BindGroup { group },
            None => Fix::BindDevice { bdf },
        },
    }
}

/// The kernel's rule for one member: `None` when it leaves the group usable as it is. A
/// driver the scan could not read is unknown, not "no driver".
fn block_kind(device: &PciDevice) -> Option<BlockKind> {
    if let Some(failure) = device.problem("driver") {
        return Some(BlockKind::Unknown {
            attribute: "driver",
            failure,
        });
    }
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
            boot_vga: false,
            sysfs_path: String::new(),
            details: None,
            problems: vec![],
        }
    }

    fn judge(devices: &[PciDevice], listed: &[&str], unreadable: &[ReadProblem]) -> IommuGroup {
        let mut bdfs: Vec<Bdf> = devices.iter().map(|d| d.bdf).collect();
        bdfs.extend(listed.iter().map(|b| Bdf::parse(b).unwrap()));
        build_groups(GroupInputs {
            members: BTreeMap::from([(1, bdfs)]),
            devices,
            unreadable,
            listing_failures: &BTreeMap::new(),
            unplaced: &[],
            sysfs_root: "/sys",
        })
        .remove(0)
    }

    fn group_of(devices: &[PciDevice]) -> IommuGroup {
        judge(devices, &[], &[])
    }

    fn writes(blocker: &Blocker) -> Vec<String> {
        blocker
            .manual_writes()
            .into_iter()
            .map(|(path, value)| format!("{value} > {}", path.display()))
            .collect()
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
        assert_eq!(blocker.fix, Fix::BindGroup { group: 1 });
        assert_eq!(group.verdict, GroupVerdict::NotViable);
        assert_eq!(
            writes(blocker),
            [
                "vfio-pci > /sys/bus/pci/devices/0000:01:00.1/driver_override",
                "0000:01:00.1 > /sys/bus/pci/drivers/snd_hda_intel/unbind",
                "0000:01:00.1 > /sys/bus/pci/drivers_probe",
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
            group.blockers[0].fix,
            Fix::UnbindBridge {
                bdf: Bdf::parse("06:00.0").unwrap()
            }
        );
        assert_eq!(
            writes(&group.blockers[0]),
            ["0000:06:00.0 > /sys/bus/pci/drivers/shpchp/unbind"]
        );
    }

    #[test]
    fn bridge_only_group_is_not_assignable() {
        let group = group_of(&[dev("00:01.0", 0x060400, Some("pcieport"))]);
        assert!(group.viable);
        assert!(!group.assignable);
        assert!(group.blockers.is_empty());
        assert_eq!(group.verdict, GroupVerdict::NoEndpoints);
    }

    #[test]
    fn a_listed_member_without_a_directory_makes_the_group_unknown() {
        let group = judge(
            &[dev("a9:00.0", 0x030000, Some("vfio-pci"))],
            &["a9:00.1"],
            &[],
        );
        assert_eq!(group.verdict, GroupVerdict::Unknown);
        assert!(!group.viable && !group.assignable);
        let blocker = &group.blockers[0];
        assert_eq!(blocker.bdf.to_string(), "0000:a9:00.1");
        assert_eq!(
            blocker.kind,
            BlockKind::Unknown {
                attribute: "device",
                failure: ReadFailure::Missing
            }
        );
        assert!(matches!(
            blocker.fix,
            Fix::Nothing(NoFix::UnknownMember { .. })
        ));
        assert!(blocker.manual_writes().is_empty());
    }

    #[test]
    fn an_unreadable_member_says_why() {
        let bdf = Bdf::parse("a9:00.1").unwrap();
        let problem = ReadProblem {
            bdf,
            attribute: "uevent",
            failure: ReadFailure::PermissionDenied,
        };
        let group = judge(
            &[dev("a9:00.0", 0x030000, Some("vfio-pci"))],
            &["a9:00.1"],
            &[problem],
        );
        assert_eq!(group.verdict, GroupVerdict::Unknown);
        assert_eq!(
            group.blockers[0].kind,
            BlockKind::Unknown {
                attribute: "uevent",
                failure: ReadFailure::PermissionDenied
            }
        );
    }

    #[test]
    fn an_unreadable_driver_is_unknown_not_unbound() {
        let mut audio = dev("01:00.1", 0x040300, None);
        audio.problems.push(ReadProblem {
            bdf: audio.bdf,
            attribute: "driver",
            failure: ReadFailure::PermissionDenied,
        });
        let group = group_of(&[dev("01:00.0", 0x030200, Some("vfio-pci")), audio]);
        assert_eq!(group.verdict, GroupVerdict::Unknown);
        assert_eq!(group.blockers.len(), 1);
        assert_eq!(group.blockers[0].kind.as_str(), "unknown");
    }

    #[test]
    fn a_listing_that_cannot_be_read_makes_the_group_unknown() {
        let devices = [dev("01:00.0", 0x030200, Some("vfio-pci"))];
        let group = build_groups(GroupInputs {
            members: BTreeMap::from([(1, vec![devices[0].bdf])]),
            devices: &devices,
            unreadable: &[],
            listing_failures: &BTreeMap::from([(1, ReadFailure::PermissionDenied)]),
            unplaced: &[],
            sysfs_root: "/sys",
        })
        .remove(0);
        assert_eq!(group.verdict, GroupVerdict::Unknown);
        assert!(!group.assignable);
    }

    #[test]
    fn a_function_without_a_known_group_may_be_in_any() {
        // No listing, and one function's iommu_group link cannot be read.
        let devices = [dev("01:00.0", 0x030200, Some("vfio-pci"))];
        let lost = Bdf::parse("01:00.1").unwrap();
        let group = build_groups(GroupInputs {
            members: BTreeMap::from([(1, vec![devices[0].bdf])]),
            devices: &devices,
            unreadable: &[],
            listing_failures: &BTreeMap::new(),
            unplaced: &[lost],
            sysfs_root: "/sys",
        })
        .remove(0);
        assert_eq!(group.verdict, GroupVerdict::Unknown);
        assert_eq!(group.unplaced, [lost]);
        assert!(group.blockers.is_empty() && !group.assignable);
    }

    #[test]
    fn platform_functions_get_no_fix() {
        // The PCH: LPC bridge, audio on a host driver, SMBus, SPI flash, all one group.
        let group = group_of(&[
            dev("00:1f.0", 0x060100, None),
            dev("00:1f.3", 0x040300, Some("snd_hda_intel")),
            dev("00:1f.4", 0x0c0500, Some("i801_smbus")),
            dev("00:1f.5", 0x0c8000, None),
        ]);
        assert_eq!(group.verdict, GroupVerdict::NotViable);
        for blocker in &group.blockers {
            assert_eq!(
                blocker.fix,
                Fix::Nothing(NoFix::PlatformFunction {
                    bdf: Bdf::parse("00:1f.0").unwrap(),
                    function: PlatformFunction::IsaBridge
                }),
                "{blocker:?}"
            );
            assert!(blocker.manual_writes().is_empty());
        }
        // Alone in its group, the boot VGA gets no fix either.
        let mut vga = dev("02:00.0", 0x030000, Some("ast"));
        vga.boot_vga = true;
        let group = group_of(&[vga]);
        assert!(matches!(
            group.blockers[0].fix,
            Fix::Nothing(NoFix::PlatformFunction {
                function: PlatformFunction::BootVga,
                ..
            })
        ));
        // A host bridge on an EDAC driver: no unbind suggested.
        let group = group_of(&[
            dev("00:00.0", 0x060000, Some("igen6_edac")),
            dev("00:02.0", 0x030000, Some("vfio-pci")),
        ]);
        assert!(!group.viable);
        assert!(matches!(group.blockers[0].fix, Fix::Nothing(_)));
    }

    #[test]
    fn a_host_bridge_that_stays_does_not_stop_the_fix() {
        // Consumer boards: the host bridge shares the GPU's group and stays unbound.
        let group = group_of(&[
            dev("00:01.0", 0x060000, None),
            dev("01:00.0", 0x030000, Some("nvidia")),
        ]);
        assert_eq!(
            group.blockers[0].fix,
            Fix::BindDevice {
                bdf: Bdf::parse("01:00.0").unwrap()
            }
        );
    }
}
