//! Binding of `tokenize::Tokenizer` as `vlrank._native.Tokenizer`.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;

use super::args::{counts_arg, invalid, text_arg, texts_arg};
use crate::tokenize::Tokenizer;

/// Tokenizer of a checkpoint's tokenizer.json. User text is always plain: `encode` never turns
/// special-token strings (e.g. "<|im_end|>") into control tokens and adds no special tokens.
#[pyclass(name = "Tokenizer", module = "vlrank._native", frozen)]
pub(super) struct PyTokenizer {
    inner: Arc<Tokenizer>,
}

impl PyTokenizer {
    /// The shared core tokenizer, to hand to GIL-free work.
    pub(super) fn core(&self) -> Arc<Tokenizer> {
        self.inner.clone()
    }
}

#[pymethods]
impl PyTokenizer {
    /// Load a tokenizer.json; a missing or unusable file raises TokenizerError.
    #[staticmethod]
    fn from_file(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let tok = py.detach(|| Tokenizer::from_file(&path))?;
        Ok(PyTokenizer { inner: Arc::new(tok) })
    }

    /// Plain-text ids of `text` (no special tokens added or parsed).
    fn encode(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
        let text = text_arg(text, "text")?;
        let tok = &self.inner;
        Ok(py.detach(|| tok.encode(&text))?)
    }

    /// `encode` over many texts, in parallel.
    fn encode_batch(&self, py: Python<'_>, texts: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u32>>> {
        let texts = texts_arg(texts, "texts")?;
        let tok = &self.inner;
        Ok(py.detach(|| tok.encode_batch(&texts))?)
    }

    /// Text of `ids` (added-token ids decode to their content unless skip_special_tokens drops
    /// the special ones); an id outside the vocabulary raises InvalidInputError.
    #[pyo3(signature = (ids, *, skip_special_tokens = false))]
    fn decode(&self, py: Python<'_>, ids: &Bound<'_, PyAny>, skip_special_tokens: bool) -> PyResult<String> {
        let ids: Vec<u32> = counts_arg(ids, "ids", "token ids")?
            .into_iter()
            .enumerate()
            .map(|(i, v)| u32::try_from(v).map_err(|_| invalid(format!("ids[{i}]"), format!("{v} is not a token id"))))
            .collect::<PyResult<_>>()?;
        let tok = &self.inner;
        Ok(py.detach(|| tok.decode(&ids, skip_special_tokens))?)
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

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTokenizer>()
}
