//! Bindings of `video`: plans of file videos (from the header) and frame lists, the first resize of
//! a frame list's frames, and the second resize + temporal-pair rows of sampled frames, the pixel
//! work with the GIL released.

use numpy::ndarray::{Array2, Array4};
use numpy::{IntoPyArray, PyArray2, PyArray4, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::args::{array_values, concat, invalid};
use super::image::{hold_all, name_of, view, Input};
use crate::error::Result;
use crate::image::{Rgb, Source, DEFAULT_MAX_DECODE_PIXELS, ROW};
use crate::video::budget::{self, VideoOptions, VideoPlan};
use crate::video::resize::frames_of;
use crate::video::{frames, resize};
use crate::video::sample::{DEFAULT_FPS, DEFAULT_MAX_FRAMES};

fn plan_dict<'py>(py: Python<'py>, p: &VideoPlan) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("frames", &p.frames)?;
    d.set_item("frames_indices", &p.frames_indices)?;
    d.set_item("metadata_fps", p.metadata_fps)?;
    d.set_item("sample_fps", p.sample_fps)?;
    d.set_item("pre_height", p.pre_height)?;
    d.set_item("pre_width", p.pre_width)?;
    d.set_item("resized_height", p.resized_height)?;
    d.set_item("resized_width", p.resized_width)?;
    d.set_item("min_pixels", p.min_pixels)?;
    d.set_item("total_pixels", p.total_pixels)?;
    d.set_item("max_pixels", p.max_pixels)?;
    d.set_item("grid_thw", (p.grid_thw[0], p.grid_thw[1], p.grid_thw[2]))?;
    d.set_item("tokens_per_group", p.tokens_per_group)?;
    d.set_item("num_pads", p.num_pads())?;
    d.set_item("num_tokens", p.num_tokens())?;
    d.set_item("timestamps", &p.timestamps)?;
    d.set_item("timestamp_text", &p.timestamp_text)?;
    Ok(d)
}

fn options(fps: f64, max_frames: usize, min_pixels: Option<u64>, total_pixels: Option<f64>) -> PyResult<VideoOptions> {
    if !(fps.is_finite() && fps > 0.0) {
        return Err(invalid("fps", format!("got {fps}; pass frames per second > 0 (e.g. 1.0)")));
    }
    if max_frames < 2 {
        return Err(invalid("max_frames", format!("got {max_frames}; pass at least 2 (frames go in pairs)")));
    }
    if let Some(t) = total_pixels {
        if !(t.is_finite() && t > 0.0) {
            return Err(invalid("total_pixels", format!("got {t}; pass a pixel budget > 0 or None")));
        }
    }
    Ok(VideoOptions { fps, max_frames, min_pixels, total_pixels })
}

/// Plan of a file video from its header: sampled frame indices, sizes, grid, tokens, timestamps.
/// With `max_tokens`, a video over that many tokens raises ContextTooLongError saying which
/// max_frames / fps / total_pixels would fit.
#[pyfunction]
#[pyo3(signature = (*, total_frames, video_fps, height, width, fps = DEFAULT_FPS, max_frames = DEFAULT_MAX_FRAMES,
                    min_pixels = None, total_pixels = None, max_tokens = None))]
#[allow(clippy::too_many_arguments)]
fn video_plan_file<'py>(
    py: Python<'py>,
    total_frames: usize,
    video_fps: f64,
    height: u32,
    width: u32,
    fps: f64,
    max_frames: usize,
    min_pixels: Option<u64>,
    total_pixels: Option<f64>,
    max_tokens: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    if !(video_fps.is_finite() && video_fps > 0.0) {
        return Err(invalid("video_fps", format!("got {video_fps}; the stream's average frame rate must be > 0")));
    }
    let opts = options(fps, max_frames, min_pixels, total_pixels)?;
    let plan = match max_tokens {
        Some(b) => budget::check_file_fits(total_frames, video_fps, height, width, &opts, b)?,
        None => budget::plan_file(total_frames, video_fps, height, width, &opts)?,
    };
    plan_dict(py, &plan)
}

/// Plan of a frame list of `num_frames` frames whose first frame is `height` x `width` (before any
/// resize): the 64-frame subsampling, the padding to even, the fetch and second-resize sizes.
#[pyfunction]
#[pyo3(signature = (*, num_frames, height, width, min_pixels = None, total_pixels = None))]
fn video_plan_frames<'py>(
    py: Python<'py>,
    num_frames: usize,
    height: u32,
    width: u32,
    min_pixels: Option<u64>,
    total_pixels: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = options(DEFAULT_FPS, DEFAULT_MAX_FRAMES, min_pixels, total_pixels)?;
    plan_dict(py, &budget::plan_frame_list(num_frames, height, width, &opts)?)
}

/// The frames of a frame list (encoded bytes, paths or uint8 arrays) after the first resize
/// (factor 64, PIL bicubic), stacked (T, H, W, 3) uint8, decoded in parallel.
#[pyfunction]
#[pyo3(signature = (srcs, *, min_pixels = None, max_decode_pixels = DEFAULT_MAX_DECODE_PIXELS, field = "video"))]
fn fetch_video_frames<'py>(
    py: Python<'py>,
    srcs: &Bound<'py, PyAny>,
    min_pixels: Option<u64>,
    max_decode_pixels: u64,
    field: &str,
) -> PyResult<Bound<'py, PyArray4<u8>>> {
    let held = hold_all(srcs, field)?;
    if held.is_empty() {
        return Err(invalid(field, "a frame list needs at least one frame; pass a list of images"));
    }
    let names: Vec<String> = held.iter().enumerate().map(|(i, h)| name_of(h, i, field)).collect();
    let inputs: Vec<Input<'_>> = held.iter().map(view).collect();
    let opts = VideoOptions { min_pixels, ..VideoOptions::default() };
    let got = py.detach(|| -> Result<Vec<Rgb>> {
        // Paths are read first so every frame is a borrowed Source for the parallel decode.
        let owned: Vec<Option<Vec<u8>>> = inputs
            .iter()
            .map(|i| match i {
                Input::Path(p) => std::fs::read(p)
                    .map(Some)
                    .map_err(|e| crate::error::Error::Io { path: p.display().to_string(), message: e.to_string() }),
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        let sources: Vec<Source<'_>> = inputs
            .iter()
            .zip(&owned)
            .zip(&names)
            .map(|((i, o), name)| match (i, o) {
                (_, Some(bytes)) => Source::Encoded { bytes, name },
                (Input::Encoded(bytes), _) => Source::Encoded { bytes, name },
                (&Input::Array { data, height, width, channels }, _) => Source::Array { data, height, width, channels, name },
                (Input::Path(_), None) => unreachable!("paths were read above"),
            })
            .collect();
        frames::fetch_frame_list(&sources, &opts, max_decode_pixels)
    })?;
    stacked(py, &got)
}

/// Frames of one size (non-empty) as a uint8 (T, H, W, 3) array: one fallible copy into the buffer
/// numpy takes over.
fn stacked<'py>(py: Python<'py>, frames: &[Rgb]) -> PyResult<Bound<'py, PyArray4<u8>>> {
    let (h, w) = (frames[0].height, frames[0].width);
    let parts: Vec<&[u8]> = frames.iter().map(|f| f.data.as_slice()).collect();
    let data = concat(&parts, "video frames")?;
    Ok(Array4::from_shape_vec((frames.len(), h, w, 3), data).expect("T x H x W x 3 bytes").into_pyarray(py))
}

/// A uint8 (T, H, W, 3) array, held (read in place by the pixel work, which runs without the GIL;
/// a non-contiguous array is copied once, fallibly), and its (T, H, W).
fn frame_array<'py>(frames: &Bound<'py, PyAny>) -> PyResult<(PyReadonlyArrayDyn<'py, u8>, (usize, usize, usize))> {
    let arr: PyReadonlyArrayDyn<'py, u8> = frames
        .extract()
        .map_err(|_| invalid("frames", "pass the frames as a uint8 numpy array (T, H, W, 3)"))?;
    let shape = arr.shape().to_vec();
    if shape.len() != 4 || shape[3] != 3 || shape[1] == 0 || shape[2] == 0 {
        return Err(invalid("frames", format!("array of shape {shape:?}; pass a uint8 array (T, H, W, 3), H and W >= 1")));
    }
    Ok((arr, (shape[0], shape[1], shape[2])))
}

/// The second resize alone (torchvision's antialiased bicubic on uint8 frames): (T, H, W, 3) ->
/// (T, resized_height, resized_width, 3) uint8. For checking the kernel; the pipeline uses
/// `preprocess_video_frames`.
#[pyfunction]
#[pyo3(signature = (frames, *, resized_height, resized_width))]
fn resize_video_frames<'py>(
    py: Python<'py>,
    frames: &Bound<'py, PyAny>,
    resized_height: usize,
    resized_width: usize,
) -> PyResult<Bound<'py, PyArray4<u8>>> {
    if resized_height == 0 || resized_width == 0 || (resized_height as u64) * (resized_width as u64) > DEFAULT_MAX_DECODE_PIXELS {
        return Err(invalid("resized_height", format!(
            "{resized_height}x{resized_width}; pass a size from 1x1 to {DEFAULT_MAX_DECODE_PIXELS} pixels")));
    }
    let (arr, (t, h, w)) = frame_array(frames)?;
    if t == 0 {
        return Err(invalid("frames", "no frames; pass a uint8 array (T, H, W, 3) with T >= 1"));
    }
    let data = array_values(&arr, "video frames")?;
    let out = py.detach(|| resize::resize_frames(&frames_of(&data, h, w), resized_height, resized_width))?;
    stacked(py, &out)
}

/// Second resize of sampled frames (uint8 (T, H, W, 3), T even) to the plan's size and the video
/// processor's rows: (pixel_values (N, 1536) float32, (t, h, w)).
#[pyfunction]
#[pyo3(signature = (frames, *, resized_height, resized_width))]
fn preprocess_video_frames<'py>(
    py: Python<'py>,
    frames: &Bound<'py, PyAny>,
    resized_height: usize,
    resized_width: usize,
) -> PyResult<(Bound<'py, PyArray2<f32>>, (u32, u32, u32))> {
    let (arr, (t, h, w)) = frame_array(frames)?;
    let data = array_values(&arr, "video frames")?;
    let rows = py.detach(|| frames::preprocess_frames(&frames_of(&data, h, w), resized_height, resized_width))?;
    let n = rows.len() / ROW;
    let grid = ((t / 2) as u32, (resized_height / 16) as u32, (resized_width / 16) as u32);
    let out = Array2::from_shape_vec((n, ROW), rows).expect("N x 1536 values");
    Ok((out.into_pyarray(py), grid))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(video_plan_file, m)?)?;
    m.add_function(wrap_pyfunction!(video_plan_frames, m)?)?;
    m.add_function(wrap_pyfunction!(fetch_video_frames, m)?)?;
    m.add_function(wrap_pyfunction!(preprocess_video_frames, m)?)?;
    m.add_function(wrap_pyfunction!(resize_video_frames, m)?)?;
    Ok(())
}
