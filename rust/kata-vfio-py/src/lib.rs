//! Python bindings of kata-vfio-core. Conversion, GIL release and error mapping only; all
//! policy lives in the core or in the Python package.

mod bdf;
mod errors;

use pyo3::prelude::*;

#[pymodule]
mod _core {
    #[pymodule_export]
    use crate::bdf::PyBdf;

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}
