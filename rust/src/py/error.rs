//! Core errors as `vlrank.errors` exceptions: the one place the mapping exists.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::Error;

/// Each `Error` variant raises exactly one `vlrank.errors` class, with the core's message and, where
/// the core named one, the field the caller must fix. Should `vlrank.errors` itself be unusable the
/// message still reaches the caller, as a RuntimeError.
impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let (class, field) = match &err {
            Error::InvalidInput { field, .. } => ("InvalidInputError", Some(field.as_str())),
            // The image's own name (e.g. `srcs[3]` or a path) is the field the caller must fix.
            Error::ImageDecode { source, .. } => ("ImageDecodeError", Some(source.as_str())),
            Error::ImageTooLarge { source, .. } => ("ImageTooLargeError", Some(source.as_str())),
            Error::ContextTooLong { .. } => ("ContextTooLongError", None),
            Error::Tokenizer { .. } => ("TokenizerError", None),
            Error::Io { .. } => ("InvalidInputError", None),
        };
        vlrank_error(class, &err.to_string(), field)
    }
}

/// An instance of the `vlrank.errors` class `class` (RuntimeError should that module be unusable).
pub(super) fn vlrank_error(class: &str, message: &str, field: Option<&str>) -> PyErr {
    Python::attach(|py| {
        let build = || -> PyResult<PyErr> {
            let cls = py.import("vlrank.errors")?.getattr(class)?;
            let kwargs = PyDict::new(py);
            if let Some(field) = field {
                kwargs.set_item("field", field)?;
            }
            Ok(PyErr::from_value(cls.call((message,), Some(&kwargs))?))
        };
        build().unwrap_or_else(|_| PyRuntimeError::new_err(message.to_owned()))
    })
}
