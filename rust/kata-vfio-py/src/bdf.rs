//! `Bdf`: the PCI address type as a frozen Python value.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use kata_vfio_core::bdf;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::PyBool;

use crate::errors::BindingResult;

/// A PCI function address ``DDDD:BB:DD.F``.
#[pyclass(frozen, module = "kata_vfio._core", name = "Bdf", from_py_object)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PyBdf(pub bdf::Bdf);

#[pymethods]
impl PyBdf {
    #[new]
    fn new(text: &str) -> BindingResult<Self> {
        Ok(bdf::Bdf::parse(text).map(Self)?)
    }

    #[staticmethod]
    fn from_parts(domain: u32, bus: u8, device: u8, function: u8) -> BindingResult<Self> {
        Ok(bdf::Bdf::new(domain, bus, device, function).map(Self)?)
    }

    #[getter]
    fn domain(&self) -> u32 {
        self.0.domain
    }
    #[getter]
    fn bus(&self) -> u8 {
        self.0.bus
    }
    #[getter]
    fn device(&self) -> u8 {
        self.0.device
    }
    #[getter]
    fn function(&self) -> u8 {
        self.0.function
    }
    #[getter]
    fn slot(&self) -> Self {
        Self(self.0.slot_function0())
    }

    fn __str__(&self) -> String {
        self.0.to_string()
    }
    fn __repr__(&self) -> String {
        format!("Bdf('{}')", self.0)
    }
    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> Py<PyAny> {
        let py = other.py();
        match other.extract::<Self>() {
            Ok(other) => PyBool::new(py, op.matches(self.0.cmp(&other.0)))
                .to_owned()
                .into_any()
                .unbind(),
            Err(_) => py.NotImplemented(),
        }
    }
    fn __hash__(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.0.hash(&mut hasher);
        hasher.finish()
    }
}

/// Accepts a `Bdf` or a string wherever an address is expected.
pub fn extract_bdf(value: &Bound<'_, PyAny>) -> BindingResult<bdf::Bdf> {
    if let Ok(b) = value.extract::<PyBdf>() {
        return Ok(b.0);
    }
    let text: String = value.extract()?;
    Ok(bdf::Bdf::parse(&text)?)
}
