//! `DecodeHold`: a hold on the process decode budget for decoding done outside the native decoders.
//!
//! The native image decoders reserve their bytes from `image::budget::process_budget()` themselves. Video
//! frames are decoded by PyAV in the request's thread, so Python takes the same budget around that decode:
//! concurrent requests then never hold more decoded bytes than `VLRANK_DECODE_BYTES_IN_FLIGHT` together
//! (`VLRANK_DECODE_BYTES_IN_FLIGHT`, one owner: the Rust core). The wait happens with the GIL released.

use pyo3::prelude::*;

use crate::image::{process_budget, Reservation};

#[pyclass(module = "vlrank._native")]
pub struct DecodeHold {
    held: Option<Reservation<'static>>,
    bytes: u64,
}

#[pymethods]
impl DecodeHold {
    /// Reserve `min(nbytes, capacity)` of the process decode budget, waiting (GIL released) until it fits:
    /// a decode larger than the whole budget runs alone, as an image wave over it does (`run_budgeted`);
    /// its own size limits are checked before (the per-video decode budget).
    #[new]
    fn new(py: Python<'_>, nbytes: u64) -> Self {
        let budget = process_budget();
        let held = py.detach(|| budget.reserve_up_to(nbytes));
        let bytes = nbytes.min(budget.capacity());
        DecodeHold { held: Some(held), bytes }
    }

    /// Bytes this hold reserved (0 once released).
    #[getter]
    fn nbytes(&self) -> u64 {
        if self.held.is_some() { self.bytes } else { 0 }
    }

    /// Give the bytes back (idempotent).
    fn release(&mut self) {
        self.held = None;
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&mut self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.held = None;
        false
    }
}

/// Capacity and bytes in use of the process decode budget: (capacity, in_use).
#[pyfunction]
fn decode_budget() -> (u64, u64) {
    let b = process_budget();
    (b.capacity(), b.in_use())
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DecodeHold>()?;
    m.add_function(wrap_pyfunction!(decode_budget, m)?)?;
    Ok(())
}
