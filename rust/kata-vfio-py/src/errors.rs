//! Maps core errors onto the Python hierarchy defined in `kata_vfio/errors.py`.

use kata_vfio_core::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Builds the Python exception for a core error: the class from `kata_vfio.errors`, with
/// errno, path and hint kept.
pub fn to_py(err: &Error) -> PyErr {
    Python::attach(|py| match build(py, err) {
        Ok(exc) => exc,
        Err(e) => e,
    })
}

fn build(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let module = py.import("kata_vfio.errors")?;
    let class_name = match err {
        Error::InvalidBdf { .. } => "BdfError",
        Error::InvalidInput { .. } => "InvalidInputError",
        Error::NotFound { .. } => "DeviceNotFoundError",
        Error::Io { .. } => "HostIOError",
        Error::Vfio { .. } => "VfioError",
        Error::Bind { .. } => "BindError",
    };
    let class = module.getattr(class_name)?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("hint", err.hint())?;
    if let Error::Io { .. } | Error::Vfio { .. } = err {
        kwargs.set_item("errno", err.errno())?;
        kwargs.set_item("path", err.path().map(|p| p.to_string_lossy().into_owned()))?;
    }
    let instance = class.call((err.to_string(),), Some(&kwargs))?;
    Ok(PyErr::from_value(instance))
}

/// Converts a core result, mapping its error.
pub fn check<T>(result: kata_vfio_core::Result<T>) -> PyResult<T> {
    result.map_err(|e| to_py(&e))
}

/// For failures that should never happen (a bug, not bad input).
#[allow(dead_code)]
pub fn internal(message: impl Into<String>) -> PyErr {
    PyRuntimeError::new_err(message.into())
}
