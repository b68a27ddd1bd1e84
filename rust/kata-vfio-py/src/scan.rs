//! The scan's records as frozen Python classes, and `scan()` itself (GIL released).

use std::path::PathBuf;
use std::sync::Arc;

use kata_vfio_core::beneath::RootDir;
use kata_vfio_core::devnode::DevNode;
use kata_vfio_core::iommu::{BlockKind, Blocker, Fix, IommuGroup, NoFix};
use kata_vfio_core::pci::{Bar, Link, PciDevice};
use kata_vfio_core::status::IommuStatus;
use kata_vfio_core::sysfs::problem::ReadProblem;
use kata_vfio_core::{Bdf, Host, ScanOptions};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::bdf::{extract_bdf, PyBdf};
use crate::errors::BindingResult;
use crate::paths::{scan_paths, PyHostPaths};

fn bdf_tuple<'py>(py: Python<'py>, bdfs: &[Bdf]) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, bdfs.iter().map(|b| PyBdf(*b)))
}

fn opt_text(value: Option<&str>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| format!("'{v}'"))
}

/// Declares a frozen record class wrapping a core value, with value equality and hashing.
macro_rules! record {
    ($py_name:literal, $wrapper:ident, $inner:ty) => {
        #[pyclass(frozen, eq, hash, skip_from_py_object, module = "kata_vfio._core", name = $py_name)]
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $wrapper(pub $inner);
    };
}

record!("Bar", PyBar, Bar);
record!("PciLink", PyPciLink, Link);
record!("PciDevice", PyPciDevice, Arc<PciDevice>);
record!("Blocker", PyBlocker, Blocker);
record!("Fix", PyFix, Fix);
record!("ReadProblem", PyReadProblem, ReadProblem);
record!("IommuGroup", PyIommuGroup, Arc<IommuGroup>);
record!("IommuStatus", PyIommuStatus, IommuStatus);
record!("DevNode", PyDevNode, DevNode);

#[pymethods]
impl PyBar {
    #[getter]
    fn index(&self) -> u8 {
        self.0.index
    }
    #[getter]
    fn start(&self) -> u64 {
        self.0.start
    }
    #[getter]
    fn size(&self) -> u64 {
        self.0.size
    }
    #[getter]
    fn is_io(&self) -> bool {
        self.0.is_io
    }
    #[getter]
    fn is_64bit(&self) -> bool {
        self.0.is_64bit
    }
    #[getter]
    fn prefetchable(&self) -> bool {
        self.0.prefetchable
    }
    fn __repr__(&self) -> String {
        let b = &self.0;
        let kind = if b.is_io {
            "io"
        } else if b.is_64bit {
            "mem64"
        } else {
            "mem32"
        };
        let pref = if b.prefetchable { ", prefetchable" } else { "" };
        format!("Bar(index={}, size={:#x}, {kind}{pref})", b.index, b.size)
    }
}

#[pymethods]
impl PyPciLink {
    #[getter]
    fn current_speed(&self) -> Option<String> {
        self.0.current_speed.clone()
    }
    #[getter]
    fn current_width(&self) -> Option<u32> {
        self.0.current_width
    }
    #[getter]
    fn max_speed(&self) -> Option<String> {
        self.0.max_speed.clone()
    }
    #[getter]
    fn max_width(&self) -> Option<u32> {
        self.0.max_width
    }
    fn __repr__(&self) -> String {
        let l = &self.0;
        format!(
            "PciLink(current={} x{}, max={} x{})",
            l.current_speed.as_deref().unwrap_or("?"),
            l.current_width
                .map_or_else(|| "?".to_owned(), |w| w.to_string()),
            l.max_speed.as_deref().unwrap_or("?"),
            l.max_width
                .map_or_else(|| "?".to_owned(), |w| w.to_string()),
        )
    }
}

#[pymethods]
impl PyPciDevice {
    #[getter]
    fn bdf(&self) -> PyBdf {
        PyBdf(self.0.bdf)
    }
    #[getter]
    fn vendor(&self) -> u16 {
        self.0.vendor
    }
    #[getter]
    fn device(&self) -> u16 {
        self.0.device
    }
    #[getter]
    fn subsystem_vendor(&self) -> Option<u16> {
        self.0.subsystem_vendor
    }
    #[getter]
    fn subsystem_device(&self) -> Option<u16> {
        self.0.subsystem_device
    }
    #[getter]
    fn class_code(&self) -> u32 {
        self.0.class_code
    }
    #[getter]
    fn class_name(&self) -> &'static str {
        kata_vfio_core::pci::class_name(self.0.class_code)
    }
    #[getter]
    fn revision(&self) -> Option<u8> {
        self.0.revision
    }
    #[getter]
    fn driver(&self) -> Option<String> {
        self.0.driver.clone()
    }
    #[getter]
    fn driver_override(&self) -> Option<String> {
        self.0.driver_override.clone()
    }
    #[getter]
    fn iommu_group(&self) -> Option<u32> {
        self.0.iommu_group
    }
    #[getter]
    fn numa_node(&self) -> Option<u32> {
        self.0.numa_node
    }
    #[getter]
    fn physfn(&self) -> Option<PyBdf> {
        self.0.physfn.map(PyBdf)
    }
    #[getter]
    fn virtfns<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        bdf_tuple(py, &self.0.virtfns)
    }
    #[getter]
    fn sriov_totalvfs(&self) -> Option<u32> {
        self.0.sriov_totalvfs
    }
    #[getter]
    fn sriov_numvfs(&self) -> Option<u32> {
        self.0.sriov_numvfs
    }
    #[getter]
    fn upstream<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        bdf_tuple(py, &self.0.upstream)
    }
    #[getter]
    fn is_pcie(&self) -> bool {
        self.0.is_pcie
    }
    #[getter]
    fn vfio_cdev(&self) -> Option<String> {
        self.0.vfio_cdev.clone()
    }
    #[getter]
    fn sysfs_path(&self) -> String {
        self.0.sysfs_path.clone()
    }
    #[getter]
    fn is_bridge(&self) -> bool {
        self.0.is_bridge()
    }
    #[getter]
    fn is_host_bridge(&self) -> bool {
        self.0.is_host_bridge()
    }
    #[getter]
    fn is_endpoint(&self) -> bool {
        self.0.is_endpoint()
    }
    #[getter]
    fn is_vfio_bound(&self) -> bool {
        self.0.is_vfio_bound()
    }
    #[getter]
    fn boot_vga(&self) -> bool {
        self.0.boot_vga
    }
    #[getter]
    fn platform_function(&self) -> Option<&'static str> {
        self.0
            .platform_function()
            .map(kata_vfio_core::pci::PlatformFunction::as_str)
    }
    #[getter]
    fn problems<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.0.problems.iter().map(|p| PyReadProblem(*p)))
    }
    #[getter]
    fn has_details(&self) -> bool {
        self.0.details.is_some()
    }
    #[getter]
    fn bars<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.0
            .details
            .as_ref()
            .and_then(|d| d.bars.as_ref())
            .map(|bars| PyTuple::new(py, bars.iter().map(|b| PyBar(*b))))
            .transpose()
    }
    #[getter]
    fn large_bar(&self) -> Option<bool> {
        self.0
            .details
            .as_ref()
            .and_then(kata_vfio_core::pci::Details::large_bar)
    }
    #[getter]
    fn reset_methods<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        match self
            .0
            .details
            .as_ref()
            .and_then(|d| d.reset_methods.as_ref())
        {
            Some(methods) => PyTuple::new(py, methods).map(Some),
            None => Ok(None),
        }
    }
    #[getter]
    fn link(&self) -> Option<PyPciLink> {
        self.0
            .details
            .as_ref()
            .and_then(|d| d.link.clone())
            .map(PyPciLink)
    }
    fn __repr__(&self) -> String {
        let d = &self.0;
        format!(
            "PciDevice(bdf='{}', id={:04x}:{:04x}, class={:06x}, driver={}, iommu_group={})",
            d.bdf,
            d.vendor,
            d.device,
            d.class_code,
            opt_text(d.driver.as_deref()),
            d.iommu_group
                .map_or_else(|| "None".to_owned(), |g| g.to_string()),
        )
    }
}

#[pymethods]
impl PyReadProblem {
    #[getter]
    fn bdf(&self) -> PyBdf {
        PyBdf(self.0.bdf)
    }
    #[getter]
    fn attribute(&self) -> &'static str {
        self.0.attribute
    }
    #[getter]
    fn reason(&self) -> &'static str {
        self.0.failure.as_str()
    }
    #[getter]
    fn errno(&self) -> Option<i32> {
        self.0.failure.errno()
    }
    fn __repr__(&self) -> String {
        format!(
            "ReadProblem(bdf='{}', attribute='{}', reason='{}')",
            self.0.bdf,
            self.0.attribute,
            self.0.failure.as_str()
        )
    }
}

#[pymethods]
impl PyFix {
    #[getter]
    fn action(&self) -> &'static str {
        self.0.as_str()
    }
    #[getter]
    fn group(&self) -> Option<u32> {
        match self.0 {
            Fix::BindGroup { group } => Some(group),
            _ => None,
        }
    }
    #[getter]
    fn bdf(&self) -> Option<PyBdf> {
        match self.0 {
            Fix::BindGroup { .. } => None,
            Fix::BindDevice { bdf } | Fix::UnbindBridge { bdf } => Some(PyBdf(bdf)),
            Fix::Nothing(why) => Some(PyBdf(why.bdf())),
        }
    }
    #[getter]
    fn because(&self) -> Option<&'static str> {
        match self.0 {
            Fix::Nothing(why) => Some(why.as_str()),
            _ => None,
        }
    }
    #[getter]
    fn platform_function(&self) -> Option<&'static str> {
        match self.0 {
            Fix::Nothing(NoFix::PlatformFunction { function, .. }) => Some(function.as_str()),
            _ => None,
        }
    }
    fn __repr__(&self) -> String {
        let target = match self.0 {
            Fix::BindGroup { group } => format!("group={group}"),
            Fix::BindDevice { bdf } | Fix::UnbindBridge { bdf } => format!("bdf='{bdf}'"),
            Fix::Nothing(why) => format!("because='{}', bdf='{}'", why.as_str(), why.bdf()),
        };
        format!("Fix(action='{}', {target})", self.0.as_str())
    }
}

#[pymethods]
impl PyBlocker {
    #[getter]
    fn bdf(&self) -> PyBdf {
        PyBdf(self.0.bdf)
    }
    #[getter]
    fn driver(&self) -> Option<String> {
        self.0.driver.clone()
    }
    #[getter]
    fn group(&self) -> u32 {
        self.0.group
    }
    #[getter]
    fn kind(&self) -> &'static str {
        self.0.kind.as_str()
    }
    #[getter]
    fn problem(&self) -> Option<PyReadProblem> {
        match self.0.kind {
            BlockKind::Unknown { attribute, failure } => Some(PyReadProblem(ReadProblem {
                bdf: self.0.bdf,
                attribute,
                failure,
            })),
            _ => None,
        }
    }
    #[getter]
    fn fix(&self) -> PyFix {
        PyFix(self.0.fix)
    }
    #[getter]
    fn writes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let writes: Vec<(String, String)> = self
            .0
            .manual_writes()
            .into_iter()
            .map(|(path, value)| (path.to_string_lossy().into_owned(), value))
            .collect();
        PyTuple::new(py, writes)
    }
    #[getter]
    fn breaks_viability(&self) -> bool {
        self.0.breaks_viability()
    }
    fn __repr__(&self) -> String {
        format!(
            "Blocker(bdf='{}', driver={}, kind='{}', fix='{}')",
            self.0.bdf,
            opt_text(self.0.driver.as_deref()),
            self.0.kind.as_str(),
            self.0.fix.as_str()
        )
    }
}

#[pymethods]
impl PyIommuGroup {
    #[getter]
    fn id(&self) -> u32 {
        self.0.id
    }
    #[getter]
    fn devices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        bdf_tuple(py, &self.0.devices)
    }
    #[getter]
    fn endpoints<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        bdf_tuple(py, &self.0.endpoints)
    }
    #[getter]
    fn viable(&self) -> bool {
        self.0.viable
    }
    #[getter]
    fn assignable(&self) -> bool {
        self.0.assignable
    }
    #[getter]
    fn verdict(&self) -> &'static str {
        self.0.verdict.as_str()
    }
    #[getter]
    fn unplaced<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        bdf_tuple(py, &self.0.unplaced)
    }
    #[getter]
    fn listing_problem(&self) -> Option<&'static str> {
        self.0
            .listing_failure
            .map(kata_vfio_core::sysfs::problem::ReadFailure::as_str)
    }
    #[getter]
    fn blockers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.0.blockers.iter().cloned().map(PyBlocker))
    }
    fn __repr__(&self) -> String {
        let members: Vec<String> = self.0.devices.iter().map(ToString::to_string).collect();
        format!(
            "IommuGroup(id={}, devices=[{}], viable={}, assignable={})",
            self.0.id,
            members.join(", "),
            py_bool(self.0.viable),
            py_bool(self.0.assignable)
        )
    }
}

fn py_bool(value: bool) -> &'static str {
    if value {
        "True"
    } else {
        "False"
    }
}

#[pymethods]
impl PyIommuStatus {
    #[getter]
    fn enabled(&self) -> bool {
        self.0.enabled
    }
    #[getter]
    fn reasons<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.0.reasons)
    }
    #[getter]
    fn group_count(&self) -> u32 {
        self.0.group_count
    }
    #[getter]
    fn iommu_class<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.0.iommu_class)
    }
    #[getter]
    fn firmware_tables<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.0.firmware_tables)
    }
    #[getter]
    fn cmdline<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.0
            .cmdline
            .as_ref()
            .map(|c| PyTuple::new(py, c))
            .transpose()
    }
    #[getter]
    fn cpu_vendor(&self) -> Option<String> {
        self.0.cpu_vendor.clone()
    }
    #[getter]
    fn vfio_module(&self) -> bool {
        self.0.vfio_module
    }
    #[getter]
    fn vfio_pci_driver(&self) -> bool {
        self.0.vfio_pci_driver
    }
    #[getter]
    fn iommufd_module(&self) -> bool {
        self.0.iommufd_module
    }
    #[getter]
    fn vfio_container_node(&self) -> bool {
        self.0.vfio_container_node
    }
    #[getter]
    fn iommufd_node(&self) -> bool {
        self.0.iommufd_node
    }
    #[getter]
    fn noiommu(&self) -> bool {
        self.0.noiommu
    }
    #[getter]
    fn unreadable<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(
            py,
            self.0
                .unreadable
                .iter()
                .map(|(what, failure)| (*what, failure.as_str())),
        )
    }
    fn __repr__(&self) -> String {
        format!(
            "IommuStatus(enabled={}, group_count={}, noiommu={})",
            py_bool(self.0.enabled),
            self.0.group_count,
            py_bool(self.0.noiommu)
        )
    }
}

#[pymethods]
impl PyDevNode {
    #[getter]
    fn path(&self) -> String {
        self.0.path.clone()
    }
    #[getter]
    fn kind(&self) -> &'static str {
        self.0.kind.as_str()
    }
    #[getter]
    fn group(&self) -> Option<u32> {
        self.0.group
    }
    #[getter]
    fn cdev(&self) -> Option<String> {
        self.0.cdev.clone()
    }
    #[getter]
    fn bdfs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        bdf_tuple(py, &self.0.bdfs)
    }
    #[getter]
    fn major(&self) -> Option<u32> {
        self.0.major
    }
    #[getter]
    fn minor(&self) -> Option<u32> {
        self.0.minor
    }
    #[getter]
    fn is_vfio_device(&self) -> bool {
        self.0.is_vfio_device()
    }
    #[getter]
    fn is_control(&self) -> bool {
        self.0.is_control()
    }
    fn __repr__(&self) -> String {
        format!(
            "DevNode(path='{}', kind='{}', bdfs={})",
            self.0.path,
            self.0.kind.as_str(),
            self.0.bdfs.len()
        )
    }
}

/// Classifies a device path by name only.
#[pyfunction]
pub fn classify_devnode(path: &str) -> PyDevNode {
    PyDevNode(kata_vfio_core::devnode::classify(path))
}

/// A scan's snapshot. The Python records are built once, when the scan returns.
#[pyclass(frozen, module = "kata_vfio._core", name = "Host")]
#[derive(Debug)]
pub struct PyHost {
    inner: Arc<Host>,
    paths: PyHostPaths,
    devices: Py<PyTuple>,
    groups: Py<PyTuple>,
    iommu: Py<PyIommuStatus>,
}

impl PyHost {
    fn from_core(py: Python<'_>, host: Host, paths: PyHostPaths) -> PyResult<Self> {
        let devices = PyTuple::new(py, host.devices.iter().cloned().map(PyPciDevice))?.unbind();
        let groups = PyTuple::new(py, host.groups.iter().cloned().map(PyIommuGroup))?.unbind();
        let iommu = Py::new(py, PyIommuStatus(host.iommu.clone()))?;
        Ok(Self {
            inner: Arc::new(host),
            paths,
            devices,
            groups,
            iommu,
        })
    }

    fn not_found(what: &'static str, name: String) -> PyErr {
        crate::errors::BindingError::from(kata_vfio_core::Error::NotFound {
            what,
            name,
            hint: Some("the scan did not find it on this host".to_owned()),
            remedies: Vec::new(),
        })
        .into()
    }

    fn device_object<'py>(&self, py: Python<'py>, bdf: Bdf) -> Option<Bound<'py, PyAny>> {
        let index = self
            .inner
            .devices
            .binary_search_by_key(&bdf, |d| d.bdf)
            .ok()?;
        self.devices.bind(py).get_item(index).ok()
    }

    fn group_object<'py>(&self, py: Python<'py>, id: u32) -> Option<Bound<'py, PyAny>> {
        let index = self.inner.groups.binary_search_by_key(&id, |g| g.id).ok()?;
        self.groups.bind(py).get_item(index).ok()
    }
}

#[pymethods]
impl PyHost {
    #[getter]
    fn sysfs_root(&self) -> String {
        self.inner.sysfs_root.to_string_lossy().into_owned()
    }
    #[getter]
    fn dev_root(&self) -> String {
        self.inner.dev_root.to_string_lossy().into_owned()
    }
    #[getter]
    fn proc_root(&self) -> Option<String> {
        self.inner
            .proc_root
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
    }
    /// The paths this host was read from.
    #[getter]
    fn paths(&self) -> PyHostPaths {
        self.paths.clone()
    }
    #[getter]
    fn devices<'py>(&self, py: Python<'py>) -> Bound<'py, PyTuple> {
        self.devices.bind(py).clone()
    }
    #[getter]
    fn groups<'py>(&self, py: Python<'py>) -> Bound<'py, PyTuple> {
        self.groups.bind(py).clone()
    }
    #[getter]
    fn iommu(&self, py: Python<'_>) -> Py<PyIommuStatus> {
        self.iommu.clone_ref(py)
    }
    #[getter]
    fn unreadable<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.inner.unreadable.iter().map(|p| PyReadProblem(*p)))
    }
    #[getter]
    fn devnodes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.inner.nodes().iter().cloned().map(PyDevNode))
    }
    #[getter]
    fn has_details(&self) -> bool {
        self.inner.details
    }
    fn device<'py>(&self, py: Python<'py>, bdf: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let bdf = extract_bdf(bdf)?;
        self.device_object(py, bdf)
            .ok_or_else(|| Self::not_found("PCI device", bdf.to_string()))
    }
    fn find_device<'py>(
        &self,
        py: Python<'py>,
        bdf: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self.device_object(py, extract_bdf(bdf)?))
    }
    fn group<'py>(&self, py: Python<'py>, group_id: u32) -> PyResult<Bound<'py, PyAny>> {
        self.group_object(py, group_id)
            .ok_or_else(|| Self::not_found("IOMMU group", group_id.to_string()))
    }
    fn find_group<'py>(&self, py: Python<'py>, group_id: u32) -> Option<Bound<'py, PyAny>> {
        self.group_object(py, group_id)
    }
    fn group_of<'py>(
        &self,
        py: Python<'py>,
        bdf: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let bdf = extract_bdf(bdf)?;
        Ok(self
            .inner
            .device(bdf)
            .and_then(|d| d.iommu_group)
            .and_then(|g| self.group_object(py, g)))
    }
    fn resolve_devnode(&self, py: Python<'_>, path: &str) -> PyDevNode {
        let host = Arc::clone(&self.inner);
        let path = path.to_owned();
        PyDevNode(py.detach(move || host.resolve_devnode(&path)))
    }
    fn devnode_by_number(&self, py: Python<'_>, major: u32, minor: u32) -> Option<PyDevNode> {
        let host = Arc::clone(&self.inner);
        py.detach(move || host.devnode_by_number(major, minor))
            .map(PyDevNode)
    }
    fn group_node(&self, bdf: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        Ok(self.inner.group_node(extract_bdf(bdf)?))
    }
    fn cdev_node(&self, bdf: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        Ok(self.inner.cdev_node(extract_bdf(bdf)?))
    }
    fn __len__(&self) -> usize {
        self.inner.devices.len()
    }
    fn __repr__(&self) -> String {
        format!(
            "Host(sysfs_root='{}', devices={}, groups={})",
            self.inner.sysfs_root.display(),
            self.inner.devices.len(),
            self.inner.groups.len()
        )
    }
}

/// Scans the host with the GIL released: the paths of a `HostPaths`, or separate roots.
#[pyfunction]
#[pyo3(signature = (sysfs_root = None, dev_root = None, proc_root = None, details = false, threads = None))]
pub fn scan(
    py: Python<'_>,
    sysfs_root: Option<&Bound<'_, PyAny>>,
    dev_root: Option<&str>,
    proc_root: Option<&str>,
    details: bool,
    threads: Option<usize>,
) -> BindingResult<PyHost> {
    let (paths, proc_root) = scan_paths(sysfs_root, dev_root, proc_root)?;
    let options = ScanOptions {
        sysfs_root: PathBuf::from(&paths.sysfs),
        dev_root: PathBuf::from(&paths.devfs),
        proc_root: proc_root.map(PathBuf::from),
        details,
        threads,
    };
    let root = options.sysfs_root.clone();
    let host = py.detach(move || no_panic(&root, || kata_vfio_core::scan(&options)))?;
    Ok(PyHost::from_core(py, host, paths)?)
}

/// Runs a read of the tree at `root`, turning a panic (a bug, whatever the tree holds) into
/// an error of the project's own instead of a `PanicException` in Python.
fn no_panic<T>(
    root: &std::path::Path,
    read: impl FnOnce() -> kata_vfio_core::Result<T>,
) -> kata_vfio_core::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(kata_vfio_core::Error::Io {
            op: "scan",
            path: root.to_path_buf(),
            source: std::io::Error::other(format!("internal error: {what}")),
            hint: Some("this is a bug in kata-vfio: please report it with the tree read".into()),
        })
    })
}

/// Reads one device with its detail attributes.
#[pyfunction]
pub fn read_details(
    py: Python<'_>,
    sysfs_root: &str,
    bdf: &Bound<'_, PyAny>,
) -> BindingResult<PyPciDevice> {
    let bdf = extract_bdf(bdf)?;
    let root = PathBuf::from(sysfs_root);
    let device =
        py.detach(move || no_panic(&root, || kata_vfio_core::sysfs::read_one_device(&root, bdf)))?;
    Ok(PyPciDevice(Arc::new(device)))
}

/// Every device node the kernel names under `sysfs_root` (`dev/char`, `dev/block`): `DEVNAME`
/// -> (`c` or `b`, major, minor), read beneath the root with the GIL released.
#[pyfunction]
pub fn device_numbers<'py>(py: Python<'py>, sysfs_root: &str) -> PyResult<Bound<'py, PyDict>> {
    let root = PathBuf::from(sysfs_root);
    let table = py.detach(move || {
        RootDir::open(&root)
            .map(|root| kata_vfio_core::devnode::device_numbers(&root))
            .unwrap_or_default()
    });
    let out = PyDict::new(py);
    for (name, (kind, major, minor)) in table {
        out.set_item(name, (kind.as_str(), major, minor))?;
    }
    Ok(out)
}

/// `lstat` of `relative` beneath `root` (links on the way followed while they stay inside;
/// the last component itself not followed): `(0, st_mode, st_rdev)`, or `(errno, 0, 0)` when
/// it fails (`EXDEV` for a path that would leave the root).
#[pyfunction]
pub fn lstat_beneath(py: Python<'_>, root: &str, relative: &str) -> (i32, u32, u64) {
    let root = PathBuf::from(root);
    let relative = relative.to_owned();
    py.detach(move || {
        let found = RootDir::open(&root).and_then(|root| root.lstat(&relative));
        match found {
            Ok(st) => (0, st.st_mode, st.st_rdev),
            Err(e) => (e.raw_os_error().unwrap_or(EIO), 0, 0),
        }
    })
}

const EIO: i32 = 5;
