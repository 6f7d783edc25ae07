//! Bindings of `rope`: M-RoPE position ids of the decoder and the vision tower's position tables.

use numpy::ndarray::{Array2, Array3};
use numpy::{IntoPyArray, PyArray2, PyArray3, PyReadonlyArray2};
use pyo3::prelude::*;

use crate::image::MERGE;
use crate::rope::{self, MergedGrid};

/// A 2-D numpy table, one row per patch.
type Table<'py, T> = Bound<'py, PyArray2<T>>;

fn grids(list: &[(usize, usize)]) -> Vec<MergedGrid> {
    list.iter().copied().map(MergedGrid::from).collect()
}

/// The pad ids whose runs are blocks: the image pad, and the video pad when given.
fn pad_ids(image_pad_id: i64, video_pad_id: Option<i64>) -> Vec<i64> {
    std::iter::once(image_pad_id).chain(video_pad_id).collect()
}

/// M-RoPE position ids (3, L) int64 of one token sequence; `image_grids` = merged (rows, cols) per
/// image and, with `video_pad_id`, per video frame pair, in prompt order.
#[pyfunction]
#[pyo3(signature = (input_ids, *, image_pad_id, image_grids, video_pad_id = None))]
fn mrope_position_ids<'py>(
    py: Python<'py>,
    input_ids: Vec<i64>,
    image_pad_id: i64,
    image_grids: Vec<(usize, usize)>,
    video_pad_id: Option<i64>,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let g = grids(&image_grids);
    let pads = pad_ids(image_pad_id, video_pad_id);
    let out = py.detach(|| rope::mrope_position_ids(&input_ids, &pads, &g))?;
    Ok(Array2::from_shape_vec((3, input_ids.len()), out).expect("3 x L").into_pyarray(py))
}

/// M-RoPE position ids (3, B, L) int64 of a right-padded batch: row b's first `lengths[b]` tokens
/// get their positions, padding gets 1 (as the reference fills masked positions).
#[pyfunction]
#[pyo3(signature = (input_ids, *, lengths, image_pad_id, image_grids, video_pad_id = None))]
fn mrope_position_ids_batch<'py>(
    py: Python<'py>,
    input_ids: PyReadonlyArray2<'py, i64>,
    lengths: Vec<usize>,
    image_pad_id: i64,
    image_grids: Vec<Vec<(usize, usize)>>,
    video_pad_id: Option<i64>,
) -> PyResult<Bound<'py, PyArray3<i64>>> {
    let pads = pad_ids(image_pad_id, video_pad_id);
    let ids = input_ids.as_array();
    let (b, l) = ids.dim();
    let flat: Vec<i64> = ids.iter().copied().collect();
    let g: Vec<Vec<MergedGrid>> = image_grids.iter().map(|row| grids(row)).collect();
    let out = py.detach(|| rope::mrope_position_ids_batch(&flat, b, l, &lengths, &pads, &g))?;
    Ok(Array3::from_shape_vec((3, b, l), out).expect("3 x B x L").into_pyarray(py))
}

/// (row, col) per patch (N, 2) int64 in merge-block order.
#[pyfunction]
#[pyo3(signature = (grid_h, grid_w, *, merge_size = MERGE))]
fn vision_position_ids<'py>(
    py: Python<'py>,
    grid_h: usize,
    grid_w: usize,
    merge_size: usize,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let pos = rope::vision_position_ids(grid_h, grid_w, merge_size)?;
    let flat: Vec<i64> = pos.iter().flat_map(|p| [p[0] as i64, p[1] as i64]).collect();
    Ok(Array2::from_shape_vec((pos.len(), 2), flat).expect("N x 2").into_pyarray(py))
}

/// Vision rotary tables (cos, sin), each (N, head_dim) float32, rows in merge-block order.
#[pyfunction]
#[pyo3(signature = (grid_h, grid_w, *, head_dim, merge_size = MERGE, theta = 10000.0))]
fn vision_rotary<'py>(
    py: Python<'py>,
    grid_h: usize,
    grid_w: usize,
    head_dim: usize,
    merge_size: usize,
    theta: f64,
) -> PyResult<(Table<'py, f32>, Table<'py, f32>)> {
    let (cos, sin) = py.detach(|| rope::vision_rotary(grid_h, grid_w, merge_size, head_dim, theta))?;
    let n = grid_h * grid_w;
    Ok((
        Array2::from_shape_vec((n, head_dim), cos).expect("N x D").into_pyarray(py),
        Array2::from_shape_vec((n, head_dim), sin).expect("N x D").into_pyarray(py),
    ))
}

/// Bilinear corners of the learned position table: (indices (N, 4) int64, weights (N, 4) float32).
#[pyfunction]
#[pyo3(signature = (grid_h, grid_w, *, num_grid_per_side, merge_size = MERGE))]
fn pos_embed_interpolation<'py>(
    py: Python<'py>,
    grid_h: usize,
    grid_w: usize,
    num_grid_per_side: usize,
    merge_size: usize,
) -> PyResult<(Table<'py, i64>, Table<'py, f32>)> {
    let (idx, w) = py.detach(|| rope::pos_embed_interpolation(grid_h, grid_w, merge_size, num_grid_per_side))?;
    let n = grid_h * grid_w;
    Ok((
        Array2::from_shape_vec((n, 4), idx).expect("N x 4").into_pyarray(py),
        Array2::from_shape_vec((n, 4), w).expect("N x 4").into_pyarray(py),
    ))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(mrope_position_ids, m)?)?;
    m.add_function(wrap_pyfunction!(mrope_position_ids_batch, m)?)?;
    m.add_function(wrap_pyfunction!(vision_position_ids, m)?)?;
    m.add_function(wrap_pyfunction!(vision_rotary, m)?)?;
    m.add_function(wrap_pyfunction!(pos_embed_interpolation, m)?)?;
    Ok(())
}
