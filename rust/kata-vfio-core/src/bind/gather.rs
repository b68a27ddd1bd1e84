//! What a bind needs to know before it plans: the devices a request covers (whole groups,
//! bridges left alone), each one's target driver (vfio-pci, a variant driver named by
//! `modules.alias`, or the forced one) and module, and why the host is using it.

use std::collections::BTreeMap;
use std::path::Path;

use super::modules;
use super::names::{DriverName, ModuleName};
use super::plan::{already_bound, Candidate};
use super::safety;
use super::sysfs::{DeviceFacts, PciBus};
use super::{Env, GroupMode};
use crate::bdf::Bdf;
use crate::beneath::RootDir;
use crate::error::{Error, Result};

/// The devices a request covers, in numeric order, with the messages that explain the
/// expansion. Bridges are refused when named and skipped when they are group members.
pub fn expand(
    bus: &PciBus,
    requested: &[Bdf],
    mode: GroupMode,
    messages: &mut Vec<String>,
) -> Result<BTreeMap<Bdf, DeviceFacts>> {
    let mut out = BTreeMap::new();
    for &bdf in requested {
        let facts = bus.device(bdf)?;
        if !facts.is_endpoint() {
            return Err(Error::Bind {
                message: format!(
                    "{bdf} is a PCI bridge or port (class {:#08x}): bridges are never bound",
                    facts.class_code
                ),
                errno: None,
                hint: Some(
                    "name the endpoints behind it; bridges do not block viability".to_owned(),
                ),
                remedies: Vec::new(),
            });
        }
        let Some(group) = facts.group else {
            out.insert(bdf, facts);
            continue;
        };
        let mut endpoints = Vec::new();
        let mut bridges = Vec::new();
        for member in bus.group_members(group)? {
            let member_facts = if member == bdf {
                facts.clone()
            } else {
                bus.device(member)?
            };
            if member_facts.is_endpoint() {
                endpoints.push(member_facts);
            } else {
                bridges.push(member);
            }
        }
        let whole = match mode {
            GroupMode::Whole => true,
            GroupMode::Single => false,
            GroupMode::Auto => endpoints.len() > 1,
        };
        let list = |v: &[Bdf]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let endpoint_bdfs: Vec<Bdf> = endpoints.iter().map(|f| f.bdf).collect();
        if whole {
            if endpoints.len() > 1 && mode == GroupMode::Auto && !out.contains_key(&bdf) {
                messages.push(format!(
                    "{bdf}: IOMMU group {group} has {} endpoints ({}); taking all of them, since a group is usable only as a whole",
                    endpoints.len(),
                    list(&endpoint_bdfs)
                ));
            }
            if !bridges.is_empty() && !out.contains_key(&bdf) {
                messages.push(format!(
                    "group {group}: leaving bridge/port {} alone (bridges do not block viability)",
                    list(&bridges)
                ));
            }
            for member in endpoints {
                out.entry(member.bdf).or_insert(member);
            }
        } else {
            if endpoints.len() > 1 {
                let others: Vec<Bdf> = endpoint_bdfs
                    .iter()
                    .copied()
                    .filter(|b| *b != bdf)
                    .collect();
                messages.push(format!(
                    "{bdf}: only this device; IOMMU group {group} is not viable until {} are handled too",
                    list(&others)
                ));
            }
            out.insert(bdf, facts);
        }
    }
    Ok(out)
}

/// The kernel release, validated for use as a path component.
fn kernel_release(env: &Env<'_>) -> Option<String> {
    let text = match &env.kernel_release {
        Some(r) => r.clone(),
        None => RootDir::open(&env.proc_root)
            .and_then(|proc| proc.read_text("sys/kernel/osrelease"))
            .ok()?,
    };
    let release = text.trim();
    let ok = !release.is_empty()
        && release != "."
        && release != ".."
        && release.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    ok.then(|| release.to_owned())
}

/// Chooses each device's target driver and the module that provides it.
fn targets(
    env: &Env<'_>,
    devices: &BTreeMap<Bdf, DeviceFacts>,
    forced: Option<&DriverName>,
    messages: &mut Vec<String>,
) -> Result<BTreeMap<Bdf, (DriverName, ModuleName)>> {
    if let Some(driver) = forced {
        return Ok(devices
            .keys()
            .map(|&b| (b, (driver.clone(), driver.module())))
            .collect());
    }
    let aliases = if let Some(release) = kernel_release(env) {
        let path = env
            .modules_root
            .join("lib/modules")
            .join(&release)
            .join("modules.alias");
        modules::read_vfio_aliases(&path)?
    } else {
        messages.push("kernel release unknown: vfio variant drivers not looked up".to_owned());
        Vec::new()
    };
    let mut out = BTreeMap::new();
    for (&bdf, facts) in devices {
        let found = facts
            .modalias
            .as_deref()
            .and_then(|m| modules::variant_for(&aliases, m));
        let pair = match found {
            Some(module) => {
                let driver = driver_of_module(&env.bus, &module);
                messages.push(format!(
                    "{bdf}: modules.alias names the vfio variant driver {driver} (module {module})"
                ));
                (driver, module)
            }
            None => (DriverName::vfio_pci(), ModuleName::parse("vfio_pci")?),
        };
        out.insert(bdf, pair);
    }
    Ok(out)
}

/// The PCI driver a loaded module registers (`/sys/module/<m>/drivers/pci:<name>`), or the
/// kernel's naming rule when the module is not loaded.
fn driver_of_module(bus: &PciBus, module: &ModuleName) -> DriverName {
    let dir = Path::new("module").join(module.as_str()).join("drivers");
    bus.list(&dir)
        .iter()
        .filter_map(|n| n.strip_prefix("pci:"))
        .find_map(|n| DriverName::parse(n).ok())
        .unwrap_or_else(|| module.default_driver())
}

/// What the plan needs to know about each device: its target driver and module, whether
/// it has `driver_override`, and (for devices not bound yet) why the host is using or
/// needs it.
pub fn candidates(
    env: &Env<'_>,
    devices: BTreeMap<Bdf, DeviceFacts>,
    forced: Option<&DriverName>,
    messages: &mut Vec<String>,
) -> Result<Vec<Candidate>> {
    let mut targets = targets(env, &devices, forced, messages)?;
    let mut out = Vec::with_capacity(devices.len());
    for (bdf, facts) in devices {
        let Some((target, module)) = targets.remove(&bdf) else {
            continue;
        };
        let in_use = if already_bound(&facts.state, &target, forced.is_some()) {
            Vec::new()
        } else {
            let mut reasons: Vec<String> = safety::platform_reason(&env.bus, &facts)
                .into_iter()
                .collect();
            reasons.extend(safety::in_use_reasons(&env.bus, &env.proc_root, bdf)?);
            reasons
        };
        out.push(Candidate {
            has_override: env.bus.has_override(bdf),
            facts,
            target,
            module,
            in_use,
        });
    }
    Ok(out)
}
