//! Binding as Python functions: bind, unbind, restore, the journal. The work runs with the
//! GIL released; an injected sysfs writer or module loader (Python callables, for tests and
//! simulators) re-attaches only for its own call.

use std::io;
use std::path::{Path, PathBuf};

use kata_vfio_core::bind::{
    self, BindRequest, DeviceOutcome, DriverName, Env, FsWriter, GroupMode, JournalEntry, Modprobe,
    ModuleLoader, ModuleName, NoModules, PciBus, Report, RetryPolicy, SysfsWrite, SysfsWriter,
};
use kata_vfio_core::Bdf;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::bdf::{extract_bdf, PyBdf};
use crate::errors::BindingResult;

/// A Python callable `writer(path: str, data: bytes) -> None` used as the sysfs writer; an
/// `OSError` it raises keeps its errno.
struct PyWriter(Py<PyAny>);

impl SysfsWriter for PyWriter {
    fn write(&self, path: &Path, value: &[u8]) -> io::Result<()> {
        Python::attach(|py| {
            let args = (path.display().to_string(), PyBytes::new(py, value));
            match self.0.call1(py, args) {
                Ok(_) => Ok(()),
                Err(err) => Err(to_io_error(py, &err)),
            }
        })
    }
}

fn to_io_error(py: Python<'_>, err: &PyErr) -> io::Error {
    if err.is_instance_of::<PyOSError>(py) {
        if let Ok(Some(errno)) = err
            .value(py)
            .getattr("errno")
            .and_then(|e| e.extract::<Option<i32>>())
        {
            return io::Error::from_raw_os_error(errno);
        }
    }
    io::Error::other(err.to_string())
}

/// A Python callable `loader(module: str) -> None` used to load kernel modules.
struct PyLoader(Py<PyAny>);

impl ModuleLoader for PyLoader {
    fn load(&self, module: &ModuleName) -> Result<(), String> {
        Python::attach(|py| {
            self.0
                .call1(py, (module.as_str(),))
                .map(drop)
                .map_err(|e| e.value(py).to_string())
        })
    }
}

/// The host's own sysfs: the only tree the real modprobe may be run for.
const REAL_SYSFS: &str = "/sys";
/// The modprobe run for the real `/sys` when none is named.
const DEFAULT_MODPROBE: &str = "/sbin/modprobe";

/// The environment options shared by bind, unbind and restore.
struct EnvSpec {
    sysfs_root: PathBuf,
    dev_root: PathBuf,
    proc_root: PathBuf,
    state_dir: PathBuf,
    modules_root: PathBuf,
    kernel_release: Option<String>,
    modprobe: Option<PathBuf>,
    module_loader: Option<Py<PyAny>>,
    sysfs_writer: Option<Py<PyAny>>,
}

impl EnvSpec {
    /// The roots and writer; no module loading (only bind loads modules).
    fn new(
        sysfs_root: &str,
        dev_root: &str,
        proc_root: &str,
        state_dir: &str,
        sysfs_writer: Option<Py<PyAny>>,
    ) -> Self {
        Self {
            sysfs_root: sysfs_root.into(),
            dev_root: dev_root.into(),
            proc_root: proc_root.into(),
            state_dir: state_dir.into(),
            modules_root: "/".into(),
            kernel_release: None,
            modprobe: None,
            module_loader: None,
            sysfs_writer,
        }
    }

    /// The module loader: the injected one, else modprobe (the named program, or
    /// `/sbin/modprobe` for the real `/sys` only: for any other tree the real modprobe
    /// would change this host instead of the tree).
    fn loader(&mut self) -> Box<dyn ModuleLoader> {
        if let Some(callable) = self.module_loader.take() {
            return Box::new(PyLoader(callable));
        }
        let program = match self.modprobe.take() {
            Some(program) => program,
            None if self.sysfs_root == Path::new(REAL_SYSFS) => DEFAULT_MODPROBE.into(),
            None => {
                return Box::new(NoModules {
                    reason: format!(
                    "{} is not this host's /sys, and the real modprobe would load into this host; \
                         register the driver in the tree, or pass a module loader",
                    self.sysfs_root.display()
                ),
                })
            }
        };
        Box::new(Modprobe { program })
    }

    /// Runs `f` with the GIL released and an [`Env`] built from these options.
    fn run<T: Send>(
        mut self,
        py: Python<'_>,
        f: impl FnOnce(&Env<'_>) -> kata_vfio_core::Result<T> + Send,
    ) -> kata_vfio_core::Result<T> {
        let loader = self.loader();
        py.detach(move || {
            let bus = PciBus::open(self.sysfs_root)?;
            let fs_writer = FsWriter::new(&bus);
            let py_writer = self.sysfs_writer.map(PyWriter);
            let writer: &dyn SysfsWriter = match &py_writer {
                Some(w) => w,
                None => &fs_writer,
            };
            let env = Env {
                bus,
                dev_root: self.dev_root,
                proc_root: self.proc_root,
                state_dir: self.state_dir,
                modules_root: self.modules_root,
                kernel_release: self.kernel_release,
                writer,
                loader: loader.as_ref(),
                retry: RetryPolicy::default(),
            };
            f(&env)
        })
    }
}

fn group_mode(group: Option<bool>) -> GroupMode {
    match group {
        None => GroupMode::Auto,
        Some(true) => GroupMode::Whole,
        Some(false) => GroupMode::Single,
    }
}

fn extract_bdfs(devices: &Bound<'_, PyAny>) -> BindingResult<Vec<Bdf>> {
    devices
        .try_iter()?
        .map(|item| extract_bdf(&item?))
        .collect()
}

/// A Python literal for an optional string (`'e1000e'` or `None`).
fn py_str(value: Option<&str>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| format!("'{v}'"))
}

/// One sysfs write (performed, or planned in a dry run).
#[pyclass(
    frozen,
    eq,
    hash,
    skip_from_py_object,
    module = "kata_vfio._core",
    name = "SysfsWrite"
)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PySysfsWrite(SysfsWrite);

#[pymethods]
impl PySysfsWrite {
    #[getter]
    fn path(&self) -> String {
        self.0.path.display().to_string()
    }
    /// Exactly the text written (`"\n"` clears an override).
    #[getter]
    fn value(&self) -> &str {
        &self.0.value
    }
    fn __repr__(&self) -> String {
        format!(
            "SysfsWrite(path='{}', value={:?})",
            self.0.path.display(),
            self.0.value
        )
    }
}

/// What happened to one device.
#[pyclass(
    frozen,
    eq,
    hash,
    skip_from_py_object,
    module = "kata_vfio._core",
    name = "BindOutcome"
)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PyBindOutcome(DeviceOutcome);

#[pymethods]
impl PyBindOutcome {
    #[getter]
    fn bdf(&self) -> PyBdf {
        PyBdf(self.0.bdf)
    }
    #[getter]
    fn group(&self) -> Option<u32> {
        self.0.group
    }
    #[getter]
    fn driver_before(&self) -> Option<&str> {
        self.0.before.driver.as_deref()
    }
    #[getter]
    fn override_before(&self) -> Option<&str> {
        self.0.before.driver_override.as_deref()
    }
    #[getter]
    fn driver_after(&self) -> Option<&str> {
        self.0.after.driver.as_deref()
    }
    #[getter]
    fn override_after(&self) -> Option<&str> {
        self.0.after.driver_override.as_deref()
    }
    #[getter]
    fn target(&self) -> Option<&str> {
        self.0.target.as_deref()
    }
    /// `bound`, `already-bound`, `restored`, `unbound` or `unchanged`.
    #[getter]
    fn action(&self) -> &'static str {
        self.0.action.as_str()
    }
    fn __repr__(&self) -> String {
        format!(
            "BindOutcome(bdf='{}', action='{}', driver_before={}, driver_after={})",
            self.0.bdf,
            self.0.action.as_str(),
            py_str(self.0.before.driver.as_deref()),
            py_str(self.0.after.driver.as_deref())
        )
    }
}

/// The result of bind, unbind or restore.
#[pyclass(
    frozen,
    eq,
    hash,
    skip_from_py_object,
    module = "kata_vfio._core",
    name = "BindReport"
)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PyBindReport(Report);

#[pymethods]
impl PyBindReport {
    #[getter]
    fn dry_run(&self) -> bool {
        self.0.dry_run
    }
    #[getter]
    fn devices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.0.devices.iter().cloned().map(PyBindOutcome))
    }
    #[getter]
    fn writes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.0.writes.iter().cloned().map(PySysfsWrite))
    }
    #[getter]
    fn modules<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.0.modules)
    }
    #[getter]
    fn messages<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.0.messages)
    }
    /// The refusals `force=True` overrode, one per reason.
    #[getter]
    fn overridden<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.0.overridden)
    }
    /// Journal files that were damaged and skipped, each saying why.
    #[getter]
    fn problems<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.0.problems)
    }
    fn __repr__(&self) -> String {
        format!(
            "BindReport(dry_run={}, devices={}, writes={})",
            if self.0.dry_run { "True" } else { "False" },
            self.0.devices.len(),
            self.0.writes.len()
        )
    }
}

/// One journal entry: a device's state before kata-vfio bound it.
#[pyclass(
    frozen,
    eq,
    hash,
    skip_from_py_object,
    module = "kata_vfio._core",
    name = "JournalEntry"
)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PyJournalEntry(JournalEntry);

#[pymethods]
impl PyJournalEntry {
    #[getter]
    fn bdf(&self) -> PyBdf {
        PyBdf(self.0.bdf)
    }
    #[getter]
    fn group(&self) -> Option<u32> {
        self.0.group
    }
    #[getter]
    fn driver(&self) -> Option<&str> {
        self.0.driver.as_ref().map(DriverName::as_str)
    }
    #[getter]
    fn driver_override(&self) -> Option<&str> {
        self.0.driver_override.as_ref().map(DriverName::as_str)
    }
    #[getter]
    fn target(&self) -> &str {
        self.0.target.as_str()
    }
    fn __repr__(&self) -> String {
        format!(
            "JournalEntry(bdf='{}', driver={}, target='{}')",
            self.0.bdf,
            py_str(self.0.driver.as_ref().map(DriverName::as_str)),
            self.0.target
        )
    }
}

/// Binds devices (and, by default, the rest of their multi-endpoint IOMMU group) to
/// vfio-pci or their vfio variant driver.
#[pyfunction]
#[pyo3(signature = (
    devices, *, sysfs_root = "/sys", dev_root = "/dev", proc_root = "/proc",
    state_dir = "/run/kata-vfio", group = None, driver = None, force = false, dry_run = false,
    modules_root = "/", kernel_release = None, modprobe = None, module_loader = None,
    sysfs_writer = None
))]
#[allow(clippy::too_many_arguments, clippy::fn_params_excessive_bools)] // mirrors the Python keywords
pub fn bind_devices(
    py: Python<'_>,
    devices: &Bound<'_, PyAny>,
    sysfs_root: &str,
    dev_root: &str,
    proc_root: &str,
    state_dir: &str,
    group: Option<bool>,
    driver: Option<&str>,
    force: bool,
    dry_run: bool,
    modules_root: &str,
    kernel_release: Option<String>,
    modprobe: Option<&str>,
    module_loader: Option<Py<PyAny>>,
    sysfs_writer: Option<Py<PyAny>>,
) -> BindingResult<PyBindReport> {
    let request = BindRequest {
        devices: extract_bdfs(devices)?,
        group: group_mode(group),
        driver: driver.map(DriverName::parse).transpose()?,
        force,
        dry_run,
    };
    let spec = EnvSpec {
        modules_root: modules_root.into(),
        kernel_release,
        modprobe: modprobe.map(PathBuf::from),
        module_loader,
        ..EnvSpec::new(sysfs_root, dev_root, proc_root, state_dir, sysfs_writer)
    };
    let report = spec.run(py, |env| bind::bind(env, &request))?;
    Ok(PyBindReport(report))
}

/// Puts journaled devices back to their original driver and override: all of them, or
/// those in the groups of `devices`.
#[pyfunction]
#[pyo3(signature = (
    devices = None, *, sysfs_root = "/sys", dev_root = "/dev", proc_root = "/proc",
    state_dir = "/run/kata-vfio", force = false, dry_run = false, sysfs_writer = None
))]
#[allow(clippy::too_many_arguments)] // mirrors the Python keywords
pub fn restore_devices(
    py: Python<'_>,
    devices: Option<&Bound<'_, PyAny>>,
    sysfs_root: &str,
    dev_root: &str,
    proc_root: &str,
    state_dir: &str,
    force: bool,
    dry_run: bool,
    sysfs_writer: Option<Py<PyAny>>,
) -> BindingResult<PyBindReport> {
    let devices = devices.map(extract_bdfs).transpose()?;
    let spec = EnvSpec::new(sysfs_root, dev_root, proc_root, state_dir, sysfs_writer);
    let report = spec.run(py, |env| {
        bind::restore(env, devices.as_deref(), force, dry_run)
    })?;
    Ok(PyBindReport(report))
}

/// Takes devices off vfio (journaled ones back to their recorded state, others re-probed
/// to their host driver).
#[pyfunction]
#[pyo3(signature = (
    devices, *, sysfs_root = "/sys", dev_root = "/dev", proc_root = "/proc",
    state_dir = "/run/kata-vfio", group = None, force = false, dry_run = false,
    sysfs_writer = None
))]
#[allow(clippy::too_many_arguments)] // mirrors the Python keywords
pub fn unbind_devices(
    py: Python<'_>,
    devices: &Bound<'_, PyAny>,
    sysfs_root: &str,
    dev_root: &str,
    proc_root: &str,
    state_dir: &str,
    group: Option<bool>,
    force: bool,
    dry_run: bool,
    sysfs_writer: Option<Py<PyAny>>,
) -> BindingResult<PyBindReport> {
    let devices = extract_bdfs(devices)?;
    let mode = group_mode(group);
    let spec = EnvSpec::new(sysfs_root, dev_root, proc_root, state_dir, sysfs_writer);
    let report = spec.run(py, |env| bind::unbind(env, &devices, mode, force, dry_run))?;
    Ok(PyBindReport(report))
}

/// The journal in `state_dir` (read without the lock, nothing changed): the usable entries
/// in numeric PCI order, and one message per damaged file (skipped).
#[pyfunction]
#[pyo3(signature = (state_dir = "/run/kata-vfio"))]
pub fn binding_journal<'py>(
    py: Python<'py>,
    state_dir: &str,
) -> BindingResult<(Bound<'py, PyTuple>, Bound<'py, PyTuple>)> {
    let dir = PathBuf::from(state_dir);
    let listing = py.detach(move || bind::journal_entries(&dir))?;
    let problems: Vec<String> = listing.problems.iter().map(ToString::to_string).collect();
    Ok((
        PyTuple::new(py, listing.entries.into_iter().map(PyJournalEntry))?,
        PyTuple::new(py, problems)?,
    ))
}
