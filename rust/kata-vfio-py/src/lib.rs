//! Python bindings of kata-vfio-core. Conversion, GIL release and error mapping only; all
//! policy lives in the core or in the Python package.

// pyo3 methods must take `&self`, even on small Copy wrappers such as `Bdf`.
#![allow(clippy::trivially_copy_pass_by_ref)]

mod bdf;
mod errors;
mod scan;

use pyo3::prelude::*;

#[pymodule]
mod _core {
    #[pymodule_export]
    use crate::bdf::PyBdf;
    #[pymodule_export]
    use crate::scan::{
        classify_devnode, read_details, scan, PyBar, PyBlocker, PyDevNode, PyHost, PyIommuGroup,
        PyIommuStatus, PyPciDevice, PyPciLink,
    };

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}
