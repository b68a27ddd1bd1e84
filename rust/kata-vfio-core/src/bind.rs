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
//!   VGA or console) or needs (a platform function: host/ISA bridge, SMBus, the IOMMU...)
//!   is refused unless forced.
//! * `EBUSY` answers are retried briefly, then reported.
//! * Nothing leaves the roots given: sysfs reads and writes, and the procfs and devfs looks,
//!   resolve beneath their root's fd ([`crate::beneath`]).
//! * `restore` and `unbind` trust the journal only as far as the device's state agrees
//!   with it, and never unbind a device the host uses or a group a VM holds ([`restore`]).
//!
//! A bind is gathered ([`gather`]: facts, targets, in-use reasons), planned ([`plan`]: pure
//! decisions and writes) and applied ([`apply`]).

pub mod apply;
pub mod gather;
pub mod holders;
pub mod journal;
pub mod modules;
pub mod names;
pub mod plan;
pub mod restore;
pub mod safety;
pub mod sysfs;

use std::path::{Path, PathBuf};

pub use journal::{list_entries, Journal, JournalEntry, JournalProblem, Listing};
pub use modules::{Modprobe, ModuleLoader, NoModules};
pub use names::{is_vfio_driver, DriverName, ModuleName};
pub use restore::{restore, unbind};
pub use sysfs::{
    BusPaths, DeviceFacts, DriverState, FsWriter, PciBus, RetryPolicy, SysfsWrite, SysfsWriter,
};

use crate::bdf::Bdf;
use crate::error::Result;

/// Where binding reads and writes, and the effects it may use.
pub struct Env<'a> {
    pub bus: PciBus,
    /// devfs, for the VFIO group and cdev nodes (is a group open?).
    pub dev_root: PathBuf,
    /// procfs, for mounts, swaps, routes, open fds and the kernel release.
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
            .field("dev_root", &self.dev_root)
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
    /// Notes for the user (whole-group expansion, skipped bridges, variant drivers).
    pub messages: Vec<String>,
    /// The refusals the request's force option overrode, one per reason (`<bdf>: <why>`).
    pub overridden: Vec<String>,
    /// Journal files that could not be used (damaged, oversized, not regular files): each
    /// was skipped, and says why.
    pub problems: Vec<String>,
}

/// Binds the requested devices (and, by the request's group mode, their group) to vfio:
/// gathers the facts, plans, loads missing modules, then moves each device.
pub fn bind(env: &Env<'_>, req: &BindRequest) -> Result<Report> {
    let mut report = Report {
        dry_run: req.dry_run,
        ..Report::default()
    };
    let devices = gather::expand(&env.bus, &req.devices, req.group, &mut report.messages)?;
    let candidates = gather::candidates(env, devices, req.driver.as_ref(), &mut report.messages)?;
    let ctx = plan::PlanContext {
        paths: env.bus.paths(),
        noiommu: env.bus.noiommu_enabled(),
        forced_driver: req.driver.is_some(),
        force: req.force,
    };
    let plan = plan::plan_bind(ctx, &candidates, &|d| env.bus.has_driver(d))?;
    report.overridden.extend(plan.overridden.iter().cloned());
    report.devices.extend(plan.already.iter().cloned());
    apply::load_modules(&env.bus, env.loader, &plan, req.dry_run, &mut report)?;
    if req.dry_run {
        apply::dry_run(&plan, &mut report);
    } else {
        apply::bind_moves(env, &plan, &mut report)?;
    }
    report.devices.sort_by_key(|d| d.bdf);
    Ok(report)
}

/// The journal entries in `state_dir` (no lock taken, nothing changed), in numeric PCI
/// order, and the files that could not be used.
pub fn journal_entries(state_dir: &Path) -> Result<Listing> {
    list_entries(state_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

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
