//! Argument converters shared by the bindings: Python values to Rust values, a bad value raising
//! InvalidInputError that names its field and says what to pass instead; numpy arrays in
//! (`array_values`) and out (`concat`), every copy fallible.

use std::borrow::Cow;

use numpy::ndarray::Dimension;
use numpy::{Element, PyReadonlyArray};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::error::Error;
use crate::image::try_with_capacity;

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

/// An array's values in C order: borrowed where the array is C-contiguous (the pixel work then reads
/// the caller's memory, no copy), else one fallible copy. The one converter of numpy input.
pub(super) fn array_values<'a, T: Element + Copy, D: Dimension>(
    a: &'a PyReadonlyArray<'_, T, D>,
    what: &str,
) -> crate::error::Result<Cow<'a, [T]>> {
    if let Ok(s) = a.as_slice() {
        return Ok(Cow::Borrowed(s));
    }
    let view = a.as_array();
    let mut v = try_with_capacity(view.len(), what)?;
    v.extend(view.iter().copied());
    Ok(Cow::Owned(v))
}

/// Parts laid end to end in one fallible allocation (frames into a (T, H, W, 3) array's buffer, which
/// numpy then takes without a copy). The one converter of array output.
pub(super) fn concat<'a, T: Copy + 'a>(parts: &[&'a [T]], what: &str) -> crate::error::Result<Vec<T>> {
    let mut v = try_with_capacity(parts.iter().map(|p| p.len()).sum(), what)?;
    for p in parts {
        v.extend_from_slice(p);
    }
    Ok(v)
}
