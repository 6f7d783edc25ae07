//! Bindings of `batch`: token-budgeted batch plans and right-padding into int64 arrays.

use numpy::ndarray::{Array1, Array2, Array3};
use std::borrow::Cow;

use numpy::{IntoPyArray, PyArray1, PyArray2, PyArray3, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::args::{array_values, counts_arg, invalid};
use crate::batch;

/// Token-budgeted batches over length-sorted indices (longest first, stable): one int64 array
/// of indices per batch, each with rows <= max_batch_size and rows * longest <= token_budget
/// (a single sequence over the budget gets a batch of its own).
#[pyfunction]
#[pyo3(signature = (lengths, *, max_batch_size, token_budget))]
fn plan_batches<'py>(
    py: Python<'py>,
    lengths: &Bound<'py, PyAny>,
    max_batch_size: usize,
    token_budget: usize,
) -> PyResult<Vec<Bound<'py, PyArray1<i64>>>> {
    let lengths = counts_arg(lengths, "lengths", "sequence lengths")?;
    let plan = py.detach(|| batch::plan_batches(&lengths, max_batch_size, token_budget))?;
    Ok(plan
        .into_iter()
        .map(|b| Array1::from_vec(b.into_iter().map(|i| i as i64).collect()).into_pyarray(py))
        .collect())
}

type PaddedArrays<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<i64>>, Option<Bound<'py, PyArray3<i64>>>);

/// Right-pad id sequences: (input_ids (B, L) int64, attention_mask (B, L) int64, position_ids
/// (3, B, L) int64 or None). `positions`: one (3, len) int64 array per sequence; padding gets
/// `pad_position`. L = max(longest, min_width).
#[pyfunction]
#[pyo3(signature = (sequences, *, pad_id, positions = None, pad_position = 1, min_width = 0))]
fn pad_batch<'py>(
    py: Python<'py>,
    sequences: Vec<Vec<i64>>,
    pad_id: i64,
    positions: Option<Vec<PyReadonlyArray2<'py, i64>>>,
    pad_position: i64,
    min_width: usize,
) -> PyResult<PaddedArrays<'py>> {
    // Each (3, len) array read in place (copied only where it is not C-contiguous).
    let pos: Option<Vec<Cow<'_, [i64]>>> = match &positions {
        None => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, a)| {
                    if a.shape()[0] != 3 {
                        return Err(invalid(format!("positions[{i}]"), format!("has shape {:?}; pass a (3, len) array", a.shape())));
                    }
                    Ok(array_values(a, "position ids")?)
                })
                .collect::<PyResult<_>>()?,
        ),
    };
    let padded = py.detach(|| {
        let seqs: Vec<&[i64]> = sequences.iter().map(|s| s.as_slice()).collect();
        let pos_refs: Option<Vec<&[i64]>> = pos.as_ref().map(|p| p.iter().map(|v| v.as_ref()).collect());
        batch::pad_right(&seqs, pad_id, pos_refs.as_deref(), pad_position, min_width)
    })?;
    let (b, l) = (padded.rows, padded.width);
    let ids = Array2::from_shape_vec((b, l), padded.input_ids).expect("B x L").into_pyarray(py);
    let mask = Array2::from_shape_vec((b, l), padded.attention_mask).expect("B x L").into_pyarray(py);
    let pos = padded.position_ids.map(|p| Array3::from_shape_vec((3, b, l), p).expect("3 x B x L").into_pyarray(py));
    Ok((ids, mask, pos))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(plan_batches, m)?)?;
    m.add_function(wrap_pyfunction!(pad_batch, m)?)?;
    Ok(())
}
