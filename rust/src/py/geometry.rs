//! Bindings of `geometry`: the reference's smart_resize, image token counts and the pixel defaults.

use pyo3::prelude::*;

use crate::geometry::{self, DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, FACTOR};

/// (resized_height, resized_width) of the reference smart_resize (factor 32).
#[pyfunction]
#[pyo3(signature = (height, width, min_pixels = DEFAULT_MIN_PIXELS, max_pixels = DEFAULT_MAX_PIXELS))]
fn smart_resize(height: u32, width: u32, min_pixels: u64, max_pixels: u64) -> PyResult<(u32, u32)> {
    Ok(geometry::smart_resize(height, width, FACTOR, min_pixels, max_pixels)?)
}

/// Image tokens of an original (height, width) image under the budget.
#[pyfunction]
#[pyo3(signature = (height, width, min_pixels = DEFAULT_MIN_PIXELS, max_pixels = DEFAULT_MAX_PIXELS))]
fn image_tokens(height: u32, width: u32, min_pixels: u64, max_pixels: u64) -> PyResult<u64> {
    Ok(geometry::tokens_for(height, width, min_pixels, max_pixels)?)
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(smart_resize, m)?)?;
    m.add_function(wrap_pyfunction!(image_tokens, m)?)?;
    m.add("DEFAULT_MIN_PIXELS", DEFAULT_MIN_PIXELS)?;
    m.add("DEFAULT_MAX_PIXELS", DEFAULT_MAX_PIXELS)?;
    m.add("IMAGE_FACTOR", FACTOR)?;
    Ok(())
}
