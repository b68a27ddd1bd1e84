//! VFIO and iommufd handles as Python objects: each owns its fd, `close()` is idempotent,
//! and each is a context manager. Blocking ioctls run with the GIL released.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use kata_vfio_core::vfio::abi::{self, Header};
use kata_vfio_core::vfio::{
    Container, Device, DeviceInfo, DmaBuffer, Group, GroupStatus, HotResetDevice, HotResetInfo,
    IommuFd, IommuInfo, IovaRanges, IrqInfo, RegionCap, RegionInfo,
};
use kata_vfio_core::Error;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use crate::bdf::{extract_bdf, PyBdf};
use crate::errors::{handle_error, BindingResult};

/// Declares a frozen record class wrapping a core value, with value equality and hashing.
macro_rules! record {
    ($py_name:literal, $wrapper:ident, $inner:ty) => {
        #[pyclass(frozen, eq, hash, skip_from_py_object, module = "kata_vfio._core", name = $py_name)]
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $wrapper(pub $inner);
    };
}

record!("GroupStatus", PyGroupStatus, GroupStatus);
record!("IommuInfo", PyIommuInfo, IommuInfo);
record!("DeviceInfo", PyDeviceInfo, DeviceInfo);
record!("RegionInfo", PyRegionInfo, RegionInfo);
record!("IrqInfo", PyIrqInfo, IrqInfo);
record!("HotResetDevice", PyHotResetDevice, HotResetDevice);
record!("HotResetInfo", PyHotResetInfo, HotResetInfo);
record!("IovaRanges", PyIovaRanges, IovaRanges);

#[pymethods]
impl PyGroupStatus {
    #[getter]
    fn flags(&self) -> u32 {
        self.0.flags
    }
    #[getter]
    fn viable(&self) -> bool {
        self.0.viable()
    }
    #[getter]
    fn container_set(&self) -> bool {
        self.0.container_set()
    }
    fn __repr__(&self) -> String {
        format!(
            "GroupStatus(flags={:#x}, viable={}, container_set={})",
            self.0.flags,
            py_bool(self.0.viable()),
            py_bool(self.0.container_set())
        )
    }
}

#[pymethods]
impl PyIommuInfo {
    #[getter]
    fn flags(&self) -> u32 {
        self.0.flags
    }
    #[getter]
    fn iova_pgsizes(&self) -> u64 {
        self.0.iova_pgsizes
    }
    #[getter]
    fn iova_ranges(&self) -> Vec<(u64, u64)> {
        self.0.iova_ranges.clone()
    }
    #[getter]
    fn dma_avail(&self) -> Option<u32> {
        self.0.dma_avail
    }
    fn __repr__(&self) -> String {
        format!(
            "IommuInfo(flags={:#x}, iova_pgsizes={:#x}, ranges={})",
            self.0.flags,
            self.0.iova_pgsizes,
            self.0.iova_ranges.len()
        )
    }
}

#[pymethods]
impl PyDeviceInfo {
    #[getter]
    fn flags(&self) -> u32 {
        self.0.flags
    }
    #[getter]
    fn num_regions(&self) -> u32 {
        self.0.num_regions
    }
    #[getter]
    fn num_irqs(&self) -> u32 {
        self.0.num_irqs
    }
    #[getter]
    fn can_reset(&self) -> bool {
        self.0.can_reset()
    }
    #[getter]
    fn is_pci(&self) -> bool {
        self.0.is_pci()
    }
    fn __repr__(&self) -> String {
        format!(
            "DeviceInfo(flags={:#x}, num_regions={}, num_irqs={})",
            self.0.flags, self.0.num_regions, self.0.num_irqs
        )
    }
}

#[pymethods]
impl PyRegionInfo {
    #[getter]
    fn index(&self) -> u32 {
        self.0.index
    }
    #[getter]
    fn flags(&self) -> u32 {
        self.0.flags
    }
    #[getter]
    fn size(&self) -> u64 {
        self.0.size
    }
    #[getter]
    fn offset(&self) -> u64 {
        self.0.offset
    }
    #[getter]
    fn readable(&self) -> bool {
        self.0.readable()
    }
    #[getter]
    fn writable(&self) -> bool {
        self.0.writable()
    }
    #[getter]
    fn mmap(&self) -> bool {
        self.0.mmap()
    }
    #[getter]
    fn sparse_mmap(&self) -> Option<Vec<(u64, u64)>> {
        self.0.caps.iter().find_map(|c| match c {
            RegionCap::SparseMmap(areas) => Some(areas.clone()),
            _ => None,
        })
    }
    #[getter]
    fn region_type(&self) -> Option<(u32, u32)> {
        self.0.caps.iter().find_map(|c| match c {
            RegionCap::Type {
                region_type,
                subtype,
            } => Some((*region_type, *subtype)),
            _ => None,
        })
    }
    #[getter]
    fn msix_mappable(&self) -> bool {
        self.0.caps.contains(&RegionCap::MsixMappable)
    }
    #[getter]
    fn cap_ids(&self) -> Vec<u16> {
        self.0
            .caps
            .iter()
            .map(|c| match c {
                RegionCap::SparseMmap(_) => abi::VFIO_REGION_INFO_CAP_SPARSE_MMAP,
                RegionCap::Type { .. } => abi::VFIO_REGION_INFO_CAP_TYPE,
                RegionCap::MsixMappable => abi::VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
                RegionCap::Other { id, .. } => *id,
            })
            .collect()
    }
    fn __repr__(&self) -> String {
        format!(
            "RegionInfo(index={}, flags={:#x}, size={:#x}, offset={:#x})",
            self.0.index, self.0.flags, self.0.size, self.0.offset
        )
    }
}

#[pymethods]
impl PyIrqInfo {
    #[getter]
    fn index(&self) -> u32 {
        self.0.index
    }
    #[getter]
    fn flags(&self) -> u32 {
        self.0.flags
    }
    #[getter]
    fn count(&self) -> u32 {
        self.0.count
    }
    #[getter]
    fn eventfd(&self) -> bool {
        self.0.flags & abi::VFIO_IRQ_INFO_EVENTFD != 0
    }
    #[getter]
    fn maskable(&self) -> bool {
        self.0.flags & abi::VFIO_IRQ_INFO_MASKABLE != 0
    }
    #[getter]
    fn automasked(&self) -> bool {
        self.0.flags & abi::VFIO_IRQ_INFO_AUTOMASKED != 0
    }
    #[getter]
    fn noresize(&self) -> bool {
        self.0.flags & abi::VFIO_IRQ_INFO_NORESIZE != 0
    }
    fn __repr__(&self) -> String {
        format!(
            "IrqInfo(index={}, flags={:#x}, count={})",
            self.0.index, self.0.flags, self.0.count
        )
    }
}

#[pymethods]
impl PyHotResetDevice {
    #[getter]
    fn bdf(&self) -> PyBdf {
        PyBdf(self.0.bdf)
    }
    #[getter]
    fn id(&self) -> i64 {
        self.0.id
    }
    fn __repr__(&self) -> String {
        format!("HotResetDevice(bdf='{}', id={})", self.0.bdf, self.0.id)
    }
}

#[pymethods]
impl PyHotResetInfo {
    #[getter]
    fn flags(&self) -> u32 {
        self.0.flags
    }
    #[getter]
    fn dev_id(&self) -> bool {
        self.0.dev_id()
    }
    #[getter]
    fn devices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.0.devices.iter().cloned().map(PyHotResetDevice))
    }
    fn __repr__(&self) -> String {
        format!(
            "HotResetInfo(flags={:#x}, devices={})",
            self.0.flags,
            self.0.devices.len()
        )
    }
}

#[pymethods]
impl PyIovaRanges {
    #[getter]
    fn ranges(&self) -> Vec<(u64, u64)> {
        self.0.ranges.clone()
    }
    #[getter]
    fn alignment(&self) -> u64 {
        self.0.alignment
    }
    fn __repr__(&self) -> String {
        format!(
            "IovaRanges(ranges={:?}, alignment={:#x})",
            self.0.ranges, self.0.alignment
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

fn closed_error(what: &str) -> PyErr {
    handle_error(format!("I/O operation on a closed {what}"))
}

/// Duplicates a caller's fd so the handle owns its own copy (the caller keeps theirs).
fn dup_fd(fd: i32) -> BindingResult<OwnedFd> {
    if fd < 0 {
        return Err(Error::invalid("file descriptor", fd.to_string(), "it is negative").into());
    }
    // SAFETY: the number is only borrowed for the duplicating fcntl, which fails cleanly
    // (EBADF) when it is not an open descriptor; nothing is closed through it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(borrowed
        .try_clone_to_owned()
        .map_err(|e| Error::io("dup", format!("fd {fd}"), e))?)
}

/// A handle slot: the shared core object until `close()`.
#[derive(Debug)]
struct Slot<T>(Mutex<Option<Arc<T>>>);

impl<T> Slot<T> {
    fn new(value: T) -> Self {
        Self(Mutex::new(Some(Arc::new(value))))
    }
    fn get(&self, what: &str) -> PyResult<Arc<T>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| closed_error(what))
    }
    fn take(&self) -> Option<Arc<T>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
    fn is_closed(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }
}

/// Gives up the fd of a handle nobody else holds, for handing to another process.
fn detach_owned<T>(
    slot: &Slot<T>,
    what: &str,
    into_fd: impl FnOnce(T) -> OwnedFd,
) -> PyResult<i32> {
    let arc = slot.take().ok_or_else(|| closed_error(what))?;
    match Arc::try_unwrap(arc) {
        Ok(inner) => Ok(into_fd(inner).into_raw_fd()),
        Err(arc) => {
            *slot.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(arc);
            Err(handle_error(format!(
                "the {what} is in use by another thread"
            )))
        }
    }
}

/// Declares a handle class owning an fd (a core object in a [`Slot`]): the struct, its
/// name for messages, and a `#[pymethods]` block holding `$methods` plus what every handle
/// has (`path`, `closed`, `fileno`, idempotent `close`, context manager, `__repr__`).
macro_rules! fd_handle {
    (
        $(#[$meta:meta])*
        $py_name:literal, $wrapper:ident, $inner:ty, $what:ident = $what_text:literal;
        $($methods:tt)*
    ) => {
        $(#[$meta])*
        #[pyclass(frozen, module = "kata_vfio._core", name = $py_name)]
        #[derive(Debug)]
        pub struct $wrapper(Slot<$inner>);

        const $what: &str = $what_text;

        #[pymethods]
        impl $wrapper {
            $($methods)*
            #[getter]
            fn path(&self) -> PyResult<String> {
                Ok(self.0.get($what)?.path().display().to_string())
            }
            #[getter]
            fn closed(&self) -> bool {
                self.0.is_closed()
            }
            fn fileno(&self) -> PyResult<i32> {
                Ok(self.0.get($what)?.as_fd().as_raw_fd())
            }
            /// Closes the fd (idempotent).
            fn close(&self) {
                drop(self.0.take());
            }
            fn __enter__(slf: Py<Self>) -> Py<Self> {
                slf
            }
            fn __exit__(
                &self,
                _exc_type: Option<Py<PyAny>>,
                _exc: Option<Py<PyAny>>,
                _tb: Option<Py<PyAny>>,
            ) -> bool {
                self.close();
                false
            }
            fn __repr__(&self) -> String {
                match self.0.get($what) {
                    Ok(h) => format!(concat!($py_name, "(path='{}')"), h.path().display()),
                    Err(_) => concat!($py_name, "(closed)").to_owned(),
                }
            }
        }
    };
}

/// Memory a device may DMA into (page-aligned, zeroed, owned by the extension).
#[pyclass(frozen, module = "kata_vfio._core", name = "DmaBuffer")]
#[derive(Debug)]
pub struct PyDmaBuffer(Arc<DmaBuffer>);

#[pymethods]
impl PyDmaBuffer {
    #[new]
    fn new(size: usize) -> BindingResult<Self> {
        Ok(DmaBuffer::new(size).map(|b| Self(Arc::new(b)))?)
    }
    #[getter]
    fn size(&self) -> usize {
        self.0.len()
    }
    #[getter]
    fn address(&self) -> u64 {
        self.0.address()
    }
    fn read<'py>(
        &self,
        py: Python<'py>,
        offset: usize,
        length: usize,
    ) -> BindingResult<Bound<'py, PyBytes>> {
        let data = self.0.read(offset, length)?;
        Ok(PyBytes::new(py, &data))
    }
    fn write(&self, offset: usize, data: &[u8]) -> BindingResult<()> {
        Ok(self.0.write(offset, data)?)
    }
    fn __len__(&self) -> usize {
        self.0.len()
    }
    fn __repr__(&self) -> String {
        format!("DmaBuffer(size={:#x})", self.0.len())
    }
}

fd_handle! {
    /// `/dev/vfio/vfio`: the legacy container.
    "VfioContainer", PyVfioContainer, Container, CONTAINER = "VFIO container";
    /// Opens `<dev_root>/vfio/vfio` and checks the API version.
    #[staticmethod]
    #[pyo3(signature = (dev_root = "/dev"))]
    fn open(py: Python<'_>, dev_root: &str) -> BindingResult<Self> {
        let root = PathBuf::from(dev_root);
        Ok(py.detach(move || Container::open(&root)).map(|c| Self(Slot::new(c)))?)
    }
    /// Wraps a duplicate of an open container fd.
    #[staticmethod]
    #[pyo3(signature = (fd, path = "/dev/vfio/vfio"))]
    fn from_fd(fd: i32, path: &str) -> BindingResult<Self> {
        let owned = dup_fd(fd)?;
        Ok(Container::from_fd(owned, path).map(|c| Self(Slot::new(c)))?)
    }
    fn api_version(&self, py: Python<'_>) -> BindingResult<i32> {
        let c = self.0.get(CONTAINER)?;
        Ok(py.detach(move || c.api_version())?)
    }
    fn check_extension(&self, py: Python<'_>, extension: u32) -> BindingResult<bool> {
        let c = self.0.get(CONTAINER)?;
        Ok(py.detach(move || c.check_extension(extension))?)
    }
    /// `(number, name, supported)` for every known IOMMU type/extension.
    fn extensions(&self, py: Python<'_>) -> BindingResult<Vec<(u32, &'static str, bool)>> {
        let c = self.0.get(CONTAINER)?;
        Ok(py.detach(move || c.extensions())?)
    }
    #[pyo3(signature = (iommu_type = 3, allow_noiommu = false))]
    fn set_iommu(&self, py: Python<'_>, iommu_type: u32, allow_noiommu: bool) -> BindingResult<()> {
        let c = self.0.get(CONTAINER)?;
        Ok(py.detach(move || c.set_iommu(iommu_type, allow_noiommu))?)
    }
    fn iommu_info(&self, py: Python<'_>) -> BindingResult<PyIommuInfo> {
        let c = self.0.get(CONTAINER)?;
        Ok(py.detach(move || c.iommu_info()).map(PyIommuInfo)?)
    }
    #[pyo3(signature = (buffer, iova, readable = true, writable = true))]
    fn map_dma(
        &self,
        py: Python<'_>,
        buffer: &PyDmaBuffer,
        iova: u64,
        readable: bool,
        writable: bool,
    ) -> BindingResult<()> {
        let c = self.0.get(CONTAINER)?;
        let buf = Arc::clone(&buffer.0);
        Ok(py.detach(move || c.map_dma(&buf, iova, readable, writable))?)
    }
    fn unmap_dma(&self, py: Python<'_>, iova: u64, size: u64) -> BindingResult<u64> {
        let c = self.0.get(CONTAINER)?;
        Ok(py.detach(move || c.unmap_dma(iova, size))?)
    }
}

fd_handle! {
    /// `/dev/vfio/<N>`: a legacy group.
    "VfioGroup", PyVfioGroup, Group, GROUP = "VFIO group";
    /// Opens `<dev_root>/vfio/<group_id>` (or `noiommu-<group_id>`).
    #[staticmethod]
    #[pyo3(signature = (group_id, dev_root = "/dev", noiommu = false))]
    fn open(py: Python<'_>, group_id: u32, dev_root: &str, noiommu: bool) -> BindingResult<Self> {
        let root = PathBuf::from(dev_root);
        Ok(py.detach(move || Group::open(&root, group_id, noiommu)).map(|g| Self(Slot::new(g)))?)
    }
    /// Wraps a duplicate of an open group fd.
    #[staticmethod]
    fn from_fd(fd: i32, group_id: u32, path: &str) -> PyResult<Self> {
        let owned = dup_fd(fd)?;
        Ok(Self(Slot::new(Group::from_fd(owned, group_id, path))))
    }
    #[getter]
    fn id(&self) -> PyResult<u32> {
        Ok(self.0.get(GROUP)?.id())
    }
    fn status(&self, py: Python<'_>) -> BindingResult<PyGroupStatus> {
        let g = self.0.get(GROUP)?;
        Ok(py.detach(move || g.status()).map(PyGroupStatus)?)
    }
    fn set_container(&self, py: Python<'_>, container: &PyVfioContainer) -> BindingResult<()> {
        let g = self.0.get(GROUP)?;
        let c = container.0.get(CONTAINER)?;
        Ok(py.detach(move || g.set_container(&c))?)
    }
    fn unset_container(&self, py: Python<'_>) -> BindingResult<()> {
        let g = self.0.get(GROUP)?;
        Ok(py.detach(move || g.unset_container())?)
    }
    /// `VFIO_GROUP_GET_DEVICE_FD` for a device of this group.
    #[pyo3(signature = (bdf, vf_token = None))]
    fn get_device(
        &self,
        py: Python<'_>,
        bdf: &Bound<'_, PyAny>,
        vf_token: Option<String>,
    ) -> BindingResult<PyVfioDevice> {
        let bdf = extract_bdf(bdf)?;
        let g = self.0.get(GROUP)?;
        Ok(py.detach(move || g.device(bdf, vf_token.as_deref()))?)
            .map(|d| PyVfioDevice(Slot::new(d)))
    }
}

fd_handle! {
    /// A VFIO device fd (from a group, or a cdev bound to an iommufd).
    "VfioDevice", PyVfioDevice, Device, DEVICE = "VFIO device";
    /// Opens the cdev `<dev_root>/vfio/devices/<cdev>` (`cdev` is `vfioN`).
    #[staticmethod]
    #[pyo3(signature = (cdev, dev_root = "/dev"))]
    fn open_cdev(py: Python<'_>, cdev: String, dev_root: &str) -> BindingResult<Self> {
        let root = PathBuf::from(dev_root);
        Ok(py.detach(move || Device::open_cdev(&root, &cdev)).map(|d| Self(Slot::new(d)))?)
    }
    /// Wraps a duplicate of an open device fd.
    #[staticmethod]
    fn from_fd(fd: i32, name: &str, path: &str) -> PyResult<Self> {
        let owned = dup_fd(fd)?;
        Ok(Self(Slot::new(Device::from_fd(owned, name, path))))
    }
    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(self.0.get(DEVICE)?.name().to_owned())
    }
    /// Gives up ownership of the fd and returns it (the handle is closed afterwards).
    fn detach_fd(&self) -> PyResult<i32> {
        detach_owned(&self.0, DEVICE, Device::into_fd)
    }
    fn info(&self, py: Python<'_>) -> BindingResult<PyDeviceInfo> {
        let d = self.0.get(DEVICE)?;
        Ok(py.detach(move || d.info()).map(PyDeviceInfo)?)
    }
    fn region_info(&self, py: Python<'_>, index: u32) -> BindingResult<PyRegionInfo> {
        let d = self.0.get(DEVICE)?;
        Ok(py.detach(move || d.region_info(index)).map(PyRegionInfo)?)
    }
    fn regions<'py>(&self, py: Python<'py>) -> BindingResult<Bound<'py, PyTuple>> {
        let d = self.0.get(DEVICE)?;
        let regions = py.detach(move || d.regions())?;
        Ok(PyTuple::new(py, regions.into_iter().map(PyRegionInfo))?)
    }
    fn irq_info(&self, py: Python<'_>, index: u32) -> BindingResult<PyIrqInfo> {
        let d = self.0.get(DEVICE)?;
        Ok(py.detach(move || d.irq_info(index)).map(PyIrqInfo)?)
    }
    fn irqs<'py>(&self, py: Python<'py>) -> BindingResult<Bound<'py, PyTuple>> {
        let d = self.0.get(DEVICE)?;
        let irqs = py.detach(move || d.irqs())?;
        Ok(PyTuple::new(py, irqs.into_iter().map(PyIrqInfo))?)
    }
    fn reset(&self, py: Python<'_>) -> BindingResult<()> {
        let d = self.0.get(DEVICE)?;
        Ok(py.detach(move || d.reset())?)
    }
    fn hot_reset_info(&self, py: Python<'_>) -> BindingResult<PyHotResetInfo> {
        let d = self.0.get(DEVICE)?;
        Ok(py.detach(move || d.hot_reset_info()).map(PyHotResetInfo)?)
    }
    /// Reads `length` bytes at `offset` inside a region (pread on the device fd).
    fn read_region<'py>(
        &self,
        py: Python<'py>,
        region: &PyRegionInfo,
        offset: u64,
        length: usize,
    ) -> BindingResult<Bound<'py, PyBytes>> {
        let d = self.0.get(DEVICE)?;
        let region = region.0.clone();
        let data = py.detach(move || d.read_region(&region, offset, length))?;
        Ok(PyBytes::new(py, &data))
    }
    fn bind_iommufd(&self, py: Python<'_>, iommufd: &PyIommuFd) -> BindingResult<u32> {
        let d = self.0.get(DEVICE)?;
        let fd = iommufd.0.get(IOMMUFD)?;
        Ok(py.detach(move || d.bind_iommufd(&fd))?)
    }
    fn attach_ioas(&self, py: Python<'_>, pt_id: u32) -> BindingResult<u32> {
        let d = self.0.get(DEVICE)?;
        Ok(py.detach(move || d.attach_ioas(pt_id))?)
    }
    fn detach_ioas(&self, py: Python<'_>) -> BindingResult<()> {
        let d = self.0.get(DEVICE)?;
        Ok(py.detach(move || d.detach_ioas())?)
    }
}

fd_handle! {
    /// `/dev/iommu`: an iommufd.
    "IommuFd", PyIommuFd, IommuFd, IOMMUFD = "iommufd";
    /// Opens `<dev_root>/iommu`.
    #[staticmethod]
    #[pyo3(signature = (dev_root = "/dev"))]
    fn open(py: Python<'_>, dev_root: &str) -> BindingResult<Self> {
        let root = PathBuf::from(dev_root);
        Ok(py.detach(move || IommuFd::open(&root)).map(|f| Self(Slot::new(f)))?)
    }
    /// Wraps a duplicate of an open iommufd.
    #[staticmethod]
    #[pyo3(signature = (fd, path = "/dev/iommu"))]
    fn from_fd(fd: i32, path: &str) -> PyResult<Self> {
        let owned = dup_fd(fd)?;
        Ok(Self(Slot::new(IommuFd::from_fd(owned, path))))
    }
    fn ioas_alloc(&self, py: Python<'_>) -> BindingResult<u32> {
        let f = self.0.get(IOMMUFD)?;
        Ok(py.detach(move || f.ioas_alloc())?)
    }
    fn destroy(&self, py: Python<'_>, object_id: u32) -> BindingResult<()> {
        let f = self.0.get(IOMMUFD)?;
        Ok(py.detach(move || f.destroy(object_id))?)
    }
    fn iova_ranges(&self, py: Python<'_>, ioas_id: u32) -> BindingResult<PyIovaRanges> {
        let f = self.0.get(IOMMUFD)?;
        Ok(py.detach(move || f.iova_ranges(ioas_id)).map(PyIovaRanges)?)
    }
    #[pyo3(signature = (ioas_id, buffer, iova = None, readable = true, writable = true))]
    fn map(
        &self,
        py: Python<'_>,
        ioas_id: u32,
        buffer: &PyDmaBuffer,
        iova: Option<u64>,
        readable: bool,
        writable: bool,
    ) -> BindingResult<u64> {
        let f = self.0.get(IOMMUFD)?;
        let buf = Arc::clone(&buffer.0);
        Ok(py.detach(move || f.map(ioas_id, &buf, iova, readable, writable))?)
    }
    fn unmap(&self, py: Python<'_>, ioas_id: u32, iova: u64, length: u64) -> BindingResult<u64> {
        let f = self.0.get(IOMMUFD)?;
        Ok(py.detach(move || f.unmap(ioas_id, iova, length))?)
    }
    #[pyo3(signature = (option_id, object_id = 0))]
    fn get_option(&self, py: Python<'_>, option_id: u32, object_id: u32) -> BindingResult<u64> {
        let f = self.0.get(IOMMUFD)?;
        Ok(py.detach(move || f.get_option(option_id, object_id))?)
    }
    #[pyo3(signature = (option_id, value, object_id = 0))]
    fn set_option(
        &self,
        py: Python<'_>,
        option_id: u32,
        value: u64,
        object_id: u32,
    ) -> BindingResult<()> {
        let f = self.0.get(IOMMUFD)?;
        Ok(py.detach(move || f.set_option(option_id, object_id, value))?)
    }
}

/// Every struct size, field offset, ioctl number and constant the core uses, under the
/// kernel's names: `{"structs": {name: {"header", "size", "fields": {field: (offset,
/// size)}}}, "ioctls": {name: (header, number)}, "constants": {name: (header, value)}}`.
#[pyfunction]
pub fn vfio_abi(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let table = abi::layout();
    let header = |h: Header| h.include();
    let structs = PyDict::new(py);
    for s in &table.structs {
        let fields = PyDict::new(py);
        for f in &s.fields {
            fields.set_item(f.name, (f.offset, f.size))?;
        }
        let entry = PyDict::new(py);
        entry.set_item("header", header(s.header))?;
        entry.set_item("size", s.size)?;
        entry.set_item("fields", fields)?;
        structs.set_item(s.name, entry)?;
    }
    let named = |list: &[abi::NamedValue]| -> PyResult<Bound<'_, PyDict>> {
        let d = PyDict::new(py);
        for v in list {
            d.set_item(v.name, (header(v.header), v.value))?;
        }
        Ok(d)
    };
    let out = PyDict::new(py);
    out.set_item("structs", structs)?;
    out.set_item("ioctls", named(&table.ioctls)?)?;
    out.set_item("constants", named(&table.constants)?)?;
    Ok(out)
}
