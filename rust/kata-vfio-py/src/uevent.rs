//! Kernel uevents as Python objects: the netlink monitor (waits with the GIL released) and
//! the parser, exposed for tests.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kata_vfio_core::uevent::{self, Batch, Monitor, Uevent};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{handle_error, invalid_input, BindingResult};

const MONITOR: &str = "uevent monitor";

/// One kernel uevent.
#[pyclass(
    frozen,
    eq,
    hash,
    skip_from_py_object,
    module = "kata_vfio._core",
    name = "Uevent"
)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PyUevent(Uevent);

#[pymethods]
impl PyUevent {
    #[getter]
    fn action(&self) -> &str {
        &self.0.action
    }
    #[getter]
    fn devpath(&self) -> &str {
        &self.0.devpath
    }
    #[getter]
    fn subsystem(&self) -> Option<&str> {
        self.0.subsystem.as_deref()
    }
    #[getter]
    fn seqnum(&self) -> Option<u64> {
        self.0.seqnum
    }
    #[getter]
    fn env<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (key, value) in &self.0.env {
            dict.set_item(key, value)?;
        }
        Ok(dict)
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }
    fn __repr__(&self) -> String {
        format!(
            "Uevent(action={:?}, devpath={:?}, subsystem={:?}, seqnum={:?})",
            self.0.action, self.0.devpath, self.0.subsystem, self.0.seqnum
        )
    }
}

/// What one `receive` returned.
#[pyclass(
    frozen,
    skip_from_py_object,
    module = "kata_vfio._core",
    name = "UeventBatch"
)]
#[derive(Debug, Clone)]
pub struct PyUeventBatch(Batch);

#[pymethods]
impl PyUeventBatch {
    #[getter]
    fn events(&self) -> Vec<PyUevent> {
        self.0.events.iter().cloned().map(PyUevent).collect()
    }
    #[getter]
    fn overflowed(&self) -> bool {
        self.0.overflowed
    }
    fn __len__(&self) -> usize {
        self.0.events.len()
    }
    fn __repr__(&self) -> String {
        format!(
            "UeventBatch(events={}, overflowed={})",
            self.0.events.len(),
            if self.0.overflowed { "True" } else { "False" }
        )
    }
}

/// A netlink socket subscribed to kernel uevents.
#[pyclass(frozen, module = "kata_vfio._core", name = "UeventMonitor")]
#[derive(Debug)]
pub struct PyUeventMonitor(Mutex<Option<Arc<Monitor>>>);

impl PyUeventMonitor {
    fn get(&self) -> PyResult<Arc<Monitor>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| handle_error(format!("I/O operation on a closed {MONITOR}")))
    }
}

#[pymethods]
impl PyUeventMonitor {
    #[staticmethod]
    #[pyo3(signature = (subsystems=None))]
    fn open(py: Python<'_>, subsystems: Option<Vec<String>>) -> BindingResult<Self> {
        let monitor = py.detach(move || Monitor::open(subsystems))?;
        Ok(Self(Mutex::new(Some(Arc::new(monitor)))))
    }
    #[pyo3(signature = (timeout=None))]
    fn receive(&self, py: Python<'_>, timeout: Option<f64>) -> BindingResult<PyUeventBatch> {
        let wait = match timeout {
            None => None,
            Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t.min(1e6))),
            Some(t) => {
                return Err(invalid_input(format!(
                    "timeout must be a non-negative number of seconds, not {t}"
                ))
                .into())
            }
        };
        let monitor = self.get()?;
        Ok(py
            .detach(move || monitor.receive(wait))
            .map(PyUeventBatch)?)
    }
    #[getter]
    fn closed(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }
    fn fileno(&self) -> PyResult<i32> {
        Ok(self.get()?.fd().as_raw_fd())
    }
    /// Closes the socket (idempotent; a `receive` in another thread keeps it until it returns).
    fn close(&self) {
        drop(self.0.lock().unwrap_or_else(PoisonError::into_inner).take());
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
        if self.closed() {
            "UeventMonitor(closed)".to_owned()
        } else {
            "UeventMonitor(open)".to_owned()
        }
    }
}

/// Parses one uevent datagram as the kernel sends it; None when it is not one.
#[pyfunction]
pub fn parse_uevent(data: &[u8]) -> Option<PyUevent> {
    uevent::parse(data).map(PyUevent)
}
