//! Moving PCI functions to vfio-pci (or a vfio variant driver) and back, safely.
//!
//! Binding uses the kernel's `driver_override` protocol: write the target driver to
//! `driver_override`, unbind the current driver, write the address to `drivers_probe`, then
//! read the `driver` link back to verify. Writing the override alone changes nothing until
//! the unbind and probe.
//!
//! Rules:
//! * A group is usable only as a whole, so when the device's IOMMU group has several
//!   endpoints the whole group is bound (unless the caller asks for one device only).
//!   Bridges and ports are never touched: they do not block viability.
//! * Before the first write, each device's original driver and override go into a journal
//!   in the state directory ([`journal`]), atomically and fsynced; [`restore`] replays it,
//!   also after a crash or `kill -9` at any step.
//! * A failure part-way through a group rolls back every device touched in that run.
//! * Binding a bound device is a no-op; the journal keeps the first original state.
//! * A device the host is using (mounted filesystem, configured network interface, boot
//!   VGA or console) is refused unless forced.
//! * `EBUSY` answers are retried briefly, then reported.

pub mod journal;
pub mod modules;
pub mod names;
pub mod safety;
pub mod sysfs;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

pub use journal::{list_entries, Journal, JournalEntry};
pub use modules::{Modprobe, ModuleLoader};
pub use names::{is_vfio_driver, DriverName, ModuleName};
pub use sysfs::{DeviceFacts, DriverState, FsWriter, PciBus, RetryPolicy, SysfsWrite, SysfsWriter};

use crate::bdf::Bdf;
use crate::error::{Error, Result};

const ENODEV: i32 = 19;

/// Where binding reads and writes, and the effects it may use.
pub struct Env<'a> {
    pub bus: PciBus,
    /// procfs, for mounts, swaps, routes and the kernel release.
    pub proc_root: PathBuf,
    /// Where the journal lives (default `/run/kata-vfio`).
    pub state_dir: PathBuf,
    /// The root holding `lib/modules/<release>/modules.alias` (default `/`).
    pub modules_root: PathBuf,
    /// The kernel release for `modules.alias`; read from `<proc>/sys/kernel/osrelease`
    /// when `None`.
    pub kernel_release: Option<String>,
    pub writer: &'a dyn SysfsWriter,
    pub loader: &'a dyn ModuleLoader,
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("bus", &self.bus)
            .field("proc_root", &self.proc_root)
            .field("state_dir", &self.state_dir)
            .field("modules_root", &self.modules_root)
            .field("kernel_release", &self.kernel_release)
            .finish_non_exhaustive()
    }
}

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/run/kata-vfio";

/// Which devices a request covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupMode {
    /// The whole group when it has several endpoints, else the device alone.
    Auto,
    /// Always the whole group.
    Whole,
    /// Only the named devices (leaves a multi-endpoint group not viable).
    Single,
}

/// A request to bind devices to vfio.
#[derive(Debug, Clone)]
pub struct BindRequest {
    pub devices: Vec<Bdf>,
    pub group: GroupMode,
    /// Force this driver instead of vfio-pci / the variant from `modules.alias`.
    pub driver: Option<DriverName>,
    /// Bind even devices the host is using.
    pub force: bool,
    /// Plan only: report the writes without making them.
    pub dry_run: bool,
}

/// What happened (or, in a dry run, would happen) to one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Moved to its vfio driver.
    Bound,
    /// Already on a vfio driver; nothing written.
    AlreadyBound,
    /// Put back to its recorded original state.
    Restored,
    /// Taken off its vfio driver and re-probed (no journal entry).
    Unbound,
    /// Nothing to do.
    Unchanged,
}

impl Action {
    /// A stable lower-case name (`bound`, `already-bound`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bound => "bound",
            Self::AlreadyBound => "already-bound",
            Self::Restored => "restored",
            Self::Unbound => "unbound",
            Self::Unchanged => "unchanged",
        }
    }
}

/// One device's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceOutcome {
    pub bdf: Bdf,
    pub group: Option<u32>,
    pub before: DriverState,
    /// The state afterwards (predicted in a dry run).
    pub after: DriverState,
    /// The driver the device was bound to (bind only).
    pub target: Option<String>,
    pub action: Action,
}

/// What a bind, unbind or restore did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Report {
    pub dry_run: bool,
    /// Every device considered, in numeric PCI order.
    pub devices: Vec<DeviceOutcome>,
    /// The sysfs writes, in order (planned ones in a dry run).
    pub writes: Vec<SysfsWrite>,
    /// Modules loaded (or to load).
    pub modules: Vec<String>,
    /// Notes for the user (whole-group expansion, skipped bridges).
    pub messages: Vec<String>,
}

/// The kind of a planned write, for the error handling it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepKind {
    Override,
    Unbind,
    Probe,
    Bind,
}

#[derive(Debug, Clone)]
struct Step {
    kind: StepKind,
    path: PathBuf,
    value: String,
}

fn override_step(bus: &PciBus, bdf: Bdf, value: Option<&str>) -> Step {
    Step {
        kind: StepKind::Override,
        path: bus.override_path(bdf),
        // A lone newline clears the override.
        value: value.map_or_else(|| "\n".to_owned(), ToOwned::to_owned),
    }
}

fn unbind_step(bus: &PciBus, bdf: Bdf, driver: &DriverName) -> Step {
    Step {
        kind: StepKind::Unbind,
        path: bus.driver_dir(driver).join("unbind"),
        value: bdf.to_string(),
    }
}

fn probe_step(bus: &PciBus, bdf: Bdf) -> Step {
    Step {
        kind: StepKind::Probe,
        path: bus.probe_path(),
        value: bdf.to_string(),
    }
}

fn bind_step(bus: &PciBus, bdf: Bdf, driver: &DriverName) -> Step {
    Step {
        kind: StepKind::Bind,
        path: bus.driver_dir(driver).join("bind"),
        value: bdf.to_string(),
    }
}

fn write_failed(step: &Step, e: &io::Error) -> Error {
    let value = if step.value == "\n" {
        "\\n"
    } else {
        &step.value
    };
    Error::Bind {
        message: format!("writing {value:?} to {} failed: {e}", step.path.display()),
        errno: e.raw_os_error(),
        hint: Some(match e.raw_os_error() {
            Some(16) => {
                "the kernel kept answering EBUSY: the device is in use; stop what uses it and retry"
                    .to_owned()
            }
            Some(1 | 13) => "run as root: sysfs driver files are writable by root only".to_owned(),
            _ => "check `dmesg` for the driver's message".to_owned(),
        }),
    }
}

/// Runs the steps in order. An unbind answered with ENODEV means the device was no longer
/// on that driver (it raced away), which is what the step wanted.
fn run_steps(env: &Env<'_>, steps: &[Step], log: &mut Vec<SysfsWrite>) -> Result<()> {
    for step in steps {
        match sysfs::write_with_retry(env.writer, env.retry, &step.path, &step.value, log) {
            Ok(()) => {}
            Err(e) if step.kind == StepKind::Unbind && e.raw_os_error() == Some(ENODEV) => {}
            Err(e) => return Err(write_failed(step, &e)),
        }
    }
    Ok(())
}

fn planned(steps: &[Step], log: &mut Vec<SysfsWrite>) {
    log.extend(steps.iter().map(|s| SysfsWrite {
        path: s.path.clone(),
        value: s.value.clone(),
    }));
}

fn parse_driver(name: &str, bdf: Bdf, what: &str) -> Result<DriverName> {
    DriverName::parse(name).map_err(|e| Error::Bind {
        message: format!(
            "{bdf}: its {what} {name:?} is not a driver name kata-vfio can restore ({e})"
        ),
        errno: None,
        hint: Some("clear or fix it by hand first".to_owned()),
    })
}

/// The devices a request covers, in numeric order, with the messages that explain the
/// expansion. Bridges are refused when named and skipped when they are group members.
fn expand(
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
        None => std::fs::read_to_string(env.proc_root.join("sys/kernel/osrelease")).ok()?,
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
    let dir = bus
        .root()
        .join("module")
        .join(module.as_str())
        .join("drivers");
    std::fs::read_dir(dir)
        .ok()
        .and_then(|entries| {
            let mut names: Vec<String> = entries
                .flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("pci:")
                        .map(ToOwned::to_owned)
                })
                .collect();
            names.sort();
            names.into_iter().find_map(|n| DriverName::parse(&n).ok())
        })
        .unwrap_or_else(|| module.default_driver())
}

/// Binds the requested devices (and, by the request's group mode, their group) to vfio.
#[allow(clippy::too_many_lines)] // one linear procedure reads best in one piece
pub fn bind(env: &Env<'_>, req: &BindRequest) -> Result<Report> {
    let bus = &env.bus;
    let mut report = Report {
        dry_run: req.dry_run,
        ..Report::default()
    };
    let devices = expand(bus, &req.devices, req.group, &mut report.messages)?;
    for facts in devices.values() {
        if facts.group.is_none() && !bus.noiommu_enabled() {
            return Err(Error::Bind {
                message: format!("{} has no IOMMU group: the IOMMU is off, so vfio-pci cannot take it", facts.bdf),
                errno: None,
                hint: Some(
                    "enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line) and reboot; `kata-vfio check` shows the state".to_owned(),
                ),
            });
        }
        if !bus.has_override(facts.bdf) {
            return Err(Error::Bind {
                message: format!("{} has no driver_override attribute", facts.bdf),
                errno: None,
                hint: Some("driver_override needs Linux 3.16 or later".to_owned()),
            });
        }
    }
    let targets = targets(env, &devices, req.driver.as_ref(), &mut report.messages)?;

    // Decide per device; nothing is written yet.
    let mut todo: Vec<(&DeviceFacts, &DriverName)> = Vec::new();
    for (bdf, facts) in &devices {
        let target = &targets[bdf].0;
        let current = facts.state.driver.as_deref();
        let already = current == Some(target.as_str())
            || (req.driver.is_none() && current.is_some_and(is_vfio_driver));
        if already {
            report.devices.push(DeviceOutcome {
                bdf: *bdf,
                group: facts.group,
                before: facts.state.clone(),
                after: facts.state.clone(),
                target: Some(target.to_string()),
                action: Action::AlreadyBound,
            });
        } else {
            if let Some(d) = &facts.state.driver {
                parse_driver(d, *bdf, "driver")?;
            }
            if let Some(o) = &facts.state.driver_override {
                parse_driver(o, *bdf, "driver_override")?;
            }
            todo.push((facts, target));
        }
    }

    if !req.force {
        let mut refusals = Vec::new();
        for (facts, _) in &todo {
            refusals.extend(safety::platform_reason(bus, facts));
            for reason in safety::in_use_reasons(bus, &env.proc_root, facts.bdf)? {
                refusals.push(format!("{}: {reason}", facts.bdf));
            }
        }
        if !refusals.is_empty() {
            return Err(Error::Bind {
                message: format!(
                    "refusing to take devices the host is using or needs: {}",
                    refusals.join("; ")
                ),
                errno: None,
                hint: Some("stop using them first, or pass --force to take them anyway".to_owned()),
            });
        }
    }

    // Load the modules of missing drivers before touching any device.
    let mut needed: BTreeMap<&DriverName, &ModuleName> = BTreeMap::new();
    for (facts, target) in &todo {
        needed.insert(target, &targets[&facts.bdf].1);
    }
    for (driver, module) in needed {
        if bus.has_driver(driver) {
            continue;
        }
        report.modules.push(module.to_string());
        if req.dry_run {
            report
                .messages
                .push(format!("would load module {module} for driver {driver}"));
            continue;
        }
        env.loader.load(module).map_err(|why| Error::Bind {
            message: format!(
                "driver {driver} is not registered and loading module {module} failed: {why}"
            ),
            errno: None,
            hint: Some(format!(
                "install or unblock the module (modprobe {module}), then retry"
            )),
        })?;
        if !bus.has_driver(driver) {
            return Err(Error::Bind {
                message: format!(
                    "module {module} loaded but driver {driver} did not appear under {}",
                    bus.driver_dir(driver).display()
                ),
                errno: None,
                hint: Some("name the driver explicitly with --driver".to_owned()),
            });
        }
    }

    let plan_for =
        |facts: &DeviceFacts, target: &DriverName, state: &DriverState| -> Result<Vec<Step>> {
            let mut steps = vec![override_step(bus, facts.bdf, Some(target.as_str()))];
            if let Some(current) = &state.driver {
                steps.push(unbind_step(
                    bus,
                    facts.bdf,
                    &parse_driver(current, facts.bdf, "driver")?,
                ));
            }
            steps.push(probe_step(bus, facts.bdf));
            Ok(steps)
        };

    if req.dry_run {
        for (facts, target) in &todo {
            planned(&plan_for(facts, target, &facts.state)?, &mut report.writes);
            report.devices.push(DeviceOutcome {
                bdf: facts.bdf,
                group: facts.group,
                before: facts.state.clone(),
                after: DriverState {
                    driver: Some(target.to_string()),
                    driver_override: Some(target.to_string()),
                },
                target: Some(target.to_string()),
                action: Action::Bound,
            });
        }
        report.devices.sort_by_key(|d| d.bdf);
        return Ok(report);
    }
    if todo.is_empty() {
        report.devices.sort_by_key(|d| d.bdf);
        return Ok(report);
    }

    let journal = Journal::open(&env.state_dir)?;
    for (facts, target) in &todo {
        if journal.get(facts.bdf)?.is_none() {
            journal.record(&JournalEntry {
                bdf: facts.bdf,
                group: facts.group,
                driver: facts
                    .state
                    .driver
                    .as_deref()
                    .map(|d| parse_driver(d, facts.bdf, "driver"))
                    .transpose()?,
                driver_override: facts
                    .state
                    .driver_override
                    .as_deref()
                    .map(|d| parse_driver(d, facts.bdf, "driver_override"))
                    .transpose()?,
                target: (*target).clone(),
            })?;
        }
    }

    let mut touched: Vec<Bdf> = Vec::new();
    for (facts, target) in &todo {
        touched.push(facts.bdf);
        let outcome = (|| {
            let state = bus.state(facts.bdf)?;
            run_steps(env, &plan_for(facts, target, &state)?, &mut report.writes)?;
            let after = bus.state(facts.bdf)?;
            if after.driver.as_deref() != Some(target.as_str()) {
                return Err(Error::Bind {
                    message: format!(
                        "{} did not bind to {target}: its driver is {} after drivers_probe",
                        facts.bdf,
                        after.driver.as_deref().unwrap_or("none")
                    ),
                    errno: None,
                    hint: Some(format!("check `dmesg` for {target}'s probe error")),
                });
            }
            Ok(after)
        })();
        match outcome {
            Ok(after) => report.devices.push(DeviceOutcome {
                bdf: facts.bdf,
                group: facts.group,
                before: facts.state.clone(),
                after,
                target: Some(target.to_string()),
                action: Action::Bound,
            }),
            Err(err) => return Err(rollback(env, &journal, &touched, &err, &mut report.writes)),
        }
    }
    report.devices.sort_by_key(|d| d.bdf);
    Ok(report)
}

/// Puts back every device in `touched` (newest first) after `cause`; the returned error
/// says what failed and what was rolled back.
fn rollback(
    env: &Env<'_>,
    journal: &Journal,
    touched: &[Bdf],
    cause: &Error,
    log: &mut Vec<SysfsWrite>,
) -> Error {
    let mut restored = Vec::new();
    let mut failed = Vec::new();
    for &bdf in touched.iter().rev() {
        let result = journal.get(bdf).and_then(|entry| match entry {
            Some(entry) => restore_one(env, &entry, log).and_then(|_| journal.remove(bdf)),
            None => Ok(()),
        });
        match result {
            Ok(()) => restored.push(bdf.to_string()),
            Err(e) => failed.push(format!("{bdf} ({e})")),
        }
    }
    restored.reverse();
    let (errno, hint) = (cause.errno(), cause.hint().map(ToOwned::to_owned));
    let mut message = format!(
        "{cause}; rolled back {}",
        if restored.is_empty() {
            "nothing".to_owned()
        } else {
            restored.join(", ")
        }
    );
    if !failed.is_empty() {
        message = format!(
            "{message}; could not roll back {} (run `kata-vfio restore`)",
            failed.join(", ")
        );
    }
    Error::Bind {
        message,
        errno,
        hint,
    }
}

/// The writes that take `bdf` from `now` back to `entry`'s original state.
fn restore_steps(bus: &PciBus, entry: &JournalEntry, now: &DriverState) -> Result<Vec<Step>> {
    let want_override = entry.driver_override.as_ref().map(DriverName::as_str);
    let want_driver = entry.driver.as_ref().map(DriverName::as_str);
    let mut steps = Vec::new();
    if now.driver_override.as_deref() != want_override {
        steps.push(override_step(bus, entry.bdf, want_override));
    }
    if now.driver.as_deref() != want_driver {
        if let Some(current) = &now.driver {
            steps.push(unbind_step(
                bus,
                entry.bdf,
                &parse_driver(current, entry.bdf, "driver")?,
            ));
        }
        if entry.driver.is_some() {
            steps.push(probe_step(bus, entry.bdf));
        }
    }
    Ok(steps)
}

/// Restores one device from its journal entry and verifies it.
fn restore_one(
    env: &Env<'_>,
    entry: &JournalEntry,
    log: &mut Vec<SysfsWrite>,
) -> Result<DriverState> {
    let bus = &env.bus;
    let now = bus.state(entry.bdf)?;
    run_steps(env, &restore_steps(bus, entry, &now)?, log)?;
    let mut after = bus.state(entry.bdf)?;
    if let Some(original) = &entry.driver {
        // drivers_probe may pick another driver (the original was bound by hand); bind the
        // original explicitly then.
        if after.driver.is_none() && bus.has_driver(original) {
            run_steps(env, &[bind_step(bus, entry.bdf, original)], log)?;
            after = bus.state(entry.bdf)?;
        }
    }
    if after.driver.as_deref() != entry.driver.as_ref().map(DriverName::as_str) {
        return Err(Error::Bind {
            message: format!(
                "{} is on {} after restore, not back on {}",
                entry.bdf,
                after.driver.as_deref().unwrap_or("no driver"),
                entry
                    .driver
                    .as_ref()
                    .map_or("no driver", DriverName::as_str)
            ),
            errno: None,
            hint: Some(
                "check `dmesg`; the journal entry is kept so `kata-vfio restore` can retry"
                    .to_owned(),
            ),
        });
    }
    Ok(after)
}

/// The locked journal and its entries; a dry run only reads the entries (no lock, no
/// directory created).
fn open_journal(env: &Env<'_>, dry_run: bool) -> Result<(Option<Journal>, Vec<JournalEntry>)> {
    if dry_run {
        return Ok((None, list_entries(&env.state_dir)?));
    }
    let journal = Journal::open(&env.state_dir)?;
    let entries = journal.entries()?;
    Ok((Some(journal), entries))
}

/// Restores journaled devices: all of them, or those in the same IOMMU groups as `devices`
/// (a group goes back as a whole). Entries are removed once their device is back.
pub fn restore(env: &Env<'_>, devices: Option<&[Bdf]>, dry_run: bool) -> Result<Report> {
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    let (journal, entries) = open_journal(env, dry_run)?;
    let selected: Vec<JournalEntry> = match devices {
        None => entries,
        Some(list) => {
            let groups: Vec<Option<u32>> = list
                .iter()
                .map(|&b| {
                    entries
                        .iter()
                        .find(|e| e.bdf == b)
                        .map(|e| e.group)
                        .or_else(|| env.bus.device(b).ok().map(|f| f.group))
                        .flatten()
                })
                .collect();
            entries
                .into_iter()
                .filter(|e| {
                    list.contains(&e.bdf) || (e.group.is_some() && groups.contains(&e.group))
                })
                .collect()
        }
    };
    if let Some(list) = devices {
        for bdf in list {
            if !selected.iter().any(|e| e.bdf == *bdf) {
                report
                    .messages
                    .push(format!("{bdf}: no journal entry, nothing to restore"));
            }
        }
    }
    let mut failures = Vec::new();
    for entry in &selected {
        if !env.bus.device_dir(entry.bdf).is_dir() {
            report.messages.push(format!(
                "{}: the device is gone; dropping its journal entry",
                entry.bdf
            ));
            if let Some(j) = &journal {
                j.remove(entry.bdf)?;
            }
            continue;
        }
        let before = env.bus.state(entry.bdf)?;
        let original = entry.original_state();
        let outcome = match &journal {
            None => {
                planned(
                    &restore_steps(&env.bus, entry, &before)?,
                    &mut report.writes,
                );
                Ok(original)
            }
            Some(j) => restore_one(env, entry, &mut report.writes)
                .and_then(|after| j.remove(entry.bdf).map(|()| after)),
        };
        match outcome {
            Ok(after) => report.devices.push(DeviceOutcome {
                bdf: entry.bdf,
                group: entry.group,
                action: if before == after {
                    Action::Unchanged
                } else {
                    Action::Restored
                },
                before,
                after,
                target: None,
            }),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !failures.is_empty() {
        return Err(Error::Bind {
            message: format!("restore failed for {} device(s): {}", failures.len(), failures.join("; ")),
            errno: None,
            hint: Some("the failed devices keep their journal entries; fix the cause and run `kata-vfio restore` again".to_owned()),
        });
    }
    Ok(report)
}

/// Takes devices off vfio: a journaled device goes back to its recorded state; any other
/// device on a vfio driver has a vfio `driver_override` cleared, is unbound and re-probed so
/// the kernel picks its host driver. Groups expand as for [`bind`].
pub fn unbind(env: &Env<'_>, devices: &[Bdf], group: GroupMode, dry_run: bool) -> Result<Report> {
    let bus = &env.bus;
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    let expanded = expand(bus, devices, group, &mut report.messages)?;
    let (journal, recorded) = open_journal(env, dry_run)?;
    for (bdf, facts) in &expanded {
        let before = facts.state.clone();
        if let Some(entry) = recorded.iter().find(|e| e.bdf == *bdf) {
            let after = if let Some(j) = &journal {
                let after = restore_one(env, entry, &mut report.writes)?;
                j.remove(*bdf)?;
                after
            } else {
                planned(&restore_steps(bus, entry, &before)?, &mut report.writes);
                entry.original_state()
            };
            report.devices.push(DeviceOutcome {
                bdf: *bdf,
                group: facts.group,
                before,
                after,
                target: None,
                action: Action::Restored,
            });
            continue;
        }
        let Some(current) = before.driver.as_deref().filter(|d| is_vfio_driver(d)) else {
            report.devices.push(DeviceOutcome {
                bdf: *bdf,
                group: facts.group,
                after: before.clone(),
                before,
                target: None,
                action: Action::Unchanged,
            });
            continue;
        };
        let current = parse_driver(current, *bdf, "driver")?;
        let mut steps = Vec::new();
        if before
            .driver_override
            .as_deref()
            .is_some_and(is_vfio_driver)
        {
            steps.push(override_step(bus, *bdf, None));
        }
        steps.push(unbind_step(bus, *bdf, &current));
        steps.push(probe_step(bus, *bdf));
        let after = if dry_run {
            planned(&steps, &mut report.writes);
            DriverState {
                driver: None,
                driver_override: None,
            }
        } else {
            run_steps(env, &steps, &mut report.writes)?;
            bus.state(*bdf)?
        };
        report.devices.push(DeviceOutcome {
            bdf: *bdf,
            group: facts.group,
            before,
            after,
            target: None,
            action: Action::Unbound,
        });
    }
    Ok(report)
}

/// The journal entries in `state_dir` (no lock taken), in numeric PCI order.
pub fn journal_entries(state_dir: &Path) -> Result<Vec<JournalEntry>> {
    list_entries(state_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(driver: Option<&str>, driver_override: Option<&str>) -> JournalEntry {
        let name = |n: &str| DriverName::parse(n).expect("valid name");
        JournalEntry {
            bdf: Bdf::parse("0000:05:00.0").expect("bdf"),
            group: Some(12),
            driver: driver.map(name),
            driver_override: driver_override.map(name),
            target: DriverName::vfio_pci(),
        }
    }

    fn state(driver: Option<&str>, driver_override: Option<&str>) -> DriverState {
        DriverState {
            driver: driver.map(ToOwned::to_owned),
            driver_override: driver_override.map(ToOwned::to_owned),
        }
    }

    fn plan(entry: &JournalEntry, now: &DriverState) -> Vec<(String, String)> {
        let bus = PciBus::new("/sys");
        restore_steps(&bus, entry, now)
            .expect("plan")
            .into_iter()
            .map(|s| (s.path.display().to_string(), s.value))
            .collect()
    }

    #[test]
    fn restore_undoes_a_finished_bind() {
        let steps = plan(
            &entry(Some("e1000e"), None),
            &state(Some("vfio-pci"), Some("vfio-pci")),
        );
        assert_eq!(
            steps,
            [
                (
                    "/sys/bus/pci/devices/0000:05:00.0/driver_override".into(),
                    "\n".into()
                ),
                (
                    "/sys/bus/pci/drivers/vfio-pci/unbind".into(),
                    "0000:05:00.0".into()
                ),
                ("/sys/bus/pci/drivers_probe".into(), "0000:05:00.0".into()),
            ]
        );
    }

    #[test]
    fn restore_after_a_kill_between_steps_writes_only_what_is_needed() {
        // Killed after the override write: only the override goes back.
        let steps = plan(
            &entry(Some("e1000e"), None),
            &state(Some("e1000e"), Some("vfio-pci")),
        );
        assert_eq!(steps.len(), 1);
        // Killed after the unbind: no unbind to do, just the probe.
        let steps = plan(&entry(Some("e1000e"), None), &state(None, None));
        assert_eq!(
            steps,
            [("/sys/bus/pci/drivers_probe".into(), "0000:05:00.0".into())]
        );
        // Nothing was written: nothing to do.
        assert!(plan(&entry(Some("e1000e"), None), &state(Some("e1000e"), None)).is_empty());
    }

    #[test]
    fn an_unbound_original_is_not_probed_and_an_override_comes_back() {
        let steps = plan(
            &entry(None, None),
            &state(Some("vfio-pci"), Some("vfio-pci")),
        );
        assert_eq!(
            steps.last().map(|s| s.0.as_str()),
            Some("/sys/bus/pci/drivers/vfio-pci/unbind")
        );
        let steps = plan(
            &entry(Some("e1000e"), Some("e1000e")),
            &state(Some("vfio-pci"), Some("vfio-pci")),
        );
        assert_eq!(steps[0].1, "e1000e");
    }

    #[test]
    fn actions_have_stable_names() {
        let names: Vec<&str> = [
            Action::Bound,
            Action::AlreadyBound,
            Action::Restored,
            Action::Unbound,
            Action::Unchanged,
        ]
        .iter()
        .map(|a| a.as_str())
        .collect();
        assert_eq!(
            names,
            ["bound", "already-bound", "restored", "unbound", "unchanged"]
        );
    }
}
