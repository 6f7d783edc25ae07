//! Bindings of `prompt`: the prompt ids of the three model families (one or many per call, GIL
//! released), the embedder's instruction rule, and the template constants.

use pyo3::prelude::*;

use super::args::{counts_arg, invalid, opt_text_arg, text_arg, texts_arg};
use super::tokenizer::PyTokenizer;
use crate::prompt::{self, Side, VideoTokens};

const VIDEO_HINT: &str = "pass a list of (tokens_per_group, timestamp_text) pairs, one per video (its plan's fields)";

/// Videos of a side: (tokens_per_group, [timestamp text per pair]) pairs; None means none.
fn videos_arg(obj: Option<&Bound<'_, PyAny>>, field: &str) -> PyResult<Vec<VideoTokens>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok(Vec::new()) };
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

/// One prompt side from its image token counts, texts and videos (fields `{name}_images`, ...).
fn side_arg(images: &Bound<'_, PyAny>, texts: &Bound<'_, PyAny>, videos: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Side> {
    Ok(Side {
        images: counts_arg(images, &format!("{name}_images"), "image token counts")?,
        texts: texts_arg(texts, &format!("{name}_texts"))?,
        videos: videos_arg(videos, &format!("{name}_videos"))?,
    })
}

/// A sequence of (image token counts, texts) pairs or (image token counts, texts, videos) triples.
fn sides_arg(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Vec<Side>> {
    let iter = obj.try_iter().map_err(|_| invalid(field, "pass a list of (image_token_counts, texts[, videos]) tuples"))?;
    iter.enumerate()
        .map(|(i, item)| {
            let item = item?;
            let bad = || invalid(format!("{field}[{i}]"), "pass an (image_token_counts, texts[, videos]) tuple, e.g. ([256], [\"caption\"])");
            let n = item.len().map_err(|_| bad())?;
            let (imgs, txts, vids) = match n {
                2 => { let (a, b): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract().map_err(|_| bad())?; (a, b, None) }
                3 => { let (a, b, c): (Bound<'_, PyAny>, Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract().map_err(|_| bad())?; (a, b, Some(c)) }
                _ => return Err(bad()),
            };
            Ok(Side {
                images: counts_arg(&imgs, &format!("{field}[{i}].images"), "image token counts")?,
                texts: texts_arg(&txts, &format!("{field}[{i}].texts"))?,
                videos: videos_arg(vids.as_ref(), &format!("{field}[{i}].videos"))?,
            })
        })
        .collect()
}

/// Qwen3-VL-Reranker prompt ids of one (query, document) pair, truncated the official way.
#[pyfunction]
#[pyo3(signature = (tokenizer, *, query_images, query_texts, doc_images, doc_texts, instruction = None, max_length = prompt::VL_RERANK_MAX_LENGTH, query_videos = None, doc_videos = None))]
#[allow(clippy::too_many_arguments)]
fn build_vl_rerank_ids(
    py: Python<'_>,
    tokenizer: &Bound<'_, PyTokenizer>,
    query_images: &Bound<'_, PyAny>,
    query_texts: &Bound<'_, PyAny>,
    doc_images: &Bound<'_, PyAny>,
    doc_texts: &Bound<'_, PyAny>,
    instruction: Option<&Bound<'_, PyAny>>,
    max_length: usize,
    query_videos: Option<&Bound<'_, PyAny>>,
    doc_videos: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<u32>> {
    let q = side_arg(query_images, query_texts, query_videos, "query")?;
    let d = side_arg(doc_images, doc_texts, doc_videos, "doc")?;
    let instr = opt_text_arg(instruction, "instruction")?;
    let tok = tokenizer.get().core();
    Ok(py.detach(|| prompt::vl_rerank_ids(&tok, &q, &d, instr.as_deref(), max_length))?)
}

/// `build_vl_rerank_ids` for one query and many documents ((image counts, texts) pairs), in parallel.
#[pyfunction]
#[pyo3(signature = (tokenizer, *, query_images, query_texts, documents, instruction = None, max_length = prompt::VL_RERANK_MAX_LENGTH, query_videos = None))]
fn build_vl_rerank_ids_batch(
    py: Python<'_>,
    tokenizer: &Bound<'_, PyTokenizer>,
    query_images: &Bound<'_, PyAny>,
    query_texts: &Bound<'_, PyAny>,
    documents: &Bound<'_, PyAny>,
    instruction: Option<&Bound<'_, PyAny>>,
    max_length: usize,
    query_videos: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<Vec<u32>>> {
    let q = side_arg(query_images, query_texts, query_videos, "query")?;
    let docs = sides_arg(documents, "documents")?;
    let instr = opt_text_arg(instruction, "instruction")?;
    let tok = tokenizer.get().core();
    Ok(py.detach(|| prompt::vl_rerank_ids_batch(&tok, &q, &docs, instr.as_deref(), max_length))?)
}

/// Qwen3-VL-Embedding prompt ids of one input (images then texts).
#[pyfunction]
#[pyo3(signature = (tokenizer, *, images, texts, instruction = None, max_length = prompt::EMBED_MAX_LENGTH, videos = None))]
fn build_vl_embed_ids(
    py: Python<'_>,
    tokenizer: &Bound<'_, PyTokenizer>,
    images: &Bound<'_, PyAny>,
    texts: &Bound<'_, PyAny>,
    instruction: Option<&Bound<'_, PyAny>>,
    max_length: usize,
    videos: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<u32>> {
    let x = Side {
        images: counts_arg(images, "images", "image token counts")?,
        texts: texts_arg(texts, "texts")?,
        videos: videos_arg(videos, "videos")?,
    };
    let instr = opt_text_arg(instruction, "instruction")?;
    let tok = tokenizer.get().core();
    Ok(py.detach(|| prompt::vl_embed_ids(&tok, &x, instr.as_deref(), max_length))?)
}

/// `build_vl_embed_ids` for many inputs ((image counts, texts) pairs), in parallel.
#[pyfunction]
#[pyo3(signature = (tokenizer, *, inputs, instruction = None, max_length = prompt::EMBED_MAX_LENGTH))]
fn build_vl_embed_ids_batch(
    py: Python<'_>,
    tokenizer: &Bound<'_, PyTokenizer>,
    inputs: &Bound<'_, PyAny>,
    instruction: Option<&Bound<'_, PyAny>>,
    max_length: usize,
) -> PyResult<Vec<Vec<u32>>> {
    let xs = sides_arg(inputs, "inputs")?;
    let instr = opt_text_arg(instruction, "instruction")?;
    let tok = tokenizer.get().core();
    Ok(py.detach(|| prompt::vl_embed_ids_batch(&tok, &xs, instr.as_deref(), max_length))?)
}

/// Qwen3-Reranker (text) prompt ids of one (query, document) pair.
#[pyfunction]
#[pyo3(signature = (tokenizer, *, query, document, instruction = None, max_length = prompt::TEXT_RERANK_MAX_LENGTH))]
fn build_text_rerank_ids(
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
    let tok = tokenizer.get().core();
    Ok(py.detach(|| prompt::text_rerank_ids(&tok, &q, &d, instr.as_deref(), max_length))?)
}

/// `build_text_rerank_ids` for one query and many documents, in parallel.
#[pyfunction]
#[pyo3(signature = (tokenizer, *, query, documents, instruction = None, max_length = prompt::TEXT_RERANK_MAX_LENGTH))]
fn build_text_rerank_ids_batch(
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
    Ok(py.detach(|| prompt::text_rerank_ids_batch(&tok, &q, &docs, instr.as_deref(), max_length))?)
}

/// The embedder's instruction rule (strip; "." appended unless it ends in punctuation; default).
#[pyfunction]
#[pyo3(signature = (instruction = None))]
fn embed_instruction(instruction: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
    let instr = opt_text_arg(instruction, "instruction")?;
    Ok(prompt::embed_instruction(instr.as_deref()))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(build_vl_rerank_ids, m)?)?;
    m.add_function(wrap_pyfunction!(build_vl_rerank_ids_batch, m)?)?;
    m.add_function(wrap_pyfunction!(build_vl_embed_ids, m)?)?;
    m.add_function(wrap_pyfunction!(build_vl_embed_ids_batch, m)?)?;
    m.add_function(wrap_pyfunction!(build_text_rerank_ids, m)?)?;
    m.add_function(wrap_pyfunction!(build_text_rerank_ids_batch, m)?)?;
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
