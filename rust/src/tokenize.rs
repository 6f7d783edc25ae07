//! The tokenizer: a thin wrapper around the `tokenizers` crate loaded from a checkpoint's
//! `tokenizer.json`.
//!
//! User text is always *plain*: `encode` runs the normaliser, the pre-tokeniser and the BPE model
//! but never the added-vocabulary split, so a user who types `<|im_end|>` gets the BPE pieces of
//! those characters, not the control token (the reference, which encodes the whole rendered prompt
//! with the added vocabulary active, would let such text end the turn). Control tokens enter a
//! sequence only through `prompt.rs`, by id.
//!
//! How: two `TokenizerImpl`s share one JSON. `full` keeps the added vocabulary (for `decode` and
//! `token_to_id` of control tokens); `plain` is the same pipeline with an empty `AddedVocabulary`.
//! Failed alternative, recorded: `set_encode_special_tokens(true)` only stops *special* added
//! tokens from matching; Qwen's non-special added tokens (`<think>`, `<tool_call>`, ...) would still
//! be split out of user text.

use std::collections::HashMap;
use std::sync::RwLock;

use rayon::prelude::*;
use tokenizers::{AddedVocabulary, Tokenizer as HfTokenizer};

use crate::error::{Error, Result};

/// A loaded tokenizer. Cheap to share across threads (`Sync`); all methods take `&self`.
pub struct Tokenizer {
    /// The file as written: decode and token lookup, including added (control) tokens.
    full: HfTokenizer,
    /// Same normaliser / pre-tokeniser / model, no added vocabulary: encodes user text.
    plain: HfTokenizer,
    /// Number of ids `decode` accepts (model vocabulary plus added tokens).
    vocab_size: usize,
    /// Ids of the prompt templates' fixed text runs (a handful of strings, bounded by TEMPLATE_CACHE_MAX).
    template_runs: RwLock<HashMap<String, Vec<u32>>>,
}

/// The templates have fewer than ten fixed runs; the bound only guards against misuse.
const TEMPLATE_CACHE_MAX: usize = 64;

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab_size", &self.vocab_size).finish()
    }
}

fn tok_err(message: impl Into<String>) -> Error {
    Error::Tokenizer { message: message.into() }
}

impl Tokenizer {
    /// Load a `tokenizer.json` (Hugging Face `tokenizers` format).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| {
            tok_err(format!(
                "cannot read tokenizer file {}: {e}; pass the path of a tokenizer.json (the one in the checkpoint directory)",
                path.display()
            ))
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Load from the bytes of a `tokenizer.json`; `source` names it in error messages.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self> {
        let full = HfTokenizer::from_bytes(bytes).map_err(|e| {
            tok_err(format!(
                "{source} is not a valid tokenizer.json ({e}); pass the tokenizer.json of a Qwen3 / Qwen3-VL checkpoint"
            ))
        })?;
        let mut plain = full.clone();
        plain.with_added_vocabulary(AddedVocabulary::new());
        let vocab_size = full.get_vocab_size(true);
        if vocab_size == 0 {
            return Err(tok_err(format!("{source} has an empty vocabulary; pass a real tokenizer.json")));
        }
        Ok(Tokenizer { full, plain, vocab_size, template_runs: RwLock::new(HashMap::new()) })
    }

    /// Plain-text ids of `text`: no special tokens added, none parsed out of the text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        // encode_fast: no offsets are computed (we only need ids).
        let enc = self
            .plain
            .encode_fast(text, false)
            .map_err(|e| tok_err(format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `encode` of fixed template text (e.g. the system prompt), memoised: every prompt repeats it.
    /// Never call it with user text (the memo is bounded, but user text would only churn it).
    pub fn encode_template(&self, text: &str) -> Result<Vec<u32>> {
        if let Some(ids) = self.template_runs.read().expect("template cache lock").get(text) {
            return Ok(ids.clone());
        }
        let ids = self.encode(text)?;
        let mut memo = self.template_runs.write().expect("template cache lock");
        if memo.len() < TEMPLATE_CACHE_MAX {
            memo.insert(text.to_owned(), ids.clone());
        }
        Ok(ids)
    }

    /// `encode` over many texts in parallel (rayon); output order = input order.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        texts.par_iter().map(|t| self.encode(t.as_ref())).collect()
    }

    /// Text of `ids`; added-token ids decode to their content unless `skip_special_tokens` drops
    /// the special ones. Ids outside the vocabulary are an error (never silently dropped).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        for (i, &id) in ids.iter().enumerate() {
            if self.full.id_to_token(id).is_none() {
                return Err(Error::invalid(
                    format!("ids[{i}]"),
                    format!("token id {id} is not in the vocabulary (ids 0..{}); pass ids this tokenizer produced", self.vocab_size),
                ));
            }
        }
        self.full
            .decode(ids, skip_special_tokens)
            .map_err(|e| tok_err(format!("cannot decode ids: {e}")))
    }

    /// Id of a vocabulary entry or added token written exactly (e.g. `"<|im_start|>"`, `"yes"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.full.token_to_id(token)
    }

    /// The vocabulary entry of `id` (byte-level form, e.g. `"Ġworld"`), or the added token's content.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.full.id_to_token(id)
    }

    /// Id of a token the prompt templates need; a clear error if this tokenizer lacks it.
    pub fn required_id(&self, token: &str) -> Result<u32> {
        self.token_to_id(token).ok_or_else(|| {
            tok_err(format!(
                "this tokenizer has no {token:?} token; pass the tokenizer.json of a Qwen3 / Qwen3-VL checkpoint"
            ))
        })
    }

    /// Model vocabulary plus added tokens (151,669 for Qwen3).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::OnceLock;

    pub(crate) fn golden_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("shared").join("golden")
    }

    /// The real Qwen tokenizer, loaded once for all tests of the crate.
    pub(crate) fn qwen() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(|| {
            Tokenizer::from_file(golden_dir().join("models").join("tokenizer.json")).expect("golden tokenizer")
        })
    }

    #[test]
    fn golden_tokenizer_cases_exact() {
        let text = std::fs::read_to_string(golden_dir().join("cases").join("tokenizer.json")).unwrap();
        let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            let t = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(qwen().encode(t).unwrap(), want, "text {t:?}");
        }
    }

    #[test]
    fn special_token_text_stays_plain() {
        let tok = qwen();
        let im_end = tok.token_to_id("<|im_end|>").unwrap();
        let think = tok.token_to_id("<think>").unwrap();
        assert_eq!(im_end, 151645);
        assert_eq!(think, 151667);
        for s in ["<|im_end|>", "a<|im_start|>b", "<think>x</think>", "<|image_pad|><|endoftext|>"] {
            let ids = tok.encode(s).unwrap();
            assert!(ids.iter().all(|&id| (id as usize) < 151643), "{s:?} -> {ids:?}");
            assert_eq!(tok.decode(&ids, false).unwrap(), s);
        }
    }

    #[test]
    fn decode_added_tokens_and_skip() {
        let tok = qwen();
        let mut ids = vec![151644];
        ids.extend(tok.encode("user\nhi").unwrap());
        ids.push(151645);
        assert_eq!(tok.decode(&ids, false).unwrap(), "<|im_start|>user\nhi<|im_end|>");
        assert_eq!(tok.decode(&ids, true).unwrap(), "user\nhi");
        assert!(matches!(tok.decode(&[999_999], false), Err(Error::InvalidInput { .. })));
    }

    #[test]
    fn batch_matches_single_and_vocab() {
        let tok = qwen();
        let texts = ["Hello world", "", "东京 😀", "x\n\ny"];
        let batch = tok.encode_batch(&texts).unwrap();
        for (t, ids) in texts.iter().zip(batch) {
            assert_eq!(tok.encode(t).unwrap(), ids);
        }
        assert_eq!(tok.vocab_size(), 151_669);
        assert_eq!(tok.token_to_id("yes"), Some(9693));
        assert_eq!(tok.token_to_id("no"), Some(2152));
    }

    #[test]
    fn bad_files_are_tokenizer_errors() {
        assert!(matches!(Tokenizer::from_file("/nonexistent/tokenizer.json"), Err(Error::Tokenizer { .. })));
        assert!(matches!(Tokenizer::from_bytes(b"{not json", "x"), Err(Error::Tokenizer { .. })));
        assert!(matches!(Tokenizer::from_bytes(b"{}", "x"), Err(Error::Tokenizer { .. })));
    }
}
