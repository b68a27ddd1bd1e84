//! Errors across the boundary. Each Python exception the bindings raise is declared once,
//! here, by importing its class from `kata_vfio/errors.py` (where the hierarchy lives, under
//! `KataVfioError`); one `From` impl turns a core error into the matching exception, with its
//! errno, path, hint and remedies (names of the steps that help, worded in Python) kept.
//! Binding functions return [`BindingResult`], so `?` converts core errors and Python errors
//! alike.

use kata_vfio_core::Error;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

pyo3::import_exception!(kata_vfio.errors, BdfError);
pyo3::import_exception!(kata_vfio.errors, BindError);
pyo3::import_exception!(kata_vfio.errors, DeviceNotFoundError);
pyo3::import_exception!(kata_vfio.errors, HandleError);
pyo3::import_exception!(kata_vfio.errors, HostIOError);
pyo3::import_exception!(kata_vfio.errors, InvalidInputError);
pyo3::import_exception!(kata_vfio.errors, VfioError);

/// What a binding can fail with: an error of the core, or one Python already raised.
#[derive(Debug)]
pub enum BindingError {
    Core(Error),
    Py(PyErr),
}

/// The result of a binding function.
pub type BindingResult<T> = Result<T, BindingError>;

impl From<Error> for BindingError {
    fn from(err: Error) -> Self {
        Self::Core(err)
    }
}

impl From<PyErr> for BindingError {
    fn from(err: PyErr) -> Self {
        Self::Py(err)
    }
}

impl From<BindingError> for PyErr {
    fn from(err: BindingError) -> Self {
        match err {
            BindingError::Py(err) => err,
            BindingError::Core(err) => Python::attach(|py| match raise(py, &err) {
                Ok(exc) | Err(exc) => exc,
            }),
        }
    }
}

/// The exception for a core error: its class, message, and the attributes it keeps.
fn raise(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let class = match err {
        Error::InvalidBdf { .. } => py.get_type::<BdfError>(),
        Error::InvalidInput { .. } => py.get_type::<InvalidInputError>(),
        Error::NotFound { .. } => py.get_type::<DeviceNotFoundError>(),
        Error::Io { .. } => py.get_type::<HostIOError>(),
        Error::Vfio { .. } => py.get_type::<VfioError>(),
        Error::Bind { .. } => py.get_type::<BindError>(),
    };
    let kwargs = PyDict::new(py);
    kwargs.set_item("hint", err.hint())?;
    if !err.remedies().is_empty() {
        let names: Vec<&str> = err.remedies().iter().map(|r| r.as_str()).collect();
        kwargs.set_item("remedies", PyTuple::new(py, names)?)?;
    }
    if let Error::Io { .. } | Error::Vfio { .. } | Error::Bind { .. } = err {
        kwargs.set_item("errno", err.errno())?;
        kwargs.set_item("path", err.path().map(|p| p.to_string_lossy().into_owned()))?;
    }
    let instance = class.call((err.to_string(),), Some(&kwargs))?;
    Ok(PyErr::from_value(instance))
}

/// A bad argument from Python (a value out of range): `InvalidInputError`, a `ValueError`.
pub fn invalid_input(message: String) -> PyErr {
    InvalidInputError::new_err((message,))
}

/// A handle used after `close()` (or detached while in use), as Python's files raise
/// `ValueError` for a closed file.
pub fn handle_error(message: String) -> PyErr {
    HandleError::new_err((message,))
}
