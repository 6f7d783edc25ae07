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
        // The image's own name (e.g. `srcs[3]` or a path) is the field the caller must fix.
        Error::ImageDecode { source, .. } => ("ImageDecodeError", Some(source.clone())),
        Error::ImageTooLarge { source, .. } => ("ImageTooLargeError", Some(source.clone())),
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
mod image_bindings {
    use std::path::{Path, PathBuf};

    use numpy::ndarray::{Array2, Array3};
    use numpy::{IntoPyArray, PyArray2, PyArray3, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
    use pyo3::prelude::*;
    use pyo3::types::{PyByteArray, PyBytes, PyString};
    use rayon::prelude::*;

    use super::to_py_err;
    use crate::error::{Error, Result};
    use crate::geometry::{self, FACTOR};
    use crate::image::{self, Options, Preprocessed, Source, DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT, DEFAULT_MAX_DECODE_PIXELS};
    use crate::probe;

    /// What Python handed us, kept alive (and borrowed from) while the GIL is released.
    enum Held<'py> {
        Bytes(Bound<'py, PyBytes>),
        Owned(Vec<u8>),
        Path(PathBuf),
        Array(PyReadonlyArrayDyn<'py, u8>, Option<Vec<u8>>),
    }

    /// Send-able views of the held inputs, for the GIL-free work.
    enum Input<'a> {
        Encoded(&'a [u8]),
        Path(&'a Path),
        Array { data: &'a [u8], height: usize, width: usize, channels: usize },
    }

    fn type_name(obj: &Bound<'_, PyAny>) -> String {
        obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
    }

    fn hold<'py>(obj: &Bound<'py, PyAny>, field: &str) -> PyResult<Held<'py>> {
        let py = obj.py();
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
                return Err(to_py_err(py, Error::invalid(field, format!(
                    "image array of shape {:?}; pass a uint8 array (H, W), (H, W, 3) or (H, W, 4) (RGBA)", a.shape()))));
            }
            let copy = if a.as_slice().is_ok() { None } else { Some(a.as_array().iter().copied().collect()) };
            return Ok(Held::Array(a, copy));
        }
        if let Ok(a) = obj.cast::<PyUntypedArray>() {
            let dtype = a.dtype().to_string();
            return Err(to_py_err(py, Error::invalid(field, format!(
                "image array of dtype {dtype}; pass a uint8 array (e.g. arr.astype(numpy.uint8) for 0-255 values)"))));
        }
        if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
            let p: PathBuf = obj.extract()?;
            return Ok(Held::Path(p));
        }
        Err(to_py_err(py, Error::invalid(field, format!(
            "got {}; pass encoded image bytes, a file path, or a uint8 numpy array", type_name(obj)))))
    }

    fn view<'a>(h: &'a Held<'_>) -> Input<'a> {
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

    fn name_of(h: &Held<'_>, i: usize, field: &str) -> String {
        match h {
            Held::Path(p) => p.display().to_string(),
            _ => format!("{field}[{i}]"),
        }
    }

    fn read_file(path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| Error::Io { path: path.display().to_string(), message: e.to_string() })
    }

    /// Run `f` on the `Source` of an input (reading a path first).
    fn with_source<T>(input: &Input<'_>, name: &str, f: impl FnOnce(&Source) -> Result<T>) -> Result<T> {
        match *input {
            Input::Encoded(bytes) => f(&Source::Encoded { bytes, name }),
            Input::Path(p) => {
                let bytes = read_file(p)?;
                f(&Source::Encoded { bytes: &bytes, name })
            }
            Input::Array { data, height, width, channels } => {
                f(&Source::Array { data, height, width, channels, name })
            }
        }
    }

    fn options(min_pixels: u64, max_pixels: u64, max_decode_pixels: u64, max_decode_bytes_in_flight: u64) -> Options {
        Options { min_pixels, max_pixels, max_decode_pixels, max_decode_bytes_in_flight }
    }

    /// Header-only decode cost of an input (0 where the header cannot be read: the task reports that).
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

    /// (resized_height, resized_width) of the reference smart_resize (factor 32).
    #[pyfunction]
    #[pyo3(signature = (height, width, min_pixels = geometry::DEFAULT_MIN_PIXELS, max_pixels = geometry::DEFAULT_MAX_PIXELS))]
    fn smart_resize(py: Python<'_>, height: u32, width: u32, min_pixels: u64, max_pixels: u64) -> PyResult<(u32, u32)> {
        geometry::smart_resize(height, width, FACTOR, min_pixels, max_pixels).map_err(|e| to_py_err(py, e))
    }

    /// Image tokens of an original (height, width) image under the budget.
    #[pyfunction]
    #[pyo3(signature = (height, width, min_pixels = geometry::DEFAULT_MIN_PIXELS, max_pixels = geometry::DEFAULT_MAX_PIXELS))]
    fn image_tokens(py: Python<'_>, height: u32, width: u32, min_pixels: u64, max_pixels: u64) -> PyResult<u64> {
        geometry::tokens_for(height, width, min_pixels, max_pixels).map_err(|e| to_py_err(py, e))
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
        });
        let info = info.map_err(|e| to_py_err(py, e))?;
        Ok((info.format.name(), info.width, info.height))
    }

    /// Header-only probes of many inputs (paths or bytes), in parallel: list of (format, width, height).
    #[pyfunction]
    #[pyo3(signature = (srcs, *, field = "images"))]
    fn probe_images(py: Python<'_>, srcs: &Bound<'_, PyAny>, field: &str) -> PyResult<Vec<(&'static str, u32, u32)>> {
        let held: Vec<Held<'_>> = srcs.try_iter()?.enumerate()
            .map(|(i, o)| hold(&o?, &format!("{field}[{i}]"))).collect::<PyResult<_>>()?;
        let names: Vec<String> = held.iter().enumerate().map(|(i, h)| name_of(h, i, field)).collect();
        let inputs: Vec<Input<'_>> = held.iter().map(view).collect();
        let out: Result<Vec<(&'static str, u32, u32)>> = py.detach(|| {
            inputs.par_iter().zip(&names).map(|(input, name)| {
                let info = match *input {
                    Input::Encoded(b) => probe::probe_bytes(b, name)?,
                    Input::Path(p) => probe::probe_file(p)?,
                    Input::Array { height, width, .. } => return Ok(("array", width as u32, height as u32)),
                };
                Ok((info.format.name(), info.width, info.height))
            }).collect()
        });
        out.map_err(|e| to_py_err(py, e))
    }

    /// Preprocess many images (encoded bytes, paths or uint8 arrays) in one call with the GIL
    /// released, in parallel (rayon). Returns per image
    /// (pixel_values (N, 1536) float32, (t, h, w), num_tokens, (orig_h, orig_w), (resized_h, resized_w)).
    /// `names` label the inputs in errors (default: the path, or f"{field}[i]").
    #[pyfunction]
    #[pyo3(signature = (srcs, *, min_pixels = geometry::DEFAULT_MIN_PIXELS, max_pixels = geometry::DEFAULT_MAX_PIXELS,
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
        let held: Vec<Held<'py>> = srcs.try_iter()?.enumerate()
            .map(|(i, o)| hold(&o?, &format!("{field}[{i}]"))).collect::<PyResult<_>>()?;
        let names: Vec<String> = match names {
            Some(n) if n.len() == held.len() => n,
            Some(n) => return Err(to_py_err(py, Error::invalid("names", format!(
                "{} names for {} images; pass one name per image or None", n.len(), held.len())))),
            None => held.iter().enumerate().map(|(i, h)| name_of(h, i, field)).collect(),
        };
        let inputs: Vec<Input<'_>> = held.iter().map(view).collect();
        let opts = options(min_pixels, max_pixels, max_decode_pixels, max_decode_bytes_in_flight);
        // rayon owns parallelism: one task per image, nested row-parallel work inside each, in
        // waves that fit the decode budgets (run_budgeted waits here, outside the pool).
        let results: Result<Vec<Preprocessed>> = py.detach(|| {
            let costs: Vec<u64> = inputs.par_iter().zip(&names).map(|(input, name)| cost_of(input, name, &opts)).collect();
            image::run_budgeted(&costs, &opts, |i| with_source(&inputs[i], &names[i], |s| image::preprocess(s, &opts)))
                .into_iter()
                .collect()
        });
        let results = results.map_err(|e| to_py_err(py, e))?;
        Ok(results.into_iter().map(|p| to_tuple(py, p)).collect())
    }

    /// The reference's resized RGB image (H, W, 3) uint8 of one input (what the processor sees).
    #[pyfunction]
    #[pyo3(signature = (src, *, min_pixels = geometry::DEFAULT_MIN_PIXELS, max_pixels = geometry::DEFAULT_MAX_PIXELS,
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
        let opts = options(min_pixels, max_pixels, max_decode_pixels, max_decode_bytes_in_flight);
        let rgb = py.detach(|| {
            with_source(&input, &name, |s| {
                if resize { image::resized_rgb(s, &opts).map(|r| r.0) } else { image::source_to_rgb(s, &opts) }
            })
        }).map_err(|e| to_py_err(py, e))?;
        let arr = Array3::from_shape_vec((rgb.height, rgb.width, 3), rgb.data).expect("H x W x 3 bytes");
        Ok(arr.into_pyarray(py))
    }

    pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(smart_resize, m)?)?;
        m.add_function(wrap_pyfunction!(image_tokens, m)?)?;
        m.add_function(wrap_pyfunction!(probe_image, m)?)?;
        m.add_function(wrap_pyfunction!(probe_images, m)?)?;
        m.add_function(wrap_pyfunction!(preprocess_images, m)?)?;
        m.add_function(wrap_pyfunction!(decode_rgb, m)?)?;
        m.add("DEFAULT_MAX_DECODE_PIXELS", DEFAULT_MAX_DECODE_PIXELS)?;
        m.add("DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT", DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT)?;
        m.add("DEFAULT_MIN_PIXELS", crate::geometry::DEFAULT_MIN_PIXELS)?;
        m.add("DEFAULT_MAX_PIXELS", crate::geometry::DEFAULT_MAX_PIXELS)?;
        m.add("IMAGE_FACTOR", crate::geometry::FACTOR)?;
        Ok(())
    }
}

// ---- tokenizer / prompt / batch bindings (owner: native-text) ----
mod text_bindings {
    use std::path::PathBuf;
    use std::sync::Arc;

    use numpy::ndarray::{Array1, Array2, Array3};
    use numpy::{IntoPyArray, PyArray1, PyArray2, PyArray3, PyReadonlyArray2};
    use pyo3::prelude::*;
    use pyo3::types::{PyAnyMethods, PyString};

    use super::to_py_err;
    use crate::batch;
    use crate::error::Error;
    use crate::prompt::{self, Side};
    use crate::tokenize::Tokenizer;

    fn invalid(py: Python<'_>, field: impl Into<String>, message: impl Into<String>) -> PyErr {
        to_py_err(py, Error::invalid(field, message))
    }

    /// A Python str as a Rust String; non-str or unencodable text (lone surrogates) -> InvalidInputError.
    fn text_arg(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<String> {
        let py = obj.py();
        let s = obj
            .cast::<PyString>()
            .map_err(|_| invalid(py, field, format!("got {}; pass a str", type_name(obj))))?;
        s.to_str()
            .map(str::to_owned)
            .map_err(|_| invalid(py, field, "the text is not valid Unicode (lone surrogate); pass well-formed text"))
    }

    fn opt_text_arg(obj: Option<&Bound<'_, PyAny>>, field: &str) -> PyResult<Option<String>> {
        match obj {
            None => Ok(None),
            Some(o) if o.is_none() => Ok(None),
            Some(o) => text_arg(o, field).map(Some),
        }
    }

    fn type_name(obj: &Bound<'_, PyAny>) -> String {
        obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
    }

    /// A sequence of str (a bare str is refused: it would silently become one text per character).
    fn texts_arg(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Vec<String>> {
        let py = obj.py();
        if obj.is_instance_of::<PyString>() {
            return Err(invalid(py, field, "got a str; pass a list of str (e.g. [text])"));
        }
        let iter = obj
            .try_iter()
            .map_err(|_| invalid(py, field, format!("got {}; pass a list of str", type_name(obj))))?;
        iter.enumerate()
            .map(|(i, item)| text_arg(&item?, &format!("{field}[{i}]")))
            .collect()
    }

    /// A sequence of non-negative ints.
    fn counts_arg(obj: &Bound<'_, PyAny>, field: &str, what: &str) -> PyResult<Vec<usize>> {
        let py = obj.py();
        let iter = obj
            .try_iter()
            .map_err(|_| invalid(py, field, format!("got {}; pass a list of {what}", type_name(obj))))?;
        iter.enumerate()
            .map(|(i, item)| {
                let item = item?;
                item.extract::<u64>()
                    .ok()
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| invalid(py, format!("{field}[{i}]"), format!("got {item}; pass {what} (an int >= 0)")))
            })
            .collect()
    }

    fn side_arg(images: &Bound<'_, PyAny>, texts: &Bound<'_, PyAny>, name: &str) -> PyResult<Side> {
        Ok(Side {
            images: counts_arg(images, &format!("{name}_images"), "image token counts")?,
            texts: texts_arg(texts, &format!("{name}_texts"))?,
        })
    }

    /// A sequence of (image token counts, texts) pairs.
    fn sides_arg(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Vec<Side>> {
        let py = obj.py();
        let iter = obj
            .try_iter()
            .map_err(|_| invalid(py, field, "pass a list of (image_token_counts, texts) pairs"))?;
        iter.enumerate()
            .map(|(i, item)| {
                let item = item?;
                let (imgs, txts): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract().map_err(|_| {
                    invalid(py, format!("{field}[{i}]"), "pass an (image_token_counts, texts) pair, e.g. ([256], [\"caption\"])")
                })?;
                Ok(Side {
                    images: counts_arg(&imgs, &format!("{field}[{i}].images"), "image token counts")?,
                    texts: texts_arg(&txts, &format!("{field}[{i}].texts"))?,
                })
            })
            .collect()
    }

    /// Tokenizer of a checkpoint's tokenizer.json. User text is always plain: `encode` never turns
    /// special-token strings (e.g. "<|im_end|>") into control tokens and adds no special tokens.
    #[pyclass(name = "Tokenizer", module = "vlrank._native", frozen)]
    pub struct PyTokenizer {
        pub(crate) inner: Arc<Tokenizer>,
    }

    #[pymethods]
    impl PyTokenizer {
        /// Load a tokenizer.json; a missing or unusable file raises TokenizerError.
        #[staticmethod]
        fn from_file(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
            let tok = py.detach(|| Tokenizer::from_file(&path)).map_err(|e| to_py_err(py, e))?;
            Ok(PyTokenizer { inner: Arc::new(tok) })
        }

        /// Plain-text ids of `text` (no special tokens added or parsed).
        fn encode(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
            let text = text_arg(text, "text")?;
            let tok = &self.inner;
            py.detach(|| tok.encode(&text)).map_err(|e| to_py_err(py, e))
        }

        /// `encode` over many texts, in parallel.
        fn encode_batch(&self, py: Python<'_>, texts: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u32>>> {
            let texts = texts_arg(texts, "texts")?;
            let tok = &self.inner;
            py.detach(|| tok.encode_batch(&texts)).map_err(|e| to_py_err(py, e))
        }

        /// Text of `ids` (added-token ids decode to their content unless skip_special_tokens drops
        /// the special ones); an id outside the vocabulary raises InvalidInputError.
        #[pyo3(signature = (ids, *, skip_special_tokens = false))]
        fn decode(&self, py: Python<'_>, ids: &Bound<'_, PyAny>, skip_special_tokens: bool) -> PyResult<String> {
            let ids: Vec<u32> = counts_arg(ids, "ids", "token ids")?
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    u32::try_from(v).map_err(|_| invalid(py, format!("ids[{i}]"), format!("{v} is not a token id")))
                })
                .collect::<PyResult<_>>()?;
            let tok = &self.inner;
            py.detach(|| tok.decode(&ids, skip_special_tokens)).map_err(|e| to_py_err(py, e))
        }

        /// Id of a vocabulary entry or added token written exactly, or None.
        fn token_to_id(&self, token: &str) -> Option<u32> {
            self.inner.token_to_id(token)
        }

        /// Vocabulary entry (byte-level form) or added-token content of `id`, or None.
        fn id_to_token(&self, id: u32) -> Option<String> {
            self.inner.id_to_token(id)
        }

        /// Model vocabulary plus added tokens.
        #[getter]
        fn vocab_size(&self) -> usize {
            self.inner.vocab_size()
        }

        fn __repr__(&self) -> String {
            format!("Tokenizer(vocab_size={})", self.inner.vocab_size())
        }
    }

    fn tok_of(t: &Bound<'_, PyTokenizer>) -> Arc<Tokenizer> {
        t.get().inner.clone()
    }

    /// Qwen3-VL-Reranker prompt ids of one (query, document) pair, truncated the official way.
    #[pyfunction]
    #[pyo3(signature = (tokenizer, *, query_images, query_texts, doc_images, doc_texts, instruction = None, max_length = prompt::VL_RERANK_MAX_LENGTH))]
    #[allow(clippy::too_many_arguments)]
    pub fn build_vl_rerank_ids(
        py: Python<'_>,
        tokenizer: &Bound<'_, PyTokenizer>,
        query_images: &Bound<'_, PyAny>,
        query_texts: &Bound<'_, PyAny>,
        doc_images: &Bound<'_, PyAny>,
        doc_texts: &Bound<'_, PyAny>,
        instruction: Option<&Bound<'_, PyAny>>,
        max_length: usize,
    ) -> PyResult<Vec<u32>> {
        let q = side_arg(query_images, query_texts, "query")?;
        let d = side_arg(doc_images, doc_texts, "doc")?;
        let instr = opt_text_arg(instruction, "instruction")?;
        let tok = tok_of(tokenizer);
        py.detach(|| prompt::vl_rerank_ids(&tok, &q, &d, instr.as_deref(), max_length))
            .map_err(|e| to_py_err(py, e))
    }

    /// `build_vl_rerank_ids` for one query and many documents ((image counts, texts) pairs), in parallel.
    #[pyfunction]
    #[pyo3(signature = (tokenizer, *, query_images, query_texts, documents, instruction = None, max_length = prompt::VL_RERANK_MAX_LENGTH))]
    pub fn build_vl_rerank_ids_batch(
        py: Python<'_>,
        tokenizer: &Bound<'_, PyTokenizer>,
        query_images: &Bound<'_, PyAny>,
        query_texts: &Bound<'_, PyAny>,
        documents: &Bound<'_, PyAny>,
        instruction: Option<&Bound<'_, PyAny>>,
        max_length: usize,
    ) -> PyResult<Vec<Vec<u32>>> {
        let q = side_arg(query_images, query_texts, "query")?;
        let docs = sides_arg(documents, "documents")?;
        let instr = opt_text_arg(instruction, "instruction")?;
        let tok = tok_of(tokenizer);
        py.detach(|| prompt::vl_rerank_ids_batch(&tok, &q, &docs, instr.as_deref(), max_length))
            .map_err(|e| to_py_err(py, e))
    }

    /// Qwen3-VL-Embedding prompt ids of one input (images then texts).
    #[pyfunction]
    #[pyo3(signature = (tokenizer, *, images, texts, instruction = None, max_length = prompt::EMBED_MAX_LENGTH))]
    pub fn build_vl_embed_ids(
        py: Python<'_>,
        tokenizer: &Bound<'_, PyTokenizer>,
        images: &Bound<'_, PyAny>,
        texts: &Bound<'_, PyAny>,
        instruction: Option<&Bound<'_, PyAny>>,
        max_length: usize,
    ) -> PyResult<Vec<u32>> {
        let x = Side {
            images: counts_arg(images, "images", "image token counts")?,
            texts: texts_arg(texts, "texts")?,
        };
        let instr = opt_text_arg(instruction, "instruction")?;
        let tok = tok_of(tokenizer);
        py.detach(|| prompt::vl_embed_ids(&tok, &x, instr.as_deref(), max_length)).map_err(|e| to_py_err(py, e))
    }

    /// `build_vl_embed_ids` for many inputs ((image counts, texts) pairs), in parallel.
    #[pyfunction]
    #[pyo3(signature = (tokenizer, *, inputs, instruction = None, max_length = prompt::EMBED_MAX_LENGTH))]
    pub fn build_vl_embed_ids_batch(
        py: Python<'_>,
        tokenizer: &Bound<'_, PyTokenizer>,
        inputs: &Bound<'_, PyAny>,
        instruction: Option<&Bound<'_, PyAny>>,
        max_length: usize,
    ) -> PyResult<Vec<Vec<u32>>> {
        let xs = sides_arg(inputs, "inputs")?;
        let instr = opt_text_arg(instruction, "instruction")?;
        let tok = tok_of(tokenizer);
        py.detach(|| prompt::vl_embed_ids_batch(&tok, &xs, instr.as_deref(), max_length))
            .map_err(|e| to_py_err(py, e))
    }

    /// Qwen3-Reranker (text) prompt ids of one (query, document) pair.
    #[pyfunction]
    #[pyo3(signature = (tokenizer, *, query, document, instruction = None, max_length = prompt::TEXT_RERANK_MAX_LENGTH))]
    pub fn build_text_rerank_ids(
        py: Python<'_>,
        tokenizer: &Bound<'_, PyTokenizer>,
        query: &Bound<'_, PyAny>,
        document: &Bound<'_, PyAny>,
        instruction: Option<&Bound<'_, PyAny>>,
        max_length: usize,
    ) -> PyResult<Vec<u32>> {
        let q = text_arg(query, "query")?;
        let d = text_arg(document, "document")?;
        let instr = opt_text_arg(instruction, "instruction")?;
        let tok = tok_of(tokenizer);
        py.detach(|| prompt::text_rerank_ids(&tok, &q, &d, instr.as_deref(), max_length))
            .map_err(|e| to_py_err(py, e))
    }

    /// `build_text_rerank_ids` for one query and many documents, in parallel.
    #[pyfunction]
    #[pyo3(signature = (tokenizer, *, query, documents, instruction = None, max_length = prompt::TEXT_RERANK_MAX_LENGTH))]
    pub fn build_text_rerank_ids_batch(
        py: Python<'_>,
        tokenizer: &Bound<'_, PyTokenizer>,
        query: &Bound<'_, PyAny>,
        documents: &Bound<'_, PyAny>,
        instruction: Option<&Bound<'_, PyAny>>,
        max_length: usize,
    ) -> PyResult<Vec<Vec<u32>>> {
        let q = text_arg(query, "query")?;
        let docs = texts_arg(documents, "documents")?;
        let instr = opt_text_arg(instruction, "instruction")?;
        let tok = tok_of(tokenizer);
        py.detach(|| prompt::text_rerank_ids_batch(&tok, &q, &docs, instr.as_deref(), max_length))
            .map_err(|e| to_py_err(py, e))
    }

    /// The embedder's instruction rule (strip; "." appended unless it ends in punctuation; default).
    #[pyfunction]
    #[pyo3(signature = (instruction = None))]
    pub fn embed_instruction(instruction: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
        let instr = opt_text_arg(instruction, "instruction")?;
        Ok(prompt::embed_instruction(instr.as_deref()))
    }

    /// Token-budgeted batches over length-sorted indices (longest first, stable): one int64 array
    /// of indices per batch, each with rows <= max_batch_size and rows * longest <= token_budget
    /// (a single sequence over the budget gets a batch of its own).
    #[pyfunction]
    #[pyo3(signature = (lengths, *, max_batch_size, token_budget))]
    pub fn plan_batches<'py>(
        py: Python<'py>,
        lengths: &Bound<'py, PyAny>,
        max_batch_size: usize,
        token_budget: usize,
    ) -> PyResult<Vec<Bound<'py, PyArray1<i64>>>> {
        let lengths = counts_arg(lengths, "lengths", "sequence lengths")?;
        let plan = py
            .detach(|| batch::plan_batches(&lengths, max_batch_size, token_budget))
            .map_err(|e| to_py_err(py, e))?;
        Ok(plan
            .into_iter()
            .map(|b| Array1::from_vec(b.into_iter().map(|i| i as i64).collect()).into_pyarray(py))
            .collect())
    }

    /// Right-pad id sequences: (input_ids (B, L) int64, attention_mask (B, L) int64, position_ids
    /// (3, B, L) int64 or None). `positions`: one (3, len) int64 array per sequence; padding gets
    /// `pad_position`. L = max(longest, min_width).
    #[pyfunction]
    #[pyo3(signature = (sequences, *, pad_id, positions = None, pad_position = 1, min_width = 0))]
    #[allow(clippy::type_complexity)]
    pub fn pad_batch<'py>(
        py: Python<'py>,
        sequences: Vec<Vec<i64>>,
        pad_id: i64,
        positions: Option<Vec<PyReadonlyArray2<'py, i64>>>,
        pad_position: i64,
        min_width: usize,
    ) -> PyResult<(Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<i64>>, Option<Bound<'py, PyArray3<i64>>>)> {
        let pos: Option<Vec<Vec<i64>>> = match positions {
            None => None,
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, a)| {
                        let a = a.as_array();
                        if a.nrows() != 3 {
                            return Err(invalid(
                                py,
                                format!("positions[{i}]"),
                                format!("has shape {:?}; pass a (3, len) array", a.shape()),
                            ));
                        }
                        Ok(a.iter().copied().collect())
                    })
                    .collect::<PyResult<_>>()?,
            ),
        };
        let padded = py
            .detach(|| {
                let seqs: Vec<&[i64]> = sequences.iter().map(|s| s.as_slice()).collect();
                let pos_refs: Option<Vec<&[i64]>> = pos.as_ref().map(|p| p.iter().map(|v| v.as_slice()).collect());
                batch::pad_right(&seqs, pad_id, pos_refs.as_deref(), pad_position, min_width)
            })
            .map_err(|e| to_py_err(py, e))?;
        let (b, l) = (padded.rows, padded.width);
        let ids = Array2::from_shape_vec((b, l), padded.input_ids).expect("B x L").into_pyarray(py);
        let mask = Array2::from_shape_vec((b, l), padded.attention_mask).expect("B x L").into_pyarray(py);
        let pos = padded
            .position_ids
            .map(|p| Array3::from_shape_vec((3, b, l), p).expect("3 x B x L").into_pyarray(py));
        Ok((ids, mask, pos))
    }

    pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_class::<PyTokenizer>()?;
        m.add_function(wrap_pyfunction!(build_vl_rerank_ids, m)?)?;
        m.add_function(wrap_pyfunction!(build_vl_rerank_ids_batch, m)?)?;
        m.add_function(wrap_pyfunction!(build_vl_embed_ids, m)?)?;
        m.add_function(wrap_pyfunction!(build_vl_embed_ids_batch, m)?)?;
        m.add_function(wrap_pyfunction!(build_text_rerank_ids, m)?)?;
        m.add_function(wrap_pyfunction!(build_text_rerank_ids_batch, m)?)?;
        m.add_function(wrap_pyfunction!(embed_instruction, m)?)?;
        m.add_function(wrap_pyfunction!(plan_batches, m)?)?;
        m.add_function(wrap_pyfunction!(pad_batch, m)?)?;
        m.add("CONTEXT_TOKENS", prompt::CONTEXT_TOKENS)?;
        m.add("RERANK_SYSTEM", prompt::RERANK_SYSTEM)?;
        m.add("VL_RERANK_DEFAULT_INSTRUCTION", prompt::VL_RERANK_DEFAULT_INSTRUCTION)?;
        m.add("EMBED_DEFAULT_INSTRUCTION", prompt::EMBED_DEFAULT_INSTRUCTION)?;
        m.add("TEXT_RERANK_DEFAULT_INSTRUCTION", prompt::TEXT_RERANK_DEFAULT_INSTRUCTION)?;
        m.add("VL_RERANK_MAX_LENGTH", prompt::VL_RERANK_MAX_LENGTH)?;
        m.add("EMBED_MAX_LENGTH", prompt::EMBED_MAX_LENGTH)?;
        m.add("TEXT_RERANK_MAX_LENGTH", prompt::TEXT_RERANK_MAX_LENGTH)?;
        Ok(())
    }
}


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
    image_bindings::register(m)?;
    // register: tokenizer / prompt / batch (owner: native-text)
    text_bindings::register(m)?;
    // register: rope (owner: vision)
    rope_bindings::register(m)?;
    Ok(())
}
