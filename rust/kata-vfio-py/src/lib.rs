//! Python bindings of kata-vfio-core. Conversion, GIL release and error mapping only; all
//! policy lives in the core or in the Python package.

// pyo3 methods must take `&self`, even on small Copy wrappers such as `Bdf`.
#![allow(clippy::trivially_copy_pass_by_ref)]

mod bdf;
mod bind;
mod errors;
mod paths;
mod scan;
mod uevent;
mod vfio;

use pyo3::prelude::*;

#[pymodule]
mod _core {
    #[pymodule_export]
    use crate::bdf::PyBdf;
    #[pymodule_export]
    use crate::paths::PyHostPaths;
    #[pymodule_export]
    use crate::scan::{
        classify_devnode, device_numbers, lstat_beneath, read_details, scan, PyBar, PyBlocker,
        PyDevNode, PyFix, PyHost, PyIommuGroup, PyIommuStatus, PyPciDevice, PyPciLink,
        PyReadProblem,
    };
    // VFIO/iommufd handles and the ABI table (issue 5).
    #[pymodule_export]
    use crate::vfio::{
        vfio_abi, PyDeviceInfo, PyDmaBuffer, PyGroupStatus, PyHotResetDevice, PyHotResetInfo,
        PyIommuFd, PyIommuInfo, PyIovaRanges, PyIrqInfo, PyRegionInfo, PyVfioContainer,
        PyVfioDevice, PyVfioGroup,
    };
    // Driver binding, unbinding, restore and the journal (issue 5).
    #[pymodule_export]
    use crate::bind::{
        bind_devices, binding_journal, restore_devices, unbind_devices, PyBindOutcome,
        PyBindReport, PyJournalEntry, PySysfsWrite,
    };
    // Kernel uevents for the node agent (issue 10).
    #[pymodule_export]
    use crate::uevent::{parse_uevent, PyUevent, PyUeventBatch, PyUeventMonitor};

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}
