//! Bindings of `prompt`: one builder per model family over a whole call (GIL released, rows in
//! parallel), returning per row its ids or a `ContextOverflow`; the embedder's instruction rule;
//! the template constants.

use pyo3::prelude::*;

use super::args::{counts_arg, invalid, opt_text_arg, text_arg, texts_arg, type_name};
use super::error::vlrank_error;
use super::tokenizer::PyTokenizer;
use crate::prompt::{self, Overflow, Row, Side, VideoTokens};

const SIDE_HINT: &str = "pass a vlrank.preprocess.prompts.Side (texts, images = image token counts, videos = \
                         (tokens_per_group, timestamp_text) pairs)";
const VIDEO_HINT: &str = "pass a list of (tokens_per_group, timestamp_text) pairs, one per video (its plan's fields)";

/// Videos of a side: (tokens_per_group, [timestamp text per pair]) pairs.
fn videos_arg(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Vec<VideoTokens>> {
    let iter = obj.try_iter().map_err(|_| invalid(field, VIDEO_HINT))?;
    iter.enumerate()
        .map(|(i, item)| {
            let item = item?;
            let name = format!("{field}[{i}]");
            let (pads, ts): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract().map_err(|_| invalid(&name, VIDEO_HINT))?;
            let pads = pads.extract::<usize>().map_err(|_| invalid(&name, format!("tokens_per_group must be an int >= 1; {VIDEO_HINT}")))?;
            Ok(VideoTokens { pads_per_pair: pads, timestamps: texts_arg(&ts, &format!("{name}.timestamp_text"))? })
        })
        .collect()
}

/// One prompt side: any object with `texts`, `images` (token counts) and `videos` attributes.
fn side_arg(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Side> {
    let attr = |name: &str| {
        obj.getattr(name).map_err(|_| invalid(field, format!("got {} without .{name}; {SIDE_HINT}", type_name(obj))))
    };
    Ok(Side {
        texts: texts_arg(&attr("texts")?, &format!("{field}.texts"))?,
        images: counts_arg(&attr("images")?, &format!("{field}.images"), "image token counts")?,
        videos: videos_arg(&attr("videos")?, &format!("{field}.videos"))?,
    })
}

/// A sequence of sides, named `{field}[i]`.
fn sides_arg(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Vec<Side>> {
    let iter = obj.try_iter().map_err(|_| invalid(field, format!("got {}; {SIDE_HINT}, a list of them", type_name(obj))))?;
    iter.enumerate().map(|(i, item)| side_arg(&item?, &format!("{field}[{i}]"))).collect()
}

/// A row that does not fit: its field, the tokens it needs and of them its image pads, and the
/// tokens besides its image pads that must fit beside them (the context, or an embedding's
/// max_length, less these, spread over the images, is the most each image may take).
#[pyclass(frozen, get_all, name = "ContextOverflow", module = "vlrank._native")]
struct PyOverflow {
    field: String,
    needed: usize,
    image_tokens: usize,
    fixed_tokens: usize,
    message: String,
}

#[pymethods]
impl PyOverflow {
    /// The row's ContextTooLongError (`field` set, the message starting with it), to raise.
    fn error(&self) -> PyErr {
        vlrank_error("ContextTooLongError", &format!("{}: {}", self.field, self.message), Some(&self.field))
    }

    fn __repr__(&self) -> String {
        format!("ContextOverflow(field={:?}, needed={}, image_tokens={}, fixed_tokens={})", self.field, self.needed, self.image_tokens, self.fixed_tokens)
    }
}

/// Rows as Python values: `list[int]` where the row fits, a `ContextOverflow` where it does not.
fn rows_out(py: Python<'_>, rows: Vec<Row>) -> PyResult<Vec<Py<PyAny>>> {
    rows.into_iter()
        .map(|row| match row {
            Ok(ids) => Ok(ids.into_pyobject(py)?.into_any().unbind()),
            Err(Overflow { field, needed, image_tokens, fixed_tokens, message }) => {
                Ok(Py::new(py, PyOverflow { field, needed, image_tokens, fixed_tokens, message })?.into_any())
            }
        })
        .collect()
}

/// Qwen3-VL-Reranker prompt ids of one query against each document, truncated the official way.
#[pyfunction]
#[pyo3(signature = (tokenizer, *, query, documents, instruction = None, max_length = prompt::VL_RERANK_MAX_LENGTH))]
fn build_vl_rerank_ids(
    py: Python<'_>,
    tokenizer: &Bound<'_, PyTokenizer>,
    query: &Bound<'_, PyAny>,
    documents: &Bound<'_, PyAny>,
    instruction: Option<&Bound<'_, PyAny>>,
    max_length: usize,
) -> PyResult<Vec<Py<PyAny>>> {
    let q = side_arg(query, "query")?;
    let docs = sides_arg(documents, "documents")?;
    let instr = opt_text_arg(instruction, "instruction")?;
    let tok = tokenizer.get().core();
    let rows = py.detach(|| prompt::vl_rerank_ids(&tok, &q, &docs, instr.as_deref(), max_length))?;
    rows_out(py, rows)
}

/// Qwen3-VL-Embedding prompt ids of each input.
#[pyfunction]
#[pyo3(signature = (tokenizer, *, inputs, instruction = None, max_length = prompt::EMBED_MAX_LENGTH))]
fn build_vl_embed_ids(
    py: Python<'_>,
    tokenizer: &Bound<'_, PyTokenizer>,
    inputs: &Bound<'_, PyAny>,
    instruction: Option<&Bound<'_, PyAny>>,
    max_length: usize,
) -> PyResult<Vec<Py<PyAny>>> {
    let xs = sides_arg(inputs, "inputs")?;
    let instr = opt_text_arg(instruction, "instruction")?;
    let tok = tokenizer.get().core();
    let rows = py.detach(|| prompt::vl_embed_ids(&tok, &xs, instr.as_deref(), max_length))?;
    rows_out(py, rows)
}

/// Qwen3-Reranker (text) prompt ids of one query against each document (every row fits).
#[pyfunction]
#[pyo3(signature = (tokenizer, *, query, documents, instruction = None, max_length = prompt::TEXT_RERANK_MAX_LENGTH))]
fn build_text_rerank_ids(
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
    let tok = tokenizer.get().core();
    Ok(py.detach(|| prompt::text_rerank_ids(&tok, &q, &docs, instr.as_deref(), max_length))?)
}

/// The embedder's instruction rule (strip; "." appended unless it ends in punctuation; default).
#[pyfunction]
#[pyo3(signature = (instruction = None))]
fn embed_instruction(instruction: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
    let instr = opt_text_arg(instruction, "instruction")?;
    Ok(prompt::embed_instruction(instr.as_deref()))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyOverflow>()?;
    m.add_function(wrap_pyfunction!(build_vl_rerank_ids, m)?)?;
    m.add_function(wrap_pyfunction!(build_vl_embed_ids, m)?)?;
    m.add_function(wrap_pyfunction!(build_text_rerank_ids, m)?)?;
    m.add_function(wrap_pyfunction!(embed_instruction, m)?)?;
    m.add("CONTEXT_TOKENS", prompt::CONTEXT_TOKENS)?;
    m.add("RERANK_SYSTEM", prompt::RERANK_SYSTEM)?;
    m.add("VL_RERANK_DEFAULT_INSTRUCTION", prompt::VL_RERANK_DEFAULT_INSTRUCTION)?;
    m.add("EMBED_DEFAULT_INSTRUCTION", prompt::EMBED_DEFAULT_INSTRUCTION)?;
    m.add("TEXT_RERANK_DEFAULT_INSTRUCTION", prompt::TEXT_RERANK_DEFAULT_INSTRUCTION)?;
    m.add("VL_RERANK_MAX_LENGTH", prompt::VL_RERANK_MAX_LENGTH)?;
    m.add("EMBED_MAX_LENGTH", prompt::EMBED_MAX_LENGTH)?;
    m.add("TEXT_RERANK_MAX_LENGTH", prompt::TEXT_RERANK_MAX_LENGTH)?;
    m.add("ENDOFTEXT_TOKEN", prompt::ENDOFTEXT_TOKEN)?;
    m.add("IM_START_TOKEN", prompt::IM_START_TOKEN)?;
    m.add("IM_END_TOKEN", prompt::IM_END_TOKEN)?;
    m.add("VISION_START_TOKEN", prompt::VISION_START_TOKEN)?;
    m.add("VISION_END_TOKEN", prompt::VISION_END_TOKEN)?;
    m.add("IMAGE_PAD_TOKEN", prompt::IMAGE_PAD_TOKEN)?;
    m.add("IMAGE_MARKER_TOKENS", prompt::IMAGE_MARKER_TOKENS)?;
    Ok(())
}
