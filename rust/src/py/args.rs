//! Argument converters shared by the bindings: Python values to Rust values, a bad value raising
//! InvalidInputError that names its field and says what to pass instead.

use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::error::Error;

pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> PyErr {
    Error::invalid(field, message).into()
}

/// The Python type name of `obj`, for messages.
pub(super) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// A Python str as a Rust String; non-str or unencodable text (lone surrogates) is refused.
pub(super) fn text_arg(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<String> {
    let s = obj.cast::<PyString>().map_err(|_| invalid(field, format!("got {}; pass a str", type_name(obj))))?;
    s.to_str()
        .map(str::to_owned)
        .map_err(|_| invalid(field, "the text is not valid Unicode (lone surrogate); pass well-formed text"))
}

/// `text_arg`, with None (or no argument) meaning None.
pub(super) fn opt_text_arg(obj: Option<&Bound<'_, PyAny>>, field: &str) -> PyResult<Option<String>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => text_arg(o, field).map(Some),
    }
}

/// A sequence of str (a bare str is refused: it would silently become one text per character).
pub(super) fn texts_arg(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Vec<String>> {
    if obj.is_instance_of::<PyString>() {
        return Err(invalid(field, "got a str; pass a list of str (e.g. [text])"));
    }
    let iter = obj.try_iter().map_err(|_| invalid(field, format!("got {}; pass a list of str", type_name(obj))))?;
    iter.enumerate().map(|(i, item)| text_arg(&item?, &format!("{field}[{i}]"))).collect()
}

/// A sequence of non-negative ints; `what` names them in messages ("image token counts").
pub(super) fn counts_arg(obj: &Bound<'_, PyAny>, field: &str, what: &str) -> PyResult<Vec<usize>> {
    let iter = obj.try_iter().map_err(|_| invalid(field, format!("got {}; pass a list of {what}", type_name(obj))))?;
    iter.enumerate()
        .map(|(i, item)| {
            let item = item?;
            item.extract::<u64>()
                .ok()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| invalid(format!("{field}[{i}]"), format!("got {item}; pass {what} (an int >= 0)")))
        })
        .collect()
}
