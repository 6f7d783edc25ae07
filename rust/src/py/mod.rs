//! The PyO3 layer of `vlrank._native`, one file per concept of the core. Every binding follows one
//! pattern: convert the Python arguments to Rust values (naming the field of a bad one), release the
//! GIL with `py.detach(...)` for the work, convert the result back. Core errors become `vlrank.errors`
//! exceptions through `From<Error> for PyErr` (error.rs), so bindings use `?`; no logic lives here.

use pyo3::prelude::*;

mod args;
mod batch;
mod budget;
mod error;
mod geometry;
mod image;
mod prompt;
mod rope;
mod tokenizer;
mod video;

#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    geometry::register(m)?;
    image::register(m)?;
    tokenizer::register(m)?;
    prompt::register(m)?;
    batch::register(m)?;
    rope::register(m)?;
    video::register(m)?;
    budget::register(m)?;
    Ok(())
}
