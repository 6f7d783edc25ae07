//! Bindings of `probe` and `image`: header probes and the reference preprocessing of encoded bytes,
//! file paths or uint8 arrays, many images per call, in parallel with the GIL released.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use numpy::ndarray::{Array2, Array3};
use numpy::{IntoPyArray, PyArray2, PyArray3, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};
use rayon::prelude::*;

use super::args::{array_values, invalid, type_name};
use crate::error::{Error, Result};
use crate::geometry::{DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS};
use crate::image::{self, Options, Preprocessed, Source, DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT, DEFAULT_MAX_DECODE_PIXELS};
use crate::probe;

/// What Python handed us, kept alive (and borrowed from) while the GIL is released.
pub(super) enum Held<'py> {
    Bytes(Bound<'py, PyBytes>),
    Owned(Vec<u8>),
    Path(PathBuf),
    Array(PyReadonlyArrayDyn<'py, u8>, Option<Vec<u8>>),
}

/// Send-able views of the held inputs, for the GIL-free work.
pub(super) enum Input<'a> {
    Encoded(&'a [u8]),
    Path(&'a Path),
    Array { data: &'a [u8], height: usize, width: usize, channels: usize },
}

pub(super) fn hold<'py>(obj: &Bound<'py, PyAny>, field: &str) -> PyResult<Held<'py>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Held::Bytes(b.clone()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Held::Owned(b.to_vec()));
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, u8>>() {
        let nd = a.ndim();
        let ok = nd == 2 || (nd == 3 && matches!(a.shape()[2], 1 | 3 | 4));
        if !ok {
            return Err(invalid(field, format!(
                "image array of shape {:?}; pass a uint8 array (H, W), (H, W, 3) or (H, W, 4) (RGBA)", a.shape())));
        }
        let copy = match array_values(&a, field)? {
            Cow::Borrowed(_) => None,
            Cow::Owned(v) => Some(v),
        };
        return Ok(Held::Array(a, copy));
    }
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        let dtype = a.dtype().to_string();
        return Err(invalid(field, format!(
            "image array of dtype {dtype}; pass a uint8 array (e.g. arr.astype(numpy.uint8) for 0-255 values)")));
    }
    if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
        let p: PathBuf = obj.extract()?;
        return Ok(Held::Path(p));
    }
    Err(invalid(field, format!("got {}; pass encoded image bytes, a file path, or a uint8 numpy array", type_name(obj))))
}

/// `hold` over a sequence, items named `{field}[i]`.
pub(super) fn hold_all<'py>(srcs: &Bound<'py, PyAny>, field: &str) -> PyResult<Vec<Held<'py>>> {
    srcs.try_iter()?.enumerate().map(|(i, o)| hold(&o?, &format!("{field}[{i}]"))).collect()
}

pub(super) fn view<'a>(h: &'a Held<'_>) -> Input<'a> {
    match h {
        Held::Bytes(b) => Input::Encoded(b.as_bytes()),
        Held::Owned(v) => Input::Encoded(v),
        Held::Path(p) => Input::Path(p),
        Held::Array(a, copy) => {
            let shape = a.shape();
            let data = match copy {
                Some(v) => v.as_slice(),
                None => a.as_slice().expect("contiguous checked in hold"),
            };
            let channels = if shape.len() == 3 { shape[2] } else { 1 };
            Input::Array { data, height: shape[0], width: shape[1], channels }
        }
    }
}

/// The name errors give an input: its path, else `{field}[i]`.
pub(super) fn name_of(h: &Held<'_>, i: usize, field: &str) -> String {
    match h {
        Held::Path(p) => p.display().to_string(),
        _ => format!("{field}[{i}]"),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Io { path: path.display().to_string(), message: e.to_string() })
}

/// Run `f` on the `Source` of an input (reading a path first).
pub(super) fn with_source<T>(input: &Input<'_>, name: &str, f: impl FnOnce(&Source) -> Result<T>) -> Result<T> {
    match *input {
        Input::Encoded(bytes) => f(&Source::Encoded { bytes, name }),
        Input::Path(p) => {
            let bytes = read_file(p)?;
            f(&Source::Encoded { bytes: &bytes, name })
        }
        Input::Array { data, height, width, channels } => f(&Source::Array { data, height, width, channels, name }),
    }
}

/// Header-only decode cost of an input (0 where the header cannot be read: the task then reports that).
fn cost_of(input: &Input<'_>, name: &str, opts: &Options) -> u64 {
    let cost = match *input {
        Input::Encoded(bytes) => image::decode_cost(&Source::Encoded { bytes, name }, opts),
        Input::Path(p) => probe::probe_file(p).and_then(|info| image::cost_from_info(&info, name, opts)),
        Input::Array { data, height, width, channels } => {
            image::decode_cost(&Source::Array { data, height, width, channels, name }, opts)
        }
    };
    cost.unwrap_or(0)
}

type PreTuple<'py> = (Bound<'py, PyArray2<f32>>, (u32, u32, u32), u64, (u32, u32), (u32, u32));

fn to_tuple<'py>(py: Python<'py>, p: Preprocessed) -> PreTuple<'py> {
    let n = p.num_patches();
    let arr = Array2::from_shape_vec((n, image::ROW), p.pixel_values).expect("N x 1536 values");
    (
        arr.into_pyarray(py),
        (p.grid_thw[0], p.grid_thw[1], p.grid_thw[2]),
        p.num_tokens,
        (p.original_height, p.original_width),
        (p.resized_height, p.resized_width),
    )
}

/// Header-only probe of encoded bytes or a file path: (format, width, height).
#[pyfunction]
#[pyo3(signature = (src, *, name = None))]
fn probe_image(py: Python<'_>, src: &Bound<'_, PyAny>, name: Option<String>) -> PyResult<(&'static str, u32, u32)> {
    let held = hold(src, "src")?;
    let name = name.unwrap_or_else(|| name_of(&held, 0, "src"));
    let input = view(&held);
    let info = py.detach(|| match input {
        Input::Encoded(b) => probe::probe_bytes(b, &name),
        Input::Path(p) => probe::probe_file(p),
        Input::Array { .. } => Err(Error::invalid("src", "probe_image reads encoded images; an array's size is its shape")),
    })?;
    Ok((info.format.name(), info.width, info.height))
}

/// Header-only probes of many inputs (paths or bytes), in parallel: list of (format, width, height).
#[pyfunction]
#[pyo3(signature = (srcs, *, field = "images"))]
fn probe_images(py: Python<'_>, srcs: &Bound<'_, PyAny>, field: &str) -> PyResult<Vec<(&'static str, u32, u32)>> {
    let held = hold_all(srcs, field)?;
    let names: Vec<String> = held.iter().enumerate().map(|(i, h)| name_of(h, i, field)).collect();
    let inputs: Vec<Input<'_>> = held.iter().map(view).collect();
    let out = py.detach(|| {
        inputs
            .par_iter()
            .zip(&names)
            .map(|(input, name)| {
                let info = match *input {
                    Input::Encoded(b) => probe::probe_bytes(b, name)?,
                    Input::Path(p) => probe::probe_file(p)?,
                    Input::Array { height, width, .. } => return Ok(("array", width as u32, height as u32)),
                };
                Ok((info.format.name(), info.width, info.height))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(out)
}

/// Preprocess many images (encoded bytes, paths or uint8 arrays) in one call with the GIL
/// released, in parallel (rayon). Returns per image
/// (pixel_values (N, 1536) float32, (t, h, w), num_tokens, (orig_h, orig_w), (resized_h, resized_w)).
/// `names` label the inputs in errors (default: the path, or f"{field}[i]").
#[pyfunction]
#[pyo3(signature = (srcs, *, min_pixels = DEFAULT_MIN_PIXELS, max_pixels = DEFAULT_MAX_PIXELS,
                    max_decode_pixels = DEFAULT_MAX_DECODE_PIXELS,
                    max_decode_bytes_in_flight = DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT, names = None, field = "images"))]
#[allow(clippy::too_many_arguments)]
fn preprocess_images<'py>(
    py: Python<'py>,
    srcs: &Bound<'py, PyAny>,
    min_pixels: u64,
    max_pixels: u64,
    max_decode_pixels: u64,
    max_decode_bytes_in_flight: u64,
    names: Option<Vec<String>>,
    field: &str,
) -> PyResult<Vec<PreTuple<'py>>> {
    let held = hold_all(srcs, field)?;
    let names: Vec<String> = match names {
        Some(n) if n.len() == held.len() => n,
        Some(n) => {
            return Err(invalid(
                "names",
                format!("{} names for {} images; pass one name per image or None", n.len(), held.len()),
            ))
        }
        None => held.iter().enumerate().map(|(i, h)| name_of(h, i, field)).collect(),
    };
    let inputs: Vec<Input<'_>> = held.iter().map(view).collect();
    let opts = Options { min_pixels, max_pixels, max_decode_pixels, max_decode_bytes_in_flight };
    // rayon owns parallelism: one task per image, nested row-parallel work inside each, in waves
    // that fit the decode budgets (run_budgeted waits here, outside the pool).
    let results = py.detach(|| {
        let costs: Vec<u64> = inputs.par_iter().zip(&names).map(|(input, name)| cost_of(input, name, &opts)).collect();
        image::run_budgeted(&costs, &opts, |i| with_source(&inputs[i], &names[i], |s| image::preprocess(s, &opts)))
            .into_iter()
            .collect::<Result<Vec<Preprocessed>>>()
    })?;
    Ok(results.into_iter().map(|p| to_tuple(py, p)).collect())
}

/// The reference's resized RGB image (H, W, 3) uint8 of one input (what the processor sees), or
/// the decoded image before the resize with `resize=False`.
#[pyfunction]
#[pyo3(signature = (src, *, min_pixels = DEFAULT_MIN_PIXELS, max_pixels = DEFAULT_MAX_PIXELS,
                    max_decode_pixels = DEFAULT_MAX_DECODE_PIXELS,
                    max_decode_bytes_in_flight = DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT, resize = true))]
fn decode_rgb<'py>(
    py: Python<'py>,
    src: &Bound<'py, PyAny>,
    min_pixels: u64,
    max_pixels: u64,
    max_decode_pixels: u64,
    max_decode_bytes_in_flight: u64,
    resize: bool,
) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let held = hold(src, "src")?;
    let name = name_of(&held, 0, "src");
    let input = view(&held);
    let opts = Options { min_pixels, max_pixels, max_decode_pixels, max_decode_bytes_in_flight };
    let rgb = py.detach(|| {
        with_source(&input, &name, |s| {
            if resize {
                image::resized_rgb(s, &opts).map(|r| r.0)
            } else {
                image::source_to_rgb(s, &opts)
            }
        })
    })?;
    let arr = Array3::from_shape_vec((rgb.height, rgb.width, 3), rgb.data).expect("H x W x 3 bytes");
    Ok(arr.into_pyarray(py))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(probe_image, m)?)?;
    m.add_function(wrap_pyfunction!(probe_images, m)?)?;
    m.add_function(wrap_pyfunction!(preprocess_images, m)?)?;
    m.add_function(wrap_pyfunction!(decode_rgb, m)?)?;
    m.add("DEFAULT_MAX_DECODE_PIXELS", DEFAULT_MAX_DECODE_PIXELS)?;
    m.add("DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT", DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT)?;
    Ok(())
}
