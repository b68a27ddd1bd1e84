//! Taking devices back: `restore` replays journal entries, `unbind` takes devices off vfio.
//!
//! A journal entry is a claim about the past, and the state directory may hold one that
//! kata-vfio never wrote. So before acting on an entry, restore checks that the device is
//! in a state a bind passes through (its driver and override each the target, none, or the
//! recorded original); and before unbinding anything but a vfio driver it asks the same
//! in-use questions as `bind` (mounted filesystem or swap, configured interface, boot VGA
//! or console). Before unbinding a vfio driver, `restore` and `unbind` check that nothing
//! holds the device's group or cdev open (the write would block until the holder lets go).
//! The force option overrides each check, and the report says what it overrode.

use super::apply::{planned, restore_one, run_steps};
use super::gather::expand;
use super::holders::busy_reason;
use super::journal::{list_entries, Journal, JournalEntry, Listing};
use super::names::{is_vfio_driver, DriverName};
use super::plan::{restore_steps, unbind_steps, unbinds, Step};
use super::safety;
use super::sysfs::{DriverState, PciBus};
use super::{Action, DeviceOutcome, Env, GroupMode, Report};
use crate::bdf::Bdf;
use crate::error::{Error, Remedy, Result};

/// The locked journal and its entries; a dry run only reads the entries (no lock, no
/// directory created).
fn open_journal(env: &Env<'_>, dry_run: bool) -> Result<(Option<Journal>, Listing)> {
    if dry_run {
        return Ok((None, list_entries(&env.state_dir)?));
    }
    let journal = Journal::open(&env.state_dir)?;
    let listing = journal.entries()?;
    Ok((Some(journal), listing))
}

fn describe(state: &DriverState) -> String {
    format!(
        "driver {}, override {}",
        state.driver.as_deref().unwrap_or("none"),
        state.driver_override.as_deref().unwrap_or("none")
    )
}

/// Why acting on `entry` from `now` with `steps` would be wrong; empty when it is fine.
fn restore_blockers(
    env: &Env<'_>,
    entry: &JournalEntry,
    now: &DriverState,
    steps: &[Step],
) -> Result<Vec<String>> {
    let bdf = entry.bdf;
    let mut blockers = Vec::new();
    let target = Some(entry.target.as_str());
    let driver_ok = [None, target, entry.driver.as_ref().map(DriverName::as_str)]
        .contains(&now.driver.as_deref());
    let override_ok = [
        None,
        target,
        entry.driver_override.as_ref().map(DriverName::as_str),
    ]
    .contains(&now.driver_override.as_deref());
    if !driver_ok || !override_ok {
        blockers.push(format!(
            "{bdf}: it is on {} now, a state no bind to {} from {} passes through (changed since it was journaled, or the entry is not kata-vfio's)",
            describe(now),
            entry.target,
            describe(&entry.original_state()),
        ));
    }
    blockers.extend(unbind_blockers(env, bdf, entry.group, steps)?);
    Ok(blockers)
}

/// Why the unbind among `steps` (if any) would be wrong: a host driver whose device the
/// host is using, or a vfio driver whose group is open.
fn unbind_blockers(
    env: &Env<'_>,
    bdf: Bdf,
    group: Option<u32>,
    steps: &[Step],
) -> Result<Vec<String>> {
    let Some(driver) = unbinds(steps) else {
        return Ok(Vec::new());
    };
    if is_vfio_driver(driver.as_str()) {
        return Ok(
            busy_reason(&env.bus, &env.dev_root, &env.proc_root, bdf, group)
                .into_iter()
                .collect(),
        );
    }
    Ok(safety::in_use_reasons(&env.bus, &env.proc_root, bdf)?
        .into_iter()
        .map(|r| format!("{bdf}: unbinding {driver} would take it from the host: {r}"))
        .collect())
}

/// Forced, blockers become what the report says was overridden; else they are the refusal.
fn settle(blockers: Vec<String>, force: bool, overridden: &mut Vec<String>) -> Vec<String> {
    if force {
        overridden.extend(blockers);
        Vec::new()
    } else {
        blockers
    }
}

fn refusal(what: &str, blockers: &[String]) -> Error {
    Error::bind(
        format!("refusing to {what}: {}", blockers.join("; ")),
        "stop what uses the device (a VM holding its group) or check it by hand; the journal entries are kept",
        &[Remedy::Force],
    )
}

/// The entries `devices` select: the devices themselves and every entry of their IOMMU
/// groups (a group goes back as a whole); all entries when `devices` is `None`.
fn select(
    bus: &PciBus,
    entries: Vec<JournalEntry>,
    devices: Option<&[Bdf]>,
    messages: &mut Vec<String>,
) -> Vec<JournalEntry> {
    let Some(list) = devices else {
        return entries;
    };
    let groups: Vec<Option<u32>> = list
        .iter()
        .map(|&b| {
            entries
                .iter()
                .find(|e| e.bdf == b)
                .map(|e| e.group)
                .or_else(|| bus.device(b).ok().map(|f| f.group))
                .flatten()
        })
        .collect();
    let selected: Vec<JournalEntry> = entries
        .into_iter()
        .filter(|e| list.contains(&e.bdf) || (e.group.is_some() && groups.contains(&e.group)))
        .collect();
    for bdf in list {
        if !selected.iter().any(|e| e.bdf == *bdf) {
            messages.push(format!("{bdf}: no journal entry, nothing to restore"));
        }
    }
    selected
}

/// Restores journaled devices: all of them, or those in the same IOMMU groups as `devices`
/// (a group goes back as a whole). Entries are removed once their device is back. Damaged
/// journal files are reported in `problems` and skipped; a device whose entry is refused
/// or fails keeps its entry, and the error after the others are done names it.
pub fn restore(
    env: &Env<'_>,
    devices: Option<&[Bdf]>,
    force: bool,
    dry_run: bool,
) -> Result<Report> {
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    let (journal, listing) = open_journal(env, dry_run)?;
    report.problems = listing.problems.iter().map(ToString::to_string).collect();
    let selected = select(&env.bus, listing.entries, devices, &mut report.messages);
    let mut failures = Vec::new();
    for entry in &selected {
        if !env.bus.has_device(entry.bdf) {
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
        let steps = restore_steps(&env.bus, entry, &before)?;
        let blockers = settle(
            restore_blockers(env, entry, &before, &steps)?,
            force,
            &mut report.overridden,
        );
        if !blockers.is_empty() {
            failures.push(format!("refused: {}", blockers.join("; ")));
            continue;
        }
        let outcome = match &journal {
            None => {
                planned(&steps, &mut report.writes);
                Ok(entry.original_state())
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
        let mut message = format!(
            "restore failed for {} device(s): {}",
            failures.len(),
            failures.join("; ")
        );
        if !report.devices.is_empty() {
            let done: Vec<String> = report.devices.iter().map(|d| d.bdf.to_string()).collect();
            message = format!("{message}; restored {}", done.join(", "));
        }
        if !report.problems.is_empty() {
            message = format!("{message}; {}", report.problems.join("; "));
        }
        return Err(Error::bind(
            message,
            "the failed devices keep their journal entries; fix the cause",
            &[Remedy::Restore, Remedy::Force],
        ));
    }
    Ok(report)
}

/// What unbind does to one device.
enum Plan {
    Restore(JournalEntry, Vec<Step>),
    Unbind(Vec<Step>),
    Nothing,
}

/// Takes devices off vfio: a journaled device goes back to its recorded state; any other
/// device on a vfio driver has a vfio `driver_override` cleared, is unbound and re-probed so
/// the kernel picks its host driver. Groups expand as for [`super::bind`]. Every device is
/// checked before the first write: one refusal refuses the call.
pub fn unbind(
    env: &Env<'_>,
    devices: &[Bdf],
    group: GroupMode,
    force: bool,
    dry_run: bool,
) -> Result<Report> {
    let bus = &env.bus;
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    let expanded = expand(bus, devices, group, &mut report.messages)?;
    let (journal, listing) = open_journal(env, dry_run)?;
    report.problems = listing.problems.iter().map(ToString::to_string).collect();
    let mut plans = Vec::new();
    let mut blockers = Vec::new();
    for (bdf, facts) in &expanded {
        let state = &facts.state;
        let plan = if let Some(entry) = listing.entries.iter().find(|e| e.bdf == *bdf) {
            let steps = restore_steps(bus, entry, state)?;
            blockers.extend(restore_blockers(env, entry, state, &steps)?);
            Plan::Restore(entry.clone(), steps)
        } else if let Some(problem) = listing
            .problems
            .iter()
            .find(|p| p.path.ends_with(format!("{bdf}.journal")))
        {
            blockers.push(format!("{bdf}: {problem}"));
            Plan::Nothing
        } else if let Some(steps) = unbind_steps(bus, *bdf, state)? {
            blockers.extend(unbind_blockers(env, *bdf, facts.group, &steps)?);
            Plan::Unbind(steps)
        } else {
            Plan::Nothing
        };
        plans.push((*bdf, facts, plan));
    }
    let blockers = settle(blockers, force, &mut report.overridden);
    if !blockers.is_empty() {
        return Err(refusal("unbind", &blockers));
    }
    for (bdf, facts, plan) in plans {
        let before = facts.state.clone();
        let (after, action) = match plan {
            Plan::Restore(entry, steps) => {
                let after = if let Some(j) = &journal {
                    let after = restore_one(env, &entry, &mut report.writes)?;
                    j.remove(bdf)?;
                    after
                } else {
                    planned(&steps, &mut report.writes);
                    entry.original_state()
                };
                (after, Action::Restored)
            }
            Plan::Unbind(steps) => {
                let after = if dry_run {
                    planned(&steps, &mut report.writes);
                    DriverState::default()
                } else {
                    run_steps(env, &steps, &mut report.writes)?;
                    bus.state(bdf)?
                };
                (after, Action::Unbound)
            }
            Plan::Nothing => (before.clone(), Action::Unchanged),
        };
        report.devices.push(DeviceOutcome {
            bdf,
            group: facts.group,
            before,
            after,
            target: None,
            action,
        });
    }
    Ok(report)
}
