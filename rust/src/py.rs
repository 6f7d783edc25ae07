//! The one PyO3 layer: every `#[pyfunction]` / `#[pyclass]` of `vlrank._native` lives here.
//! Pattern for each binding: convert Python inputs to Rust values, release the GIL with
//! `py.detach(...)` for the work, convert the result back. Errors map to Python in `to_py_err` only.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::Error;

/// Map a core error to the matching `vlrank.errors` class (the only place this mapping exists).
pub(crate) fn to_py_err(py: Python<'_>, err: Error) -> PyErr {
    let (class, field) = match &err {
        Error::InvalidInput { field, .. } => ("InvalidInputError", Some(field.clone())),
        Error::ImageDecode { .. } => ("ImageDecodeError", None),
        Error::ImageTooLarge { .. } => ("ImageTooLargeError", None),
        Error::ContextTooLong { .. } => ("ContextTooLongError", None),
        Error::Tokenizer { .. } => ("TokenizerError", None),
        Error::Io { .. } => ("InvalidInputError", None),
    };
    let message = err.to_string();
    let build = || -> PyResult<PyErr> {
        let module = py.import("vlrank.errors")?;
        let cls = module.getattr(class)?;
        let kwargs = PyDict::new(py);
        if let Some(field) = field.clone() {
            kwargs.set_item("field", field)?;
        }
        let instance = cls.call((message.clone(),), Some(&kwargs))?;
        Ok(PyErr::from_value(instance))
    };
    build().unwrap_or_else(|_| PyRuntimeError::new_err(message.clone()))
}

// ---- geometry / probe / image bindings (owner: native-image) ----

// ---- tokenizer / prompt / batch bindings (owner: native-text) ----

// ---- rope bindings (owner: vision) ----

#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // register: geometry / probe / image (owner: native-image)
    // register: tokenizer / prompt / batch (owner: native-text)
    // register: rope (owner: vision)
    Ok(())
}
