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
mod rope_bindings {
    use numpy::ndarray::{Array2, Array3};
    use numpy::{IntoPyArray, PyArray2, PyArray3, PyReadonlyArray2};
    use pyo3::prelude::*;

    use super::to_py_err;
    use crate::error::Error;
    use crate::rope::{self, MergedGrid};

    fn grids(list: &[(usize, usize)]) -> Vec<MergedGrid> {
        list.iter().map(|&(rows, cols)| MergedGrid { rows, cols }).collect()
    }

    /// M-RoPE position ids (3, L) int64 of one token sequence; `image_grids` = merged (rows, cols) per image.
    #[pyfunction]
    #[pyo3(signature = (input_ids, *, image_pad_id, image_grids))]
    pub fn mrope_position_ids<'py>(
        py: Python<'py>,
        input_ids: Vec<i64>,
        image_pad_id: i64,
        image_grids: Vec<(usize, usize)>,
    ) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let g = grids(&image_grids);
        let len = input_ids.len();
        let out = py
            .detach(|| rope::mrope_position_ids(&input_ids, image_pad_id, &g))
            .map_err(|e| to_py_err(py, e))?;
        Ok(Array2::from_shape_vec((3, len), out).expect("3 x L").into_pyarray(py))
    }

    /// M-RoPE position ids (3, B, L) int64 of a right-padded batch: row b's first `lengths[b]` tokens
    /// get their positions, padding gets 1 (as the reference fills masked positions).
    #[pyfunction]
    #[pyo3(signature = (input_ids, *, lengths, image_pad_id, image_grids))]
    pub fn mrope_position_ids_batch<'py>(
        py: Python<'py>,
        input_ids: PyReadonlyArray2<'py, i64>,
        lengths: Vec<usize>,
        image_pad_id: i64,
        image_grids: Vec<Vec<(usize, usize)>>,
    ) -> PyResult<Bound<'py, PyArray3<i64>>> {
        let ids = input_ids.as_array().to_owned();
        let (b, l) = ids.dim();
        if lengths.len() != b || image_grids.len() != b {
            return Err(to_py_err(
                py,
                Error::invalid(
                    "lengths",
                    format!(
                        "input_ids has {b} rows but lengths has {} and image_grids {}; pass one of each per row",
                        lengths.len(),
                        image_grids.len()
                    ),
                ),
            ));
        }
        let result = py.detach(|| -> Result<Array3<i64>, Error> {
            let mut out = Array3::<i64>::ones((3, b, l));
            for row in 0..b {
                let n = lengths[row];
                if n > l {
                    return Err(Error::invalid(
                        format!("lengths[{row}]"),
                        format!("length {n} exceeds the padded width {l}"),
                    ));
                }
                let seq: Vec<i64> = ids.row(row).iter().take(n).copied().collect();
                let pos = rope::mrope_position_ids(&seq, image_pad_id, &grids(&image_grids[row]))
                    .map_err(|e| match e {
                        Error::InvalidInput { field, message } => {
                            Error::invalid(format!("{field}[{row}]"), message)
                        }
                        other => other,
                    })?;
                for axis in 0..3 {
                    for (j, &p) in pos[axis * n..(axis + 1) * n].iter().enumerate() {
                        out[[axis, row, j]] = p;
                    }
                }
            }
            Ok(out)
        });
        Ok(result.map_err(|e| to_py_err(py, e))?.into_pyarray(py))
    }

    /// (row, col) per patch (N, 2) int64 in merge-block order.
    #[pyfunction]
    #[pyo3(signature = (grid_h, grid_w, *, merge_size = 2))]
    pub fn vision_position_ids<'py>(
        py: Python<'py>,
        grid_h: usize,
        grid_w: usize,
        merge_size: usize,
    ) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let pos = rope::vision_position_ids(grid_h, grid_w, merge_size).map_err(|e| to_py_err(py, e))?;
        let flat: Vec<i64> = pos.iter().flat_map(|p| [p[0] as i64, p[1] as i64]).collect();
        Ok(Array2::from_shape_vec((pos.len(), 2), flat).expect("N x 2").into_pyarray(py))
    }

    /// Vision rotary tables (cos, sin), each (N, head_dim) float32, rows in merge-block order.
    #[pyfunction]
    #[pyo3(signature = (grid_h, grid_w, *, head_dim, merge_size = 2, theta = 10000.0))]
    pub fn vision_rotary<'py>(
        py: Python<'py>,
        grid_h: usize,
        grid_w: usize,
        head_dim: usize,
        merge_size: usize,
        theta: f64,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<f32>>)> {
        let (cos, sin) = py
            .detach(|| rope::vision_rotary(grid_h, grid_w, merge_size, head_dim, theta))
            .map_err(|e| to_py_err(py, e))?;
        let n = grid_h * grid_w;
        Ok((
            Array2::from_shape_vec((n, head_dim), cos).expect("N x D").into_pyarray(py),
            Array2::from_shape_vec((n, head_dim), sin).expect("N x D").into_pyarray(py),
        ))
    }

    /// Bilinear corners of the learned position table: (indices (N, 4) int64, weights (N, 4) float32).
    #[pyfunction]
    #[pyo3(signature = (grid_h, grid_w, *, num_grid_per_side, merge_size = 2))]
    pub fn pos_embed_interpolation<'py>(
        py: Python<'py>,
        grid_h: usize,
        grid_w: usize,
        num_grid_per_side: usize,
        merge_size: usize,
    ) -> PyResult<(Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>)> {
        let (idx, w) = py
            .detach(|| rope::pos_embed_interpolation(grid_h, grid_w, merge_size, num_grid_per_side))
            .map_err(|e| to_py_err(py, e))?;
        let n = grid_h * grid_w;
        Ok((
            Array2::from_shape_vec((n, 4), idx).expect("N x 4").into_pyarray(py),
            Array2::from_shape_vec((n, 4), w).expect("N x 4").into_pyarray(py),
        ))
    }

    pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(mrope_position_ids, m)?)?;
        m.add_function(wrap_pyfunction!(mrope_position_ids_batch, m)?)?;
        m.add_function(wrap_pyfunction!(vision_position_ids, m)?)?;
        m.add_function(wrap_pyfunction!(vision_rotary, m)?)?;
        m.add_function(wrap_pyfunction!(pos_embed_interpolation, m)?)?;
        Ok(())
    }
}

#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // register: geometry / probe / image (owner: native-image)
    // register: tokenizer / prompt / batch (owner: native-text)
    // register: rope (owner: vision)
    rope_bindings::register(m)?;
    Ok(())
}
