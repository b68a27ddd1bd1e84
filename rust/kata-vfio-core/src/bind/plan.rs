//! Plans: which devices a bind moves, to which driver, with which sysfs writes, which
//! modules must load first, and what refuses it; and the writes that undo a bind. Pure
//! functions of facts already read (no I/O), so every rule is tested without a host.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::journal::JournalEntry;
use super::names::{is_vfio_driver, DriverName, ModuleName};
use super::sysfs::{BusPaths, DeviceFacts, DriverState};
use super::{Action, DeviceOutcome};
use crate::bdf::Bdf;
use crate::error::{Error, Remedy, Result};

/// The kind of a sysfs write, for the error handling it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Override,
    Unbind,
    Probe,
    Bind,
}

/// One planned sysfs write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kind: StepKind,
    pub path: PathBuf,
    pub value: String,
    /// The driver an unbind or bind step names.
    pub driver: Option<DriverName>,
}

/// Writes `value` to `driver_override` (`None`: a lone newline, which clears it).
pub fn override_step(paths: &BusPaths, bdf: Bdf, value: Option<&str>) -> Step {
    Step {
        kind: StepKind::Override,
        path: paths.override_path(bdf),
        value: value.map_or_else(|| "\n".to_owned(), ToOwned::to_owned),
        driver: None,
    }
}

/// Writes the address to `drivers/<driver>/unbind`.
pub fn unbind_step(paths: &BusPaths, bdf: Bdf, driver: &DriverName) -> Step {
    Step {
        kind: StepKind::Unbind,
        path: paths.driver_dir(driver).join("unbind"),
        value: bdf.to_string(),
        driver: Some(driver.clone()),
    }
}

/// Writes the address to `drivers_probe`.
pub fn probe_step(paths: &BusPaths, bdf: Bdf) -> Step {
    Step {
        kind: StepKind::Probe,
        path: paths.probe_path(),
        value: bdf.to_string(),
        driver: None,
    }
}

/// Writes the address to `drivers/<driver>/bind`.
pub fn bind_step(paths: &BusPaths, bdf: Bdf, driver: &DriverName) -> Step {
    Step {
        kind: StepKind::Bind,
        path: paths.driver_dir(driver).join("bind"),
        value: bdf.to_string(),
        driver: Some(driver.clone()),
    }
}

/// A driver name read from the host, validated before it is joined into a path.
pub fn parse_driver(name: &str, bdf: Bdf, what: &str) -> Result<DriverName> {
    DriverName::parse(name).map_err(|e| Error::Bind {
        message: format!(
            "{bdf}: its {what} {name:?} is not a valid driver name, so it could not be restored ({e})"
        ),
        errno: None,
        hint: Some("clear or fix it by hand first".to_owned()),
        remedies: Vec::new(),
    })
}

/// Whether a device on `state` already counts as bound for `target` (any vfio driver does,
/// unless a driver was forced).
pub fn already_bound(state: &DriverState, target: &DriverName, forced_driver: bool) -> bool {
    let current = state.driver.as_deref();
    current == Some(target.as_str()) || (!forced_driver && current.is_some_and(is_vfio_driver))
}

/// The writes that move a device from `state` to `target`: the override, the unbind of the
/// current driver (when there is one), the probe.
pub fn bind_steps(
    paths: &BusPaths,
    bdf: Bdf,
    target: &DriverName,
    state: &DriverState,
) -> Result<Vec<Step>> {
    let mut steps = vec![override_step(paths, bdf, Some(target.as_str()))];
    if let Some(current) = &state.driver {
        steps.push(unbind_step(
            paths,
            bdf,
            &parse_driver(current, bdf, "driver")?,
        ));
    }
    steps.push(probe_step(paths, bdf));
    Ok(steps)
}

/// The writes that take a device from `now` back to `entry`'s original state.
pub fn restore_steps(
    paths: &BusPaths,
    entry: &JournalEntry,
    now: &DriverState,
) -> Result<Vec<Step>> {
    let want_override = entry.driver_override.as_ref().map(DriverName::as_str);
    let want_driver = entry.driver.as_ref().map(DriverName::as_str);
    let mut steps = Vec::new();
    if now.driver_override.as_deref() != want_override {
        steps.push(override_step(paths, entry.bdf, want_override));
    }
    if now.driver.as_deref() != want_driver {
        if let Some(current) = &now.driver {
            steps.push(unbind_step(
                paths,
                entry.bdf,
                &parse_driver(current, entry.bdf, "driver")?,
            ));
        }
        if entry.driver.is_some() {
            steps.push(probe_step(paths, entry.bdf));
        }
    }
    Ok(steps)
}

/// The writes that take a device with no journal entry off its vfio driver (clear a vfio
/// override, unbind, probe); `None` when it is not on a vfio driver.
pub fn unbind_steps(paths: &BusPaths, bdf: Bdf, state: &DriverState) -> Result<Option<Vec<Step>>> {
    let Some(current) = state.driver.as_deref().filter(|d| is_vfio_driver(d)) else {
        return Ok(None);
    };
    let current = parse_driver(current, bdf, "driver")?;
    let mut steps = Vec::new();
    if state.driver_override.as_deref().is_some_and(is_vfio_driver) {
        steps.push(override_step(paths, bdf, None));
    }
    steps.push(unbind_step(paths, bdf, &current));
    steps.push(probe_step(paths, bdf));
    Ok(Some(steps))
}

/// The driver a step list takes a device away from, when it unbinds one.
pub fn unbinds(steps: &[Step]) -> Option<&DriverName> {
    steps
        .iter()
        .find(|s| s.kind == StepKind::Unbind)
        .and_then(|s| s.driver.as_ref())
}

/// One device a bind covers, with everything the plan needs to know about it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub facts: DeviceFacts,
    /// The driver it goes to, and the module that provides it.
    pub target: DriverName,
    pub module: ModuleName,
    /// The device has a `driver_override` attribute.
    pub has_override: bool,
    /// Why the host is using or needs it (asked only of devices that are not bound yet).
    pub in_use: Vec<String>,
}

/// The host-wide facts a bind plan needs.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext<'a> {
    pub paths: &'a BusPaths,
    /// vfio runs without an IOMMU (`enable_unsafe_noiommu_mode`).
    pub noiommu: bool,
    /// A driver was named: only that driver counts as bound.
    pub forced_driver: bool,
    /// Take devices the host is using or needs anyway (the force option).
    pub force: bool,
}

/// A device the bind moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub facts: DeviceFacts,
    pub target: DriverName,
    /// The writes, from the state the facts saw (re-planned from the live state when
    /// applied).
    pub steps: Vec<Step>,
    /// What the journal records before the first write.
    pub entry: JournalEntry,
}

/// What a bind will do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindPlan {
    /// Devices already on their vfio driver: nothing to write.
    pub already: Vec<DeviceOutcome>,
    /// Devices to move, in numeric PCI order.
    pub moves: Vec<Move>,
    /// Drivers not registered yet, with the module that provides each.
    pub modules: Vec<(DriverName, ModuleName)>,
    /// The refusals the force option overrode, one per reason (`<bdf>: <reason>`).
    pub overridden: Vec<String>,
}

/// Plans a bind of `candidates` (numeric order); `registered` says whether a driver is
/// registered now. Refuses, before anything is written: a device without an IOMMU group
/// (unless vfio runs without one), without `driver_override`, or that the host is using
/// (unless forced; then the plan says what it overrode).
pub fn plan_bind(
    ctx: PlanContext<'_>,
    candidates: &[Candidate],
    registered: &dyn Fn(&DriverName) -> bool,
) -> Result<BindPlan> {
    let mut plan = BindPlan::default();
    for c in candidates {
        let bdf = c.facts.bdf;
        if c.facts.group.is_none() && !ctx.noiommu {
            return Err(Error::bind(
                format!("{bdf} has no IOMMU group: the IOMMU is off, so vfio-pci cannot take it"),
                "enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line) and reboot",
                &[Remedy::CheckIommu],
            ));
        }
        if !c.has_override {
            return Err(Error::bind(
                format!("{bdf} has no driver_override attribute"),
                "driver_override needs Linux 3.16 or later",
                &[],
            ));
        }
    }
    let mut refusals = Vec::new();
    for c in candidates {
        let state = &c.facts.state;
        if already_bound(state, &c.target, ctx.forced_driver) {
            plan.already.push(DeviceOutcome {
                bdf: c.facts.bdf,
                group: c.facts.group,
                before: state.clone(),
                after: state.clone(),
                target: Some(c.target.to_string()),
                action: Action::AlreadyBound,
            });
            continue;
        }
        for reason in &c.in_use {
            refusals.push(format!("{}: {reason}", c.facts.bdf));
        }
        plan.moves.push(Move {
            facts: c.facts.clone(),
            target: c.target.clone(),
            steps: bind_steps(ctx.paths, c.facts.bdf, &c.target, state)?,
            entry: JournalEntry {
                bdf: c.facts.bdf,
                group: c.facts.group,
                driver: state
                    .driver
                    .as_deref()
                    .map(|d| parse_driver(d, c.facts.bdf, "driver"))
                    .transpose()?,
                driver_override: state
                    .driver_override
                    .as_deref()
                    .map(|d| parse_driver(d, c.facts.bdf, "driver_override"))
                    .transpose()?,
                target: c.target.clone(),
            },
        });
    }
    if !refusals.is_empty() {
        if !ctx.force {
            return Err(Error::bind(
                format!(
                    "refusing to take devices the host is using or needs: {}",
                    refusals.join("; ")
                ),
                "stop using them first",
                &[Remedy::Force],
            ));
        }
        plan.overridden = refusals;
    }
    let mut needed: BTreeMap<&DriverName, &ModuleName> = BTreeMap::new();
    for (m, c) in plan.moves.iter().filter_map(|m| {
        candidates
            .iter()
            .find(|c| c.facts.bdf == m.facts.bdf)
            .map(|c| (m, c))
    }) {
        if !registered(&m.target) {
            needed.insert(&m.target, &c.module);
        }
    }
    plan.modules = needed
        .into_iter()
        .map(|(d, m)| (d.clone(), m.clone()))
        .collect();
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bdf(text: &str) -> Bdf {
        Bdf::parse(text).expect("bdf")
    }

    fn name(text: &str) -> DriverName {
        DriverName::parse(text).expect("driver")
    }

    fn state(driver: Option<&str>, driver_override: Option<&str>) -> DriverState {
        DriverState {
            driver: driver.map(ToOwned::to_owned),
            driver_override: driver_override.map(ToOwned::to_owned),
        }
    }

    fn candidate(addr: &str, driver: Option<&str>) -> Candidate {
        Candidate {
            facts: DeviceFacts {
                bdf: bdf(addr),
                class_code: 0x020000,
                group: Some(12),
                modalias: None,
                state: state(driver, None),
            },
            target: DriverName::vfio_pci(),
            module: ModuleName::parse("vfio_pci").expect("module"),
            has_override: true,
            in_use: Vec::new(),
        }
    }

    fn ctx(paths: &BusPaths) -> PlanContext<'_> {
        PlanContext {
            paths,
            noiommu: false,
            forced_driver: false,
            force: false,
        }
    }

    fn writes(steps: &[Step]) -> Vec<(String, String)> {
        steps
            .iter()
            .map(|s| (s.path.display().to_string(), s.value.clone()))
            .collect()
    }

    fn entry(driver: Option<&str>, driver_override: Option<&str>) -> JournalEntry {
        JournalEntry {
            bdf: bdf("0000:05:00.0"),
            group: Some(12),
            driver: driver.map(name),
            driver_override: driver_override.map(name),
            target: DriverName::vfio_pci(),
        }
    }

    fn restore_plan(entry: &JournalEntry, now: &DriverState) -> Vec<(String, String)> {
        writes(&restore_steps(&BusPaths::new("/sys"), entry, now).expect("plan"))
    }

    #[test]
    fn a_group_with_one_bound_function_moves_only_the_other() {
        let paths = BusPaths::new("/sys");
        let plan = plan_bind(
            ctx(&paths),
            &[
                candidate("0000:05:00.0", Some("vfio-pci")),
                candidate("0000:05:00.1", Some("e1000e")),
            ],
            &|_| true,
        )
        .expect("plan");
        assert_eq!(plan.already.len(), 1);
        assert_eq!(plan.already[0].action, Action::AlreadyBound);
        let [one] = plan.moves.as_slice() else {
            panic!("one move: {plan:?}")
        };
        assert_eq!(
            writes(&one.steps),
            [
                (
                    "/sys/bus/pci/devices/0000:05:00.1/driver_override".into(),
                    "vfio-pci".into()
                ),
                (
                    "/sys/bus/pci/drivers/e1000e/unbind".into(),
                    "0000:05:00.1".into()
                ),
                ("/sys/bus/pci/drivers_probe".into(), "0000:05:00.1".into()),
            ]
        );
        assert_eq!(one.entry.driver, Some(name("e1000e")));
        assert!(plan.modules.is_empty());
    }

    #[test]
    fn an_unbound_device_is_not_unbound_and_a_variant_counts_as_bound() {
        let paths = BusPaths::new("/sys");
        let plan = plan_bind(
            ctx(&paths),
            &[
                candidate("0000:01:00.0", None),
                candidate("0000:02:00.0", Some("mlx5_vfio_pci")),
            ],
            &|_| true,
        )
        .expect("plan");
        assert_eq!(plan.moves.len(), 1);
        let kinds: Vec<StepKind> = plan.moves[0].steps.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [StepKind::Override, StepKind::Probe]);
        assert_eq!(plan.already[0].bdf, bdf("0000:02:00.0"));
        // A forced driver: only that driver counts.
        let forced = PlanContext {
            forced_driver: true,
            ..ctx(&paths)
        };
        let plan = plan_bind(
            forced,
            &[candidate("0000:02:00.0", Some("mlx5_vfio_pci"))],
            &|_| true,
        )
        .expect("plan");
        assert_eq!(plan.moves.len(), 1);
    }

    #[test]
    fn devices_in_use_are_refused_unless_forced_and_the_plan_says_so() {
        let paths = BusPaths::new("/sys");
        let mut busy = candidate("0000:04:00.0", Some("nvme"));
        busy.in_use = vec!["block device nvme0n1p2 is mounted at /".to_owned()];
        let err = plan_bind(ctx(&paths), &[busy.clone()], &|_| true).expect_err("refused");
        assert!(
            err.to_string()
                .contains("0000:04:00.0: block device nvme0n1p2 is mounted at /"),
            "{err}"
        );
        let forced = PlanContext {
            force: true,
            ..ctx(&paths)
        };
        let plan = plan_bind(forced, &[busy.clone()], &|_| true).expect("forced");
        assert_eq!(plan.moves.len(), 1);
        assert_eq!(
            plan.overridden,
            ["0000:04:00.0: block device nvme0n1p2 is mounted at /"],
            "{plan:?}"
        );
        // In use but already bound: nothing moves, nothing is refused.
        busy.facts.state = state(Some("vfio-pci"), Some("vfio-pci"));
        assert!(plan_bind(ctx(&paths), &[busy], &|_| true).is_ok());
    }

    #[test]
    fn no_iommu_group_or_no_override_is_refused() {
        let paths = BusPaths::new("/sys");
        let mut lone = candidate("0000:01:00.0", Some("e1000e"));
        lone.facts.group = None;
        let err = plan_bind(ctx(&paths), &[lone.clone()], &|_| true).expect_err("no group");
        assert!(err.hint().unwrap_or_default().contains("intel_iommu=on"));
        let noiommu = PlanContext {
            noiommu: true,
            ..ctx(&paths)
        };
        assert!(plan_bind(noiommu, &[lone], &|_| true).is_ok());
        let mut old = candidate("0000:01:00.0", Some("e1000e"));
        old.has_override = false;
        assert!(plan_bind(ctx(&paths), &[old], &|_| true).is_err());
    }

    #[test]
    fn modules_of_unregistered_targets_load_once() {
        let paths = BusPaths::new("/sys");
        let plan = plan_bind(
            ctx(&paths),
            &[
                candidate("0000:05:00.0", Some("e1000e")),
                candidate("0000:05:00.1", Some("e1000e")),
            ],
            &|d| d.as_str() != "vfio-pci",
        )
        .expect("plan");
        assert_eq!(
            plan.modules,
            [(
                DriverName::vfio_pci(),
                ModuleName::parse("vfio_pci").expect("module")
            )]
        );
    }

    #[test]
    fn a_driver_name_that_is_not_one_is_refused() {
        let paths = BusPaths::new("/sys");
        let mut odd = candidate("0000:01:00.0", None);
        odd.facts.state = state(Some("e1000e"), Some("../../x"));
        assert!(plan_bind(ctx(&paths), &[odd], &|_| true).is_err());
    }

    #[test]
    fn restore_undoes_a_finished_bind() {
        let steps = restore_plan(
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
        let steps = restore_plan(
            &entry(Some("e1000e"), None),
            &state(Some("e1000e"), Some("vfio-pci")),
        );
        assert_eq!(steps.len(), 1);
        // Killed after the unbind: no unbind to do, just the probe.
        let steps = restore_plan(&entry(Some("e1000e"), None), &state(None, None));
        assert_eq!(
            steps,
            [("/sys/bus/pci/drivers_probe".into(), "0000:05:00.0".into())]
        );
        // Nothing was written: nothing to do.
        assert!(
            restore_plan(&entry(Some("e1000e"), None), &state(Some("e1000e"), None)).is_empty()
        );
    }

    #[test]
    fn an_unbound_original_is_not_probed_and_an_override_comes_back() {
        let steps = restore_plan(
            &entry(None, None),
            &state(Some("vfio-pci"), Some("vfio-pci")),
        );
        assert_eq!(
            steps.last().map(|s| s.0.as_str()),
            Some("/sys/bus/pci/drivers/vfio-pci/unbind")
        );
        let steps = restore_plan(
            &entry(Some("e1000e"), Some("e1000e")),
            &state(Some("vfio-pci"), Some("vfio-pci")),
        );
        assert_eq!(steps[0].1, "e1000e");
    }

    #[test]
    fn unbind_without_a_journal_touches_only_vfio_drivers() {
        let paths = BusPaths::new("/sys");
        let b = bdf("0000:01:00.0");
        assert_eq!(
            unbind_steps(&paths, b, &state(Some("e1000e"), None)).expect("plan"),
            None
        );
        let steps = unbind_steps(&paths, b, &state(Some("vfio-pci"), Some("vfio-pci")))
            .expect("plan")
            .expect("steps");
        assert_eq!(steps.len(), 3);
        assert_eq!(unbinds(&steps), Some(&DriverName::vfio_pci()));
        let steps = unbind_steps(&paths, b, &state(Some("vfio-pci"), Some("e1000e")))
            .expect("plan")
            .expect("steps");
        assert_eq!(steps[0].kind, StepKind::Unbind, "a foreign override stays");
    }
}
