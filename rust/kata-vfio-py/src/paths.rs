//! `kata_vfio.HostPaths`: where a host's sysfs, devfs and procfs are read and which modprobe
//! loads its modules, as one value. The defaults live here and nowhere else.

use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::PyString;

pub const DEFAULT_SYSFS: &str = "/sys";
pub const DEFAULT_DEVFS: &str = "/dev";
pub const DEFAULT_PROCFS: &str = "/proc";
pub const DEFAULT_MODPROBE: &str = "/sbin/modprobe";

#[pyclass(
    frozen,
    eq,
    hash,
    from_py_object,
    module = "kata_vfio._core",
    name = "HostPaths"
)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PyHostPaths {
    #[pyo3(get)]
    pub sysfs: String,
    #[pyo3(get)]
    pub devfs: String,
    #[pyo3(get)]
    pub procfs: String,
    #[pyo3(get)]
    pub modprobe: String,
}

impl PyHostPaths {
    /// The paths of a tree whose sysfs is at `sysfs`: this machine's for `/sys`, else the
    /// `dev` and `proc` directories beside it (a copied or fake host never mixes with ours).
    pub fn for_tree(sysfs: &str) -> Self {
        if Path::new(sysfs) == Path::new(DEFAULT_SYSFS) {
            return Self::default();
        }
        let parent = Path::new(sysfs).parent().unwrap_or_else(|| Path::new("/"));
        let beside = |name: &str| parent.join(name).to_string_lossy().into_owned();
        Self {
            sysfs: sysfs.to_owned(),
            devfs: beside("dev"),
            procfs: beside("proc"),
            modprobe: DEFAULT_MODPROBE.to_owned(),
        }
    }
}

impl Default for PyHostPaths {
    fn default() -> Self {
        Self {
            sysfs: DEFAULT_SYSFS.to_owned(),
            devfs: DEFAULT_DEVFS.to_owned(),
            procfs: DEFAULT_PROCFS.to_owned(),
            modprobe: DEFAULT_MODPROBE.to_owned(),
        }
    }
}

#[pymethods]
impl PyHostPaths {
    #[new]
    #[pyo3(signature = (sysfs = DEFAULT_SYSFS, devfs = DEFAULT_DEVFS, procfs = DEFAULT_PROCFS, modprobe = DEFAULT_MODPROBE))]
    fn new(sysfs: &str, devfs: &str, procfs: &str, modprobe: &str) -> Self {
        Self {
            sysfs: sysfs.to_owned(),
            devfs: devfs.to_owned(),
            procfs: procfs.to_owned(),
            modprobe: modprobe.to_owned(),
        }
    }

    /// The paths of a copied or fake host whose sysfs tree is at `sysfs`.
    #[staticmethod]
    #[pyo3(name = "for_tree")]
    fn py_for_tree(sysfs: &str) -> Self {
        Self::for_tree(sysfs)
    }

    /// A copy with the given fields changed.
    #[pyo3(signature = (*, sysfs = None, devfs = None, procfs = None, modprobe = None))]
    fn replace(
        &self,
        sysfs: Option<&str>,
        devfs: Option<&str>,
        procfs: Option<&str>,
        modprobe: Option<&str>,
    ) -> Self {
        let pick = |new: Option<&str>, old: &str| new.unwrap_or(old).to_owned();
        Self {
            sysfs: pick(sysfs, &self.sysfs),
            devfs: pick(devfs, &self.devfs),
            procfs: pick(procfs, &self.procfs),
            modprobe: pick(modprobe, &self.modprobe),
        }
    }

    /// True for this machine's own `/sys`.
    #[getter]
    fn is_live(&self) -> bool {
        Path::new(&self.sysfs) == Path::new(DEFAULT_SYSFS)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let quote = |text: &str| -> PyResult<String> {
            Ok(PyString::new(py, text).repr()?.to_str()?.to_owned())
        };
        Ok(format!(
            "HostPaths(sysfs={}, devfs={}, procfs={}, modprobe={})",
            quote(&self.sysfs)?,
            quote(&self.devfs)?,
            quote(&self.procfs)?,
            quote(&self.modprobe)?
        ))
    }
}

/// The paths a scan reads and the procfs to hand the core: `paths` given as a `HostPaths`,
/// or the separate roots (`None`: the core's own rule, `/proc` for `/sys`, else a `proc`
/// directory beside the tree when there is one).
pub fn scan_paths(
    sysfs_root: Option<&Bound<'_, PyAny>>,
    dev_root: Option<&str>,
    proc_root: Option<&str>,
) -> PyResult<(PyHostPaths, Option<String>)> {
    if let Some(given) = sysfs_root {
        if let Ok(paths) = given.cast::<PyHostPaths>() {
            if dev_root.is_some() || proc_root.is_some() {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "scan() takes either a HostPaths or separate roots, not both",
                ));
            }
            let paths = paths.get().clone();
            let procfs = paths.procfs.clone();
            return Ok((paths, Some(procfs)));
        }
    }
    let sysfs: String = match sysfs_root {
        Some(value) => value.extract()?,
        None => DEFAULT_SYSFS.to_owned(),
    };
    let mut paths = PyHostPaths::for_tree(&sysfs);
    dev_root
        .unwrap_or(DEFAULT_DEVFS)
        .clone_into(&mut paths.devfs);
    if let Some(proc_root) = proc_root {
        proc_root.clone_into(&mut paths.procfs);
    }
    Ok((paths, proc_root.map(str::to_owned)))
}
