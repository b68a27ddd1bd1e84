//! Applying plans: sysfs writes with EBUSY retries, the journal entry written before a
//! device's first write, verification of the `driver` link afterwards, and rollback of
//! everything a failed bind touched.

use std::io;

use super::journal::{Journal, JournalEntry};
use super::modules::ModuleLoader;
use super::names::DriverName;
use super::plan::{bind_step, bind_steps, restore_steps, BindPlan, Step, StepKind};
use super::sysfs::{self, DriverState, PciBus, SysfsWrite};
use super::{Action, DeviceOutcome, Env, Report};
use crate::bdf::Bdf;
use crate::error::{Error, Remedy, Result};

const ENODEV: i32 = 19;

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
            Some(18) => {
                "the path leads outside the sysfs root (an absolute symlink or `..`): the tree \
                 is not a faithful sysfs; nothing outside it is written"
                    .to_owned()
            }
            Some(40) => "the attribute is a symlink; a real sysfs attribute never is".to_owned(),
            _ => "check `dmesg` for the driver's message".to_owned(),
        }),
        remedies: Vec::new(),
    }
}

/// Runs the steps in order. An unbind answered with ENODEV means the device was no longer
/// on that driver (it raced away), which is what the step wanted.
pub fn run_steps(env: &Env<'_>, steps: &[Step], log: &mut Vec<SysfsWrite>) -> Result<()> {
    for step in steps {
        match sysfs::write_with_retry(env.writer, env.retry, &step.path, &step.value, log) {
            Ok(()) => {}
            Err(e) if step.kind == StepKind::Unbind && e.raw_os_error() == Some(ENODEV) => {}
            Err(e) => return Err(write_failed(step, &e)),
        }
    }
    Ok(())
}

/// Records steps as planned (a dry run).
pub fn planned(steps: &[Step], log: &mut Vec<SysfsWrite>) {
    log.extend(steps.iter().map(|s| SysfsWrite {
        path: s.path.clone(),
        value: s.value.clone(),
    }));
}

/// Loads the modules of drivers that are not registered yet (before any device is touched).
pub fn load_modules(
    bus: &PciBus,
    loader: &dyn ModuleLoader,
    plan: &BindPlan,
    dry_run: bool,
    report: &mut Report,
) -> Result<()> {
    for (driver, module) in &plan.modules {
        report.modules.push(module.to_string());
        if dry_run {
            report
                .messages
                .push(format!("would load module {module} for driver {driver}"));
            continue;
        }
        loader.load(module).map_err(|why| Error::Bind {
            message: format!(
                "driver {driver} is not registered and loading module {module} failed: {why}"
            ),
            errno: None,
            hint: Some(format!(
                "install or unblock the module (modprobe {module}), then retry"
            )),
            remedies: Vec::new(),
        })?;
        if !bus.has_driver(driver) {
            return Err(Error::Bind {
                message: format!(
                    "module {module} loaded but driver {driver} did not appear under {}",
                    bus.driver_dir(driver).display()
                ),
                errno: None,
                hint: Some("the module may register the driver under another name".to_owned()),
                remedies: vec![Remedy::NameDriver],
            });
        }
    }
    Ok(())
}

/// The outcomes a dry run predicts for the plan's moves, with their writes.
pub fn dry_run(plan: &BindPlan, report: &mut Report) {
    for m in &plan.moves {
        planned(&m.steps, &mut report.writes);
        report.devices.push(DeviceOutcome {
            bdf: m.facts.bdf,
            group: m.facts.group,
            before: m.facts.state.clone(),
            after: DriverState {
                driver: Some(m.target.to_string()),
                driver_override: Some(m.target.to_string()),
            },
            target: Some(m.target.to_string()),
            action: Action::Bound,
        });
    }
}

/// Moves each device of the plan: journal entry first (unless one is already there), then
/// the writes from the device's live state, then the `driver` link checked. A failure rolls
/// back every device this call touched; a device it never reached has no journal entry.
pub fn bind_moves(env: &Env<'_>, plan: &BindPlan, report: &mut Report) -> Result<()> {
    if plan.moves.is_empty() {
        return Ok(());
    }
    let bus = &env.bus;
    let journal = Journal::open(&env.state_dir)?;
    let mut touched: Vec<Bdf> = Vec::new();
    for m in &plan.moves {
        let bdf = m.facts.bdf;
        let outcome = (|| {
            if journal.get(bdf)?.is_none() {
                journal.record(&m.entry)?;
            }
            touched.push(bdf);
            let state = bus.state(bdf)?;
            run_steps(
                env,
                &bind_steps(bus, bdf, &m.target, &state)?,
                &mut report.writes,
            )?;
            let after = bus.state(bdf)?;
            if after.driver.as_deref() != Some(m.target.as_str()) {
                return Err(Error::Bind {
                    message: format!(
                        "{bdf} did not bind to {}: its driver is {} after drivers_probe",
                        m.target,
                        after.driver.as_deref().unwrap_or("none")
                    ),
                    errno: None,
                    hint: Some(format!("check `dmesg` for {}'s probe error", m.target)),
                    remedies: Vec::new(),
                });
            }
            Ok(after)
        })();
        match outcome {
            Ok(after) => report.devices.push(DeviceOutcome {
                bdf,
                group: m.facts.group,
                before: m.facts.state.clone(),
                after,
                target: Some(m.target.to_string()),
                action: Action::Bound,
            }),
            Err(err) => return Err(rollback(env, &journal, &touched, &err, &mut report.writes)),
        }
    }
    Ok(())
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
    let mut remedies = cause.remedies().to_vec();
    if !failed.is_empty() {
        message = format!("{message}; could not roll back {}", failed.join(", "));
        // Their journal entries are kept: a restore puts them back.
        remedies.push(Remedy::Restore);
    }
    Error::Bind {
        message,
        errno,
        hint,
        remedies,
    }
}

/// Restores one device from its journal entry and verifies it (no checks: the caller
/// decided it may).
pub fn restore_one(
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
            hint: Some("check `dmesg`; the journal entry is kept".to_owned()),
            remedies: vec![Remedy::Restore],
        });
    }
    Ok(after)
}
