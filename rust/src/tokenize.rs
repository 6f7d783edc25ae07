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
//! `set_encode_special_tokens(true)` is not enough: it only stops *special* added tokens from
//! matching, and Qwen's non-special added tokens (`<think>`, `<tool_call>`, ...) would still be split
//! out of user text.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::RwLock;

use rayon::prelude::*;
use tokenizers::{AddedVocabulary, NormalizedString, Normalizer, Tokenizer as HfTokenizer};

use crate::error::{Error, Result};

/// The hand-written Qwen pre-tokeniser (`split::QwenSplitter`), used when the file has exactly Qwen's.
mod split;

/// A loaded tokenizer. Cheap to share across threads (`Sync`); all methods take `&self`.
pub struct Tokenizer {
    /// The file as written: decode and token lookup, including added (control) tokens.
    full: HfTokenizer,
    /// Same normaliser / pre-tokeniser / model, no added vocabulary: encodes user text.
    plain: HfTokenizer,
    /// Number of ids `decode` accepts (model vocabulary plus added tokens).
    vocab_size: usize,
    /// Hand-written Qwen pre-tokeniser (same pieces, ~5x faster); None for other pre-tokenisers.
    fast: Option<&'static split::QwenSplitter>,
    /// The normaliser is NFC (or absent), so text below U+0300 needs no normalising.
    ascii_is_normal: bool,
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
        let fast = if is_qwen_pre_tokenizer(&plain) { split::QwenSplitter::shared() } else { None };
        let ascii_is_normal = match plain.get_normalizer() {
            None => true,
            Some(n) => serde_json::to_value(n).ok() == Some(serde_json::json!({"type": "NFC"})),
        };
        Ok(Tokenizer { full, plain, vocab_size, fast, ascii_is_normal, template_runs: RwLock::new(HashMap::new()) })
    }

    /// Plain-text ids of `text`: no special tokens added, none parsed out of the text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let Some(fast) = &self.fast else {
            return self.encode_with_crate(text);
        };
        let normalized: Cow<str> = match self.plain.get_normalizer() {
            Some(n) if !(self.ascii_is_normal && below_u0300(text)) => {
                let mut ns = NormalizedString::from(text);
                n.normalize(&mut ns).map_err(|e| tok_err(format!("cannot normalise text: {e}")))?;
                Cow::Owned(ns.get().to_owned())
            }
            _ => Cow::Borrowed(text),
        };
        let mut out = Vec::with_capacity(normalized.len() / 3 + 1);
        fast.encode(self.plain.get_model(), &normalized, &mut out)
            .map_err(|e| tok_err(format!("cannot encode text: {e}")))?;
        Ok(out)
    }

    /// `encode` through the crate's own pipeline (normaliser, pre-tokeniser, model).
    pub(crate) fn encode_with_crate(&self, text: &str) -> Result<Vec<u32>> {
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

/// Every character is below U+0300 (ASCII, Latin-1, Latin Extended, IPA, spacing modifiers): such text
/// is already NFC (each of those characters is NFC_Quick_Check=Yes with combining class 0, so nothing
/// decomposes or composes). In UTF-8 these are exactly the strings whose bytes are all < 0xCC.
fn below_u0300(text: &str) -> bool {
    text.bytes().all(|b| b < 0xCC)
}

/// The tokenizer.json pre-tokeniser is exactly Qwen's `Split(regex, Isolated) + ByteLevel(no prefix
/// space, no regex)`, the one `split::QwenSplitter` reproduces.
fn is_qwen_pre_tokenizer(tok: &HfTokenizer) -> bool {
    let Some(v) = tok.get_pre_tokenizer().and_then(|p| serde_json::to_value(p).ok()) else {
        return false;
    };
    let parts = match v.get("pretokenizers").and_then(|p| p.as_array()) {
        Some(p) if v["type"] == "Sequence" && p.len() == 2 => p,
        _ => return false,
    };
    let (regex_split, bytes) = (&parts[0], &parts[1]);
    regex_split["type"] == "Split"
        && regex_split["pattern"]["Regex"] == split::QWEN_SPLIT
        && regex_split["behavior"] == "Isolated"
        && regex_split["invert"] == false
        && bytes["type"] == "ByteLevel"
        && bytes["add_prefix_space"] == false
        && bytes["use_regex"] == false
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::OnceLock;

    /// The repository's copy of the reference cases (tests/golden). Its tokenizer.json is rebuilt
    /// offline by `python tests/golden_tokenizer.py` (scripts/test.sh runs it before `cargo test`).
    pub(crate) fn golden_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden")
    }

    /// The real Qwen tokenizer, loaded once for all tests of the crate.
    pub(crate) fn qwen() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(|| {
            Tokenizer::from_file(golden_dir().join("models").join("tokenizer.json"))
                .expect("tests/golden/models/tokenizer.json: build it first with `python tests/golden_tokenizer.py`")
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

    /// The hand-written Qwen splitter against the crate's own pipeline, on text built to hit every
    /// branch: contractions under case folding (ſ, Kelvin sign), every Unicode space, newlines,
    /// marks, letters of all L* categories, numbers of all N* categories, emoji, random code points.
    #[test]
    fn fast_path_equals_crate_pipeline() {
        let tok = qwen();
        assert!(tok.fast.is_some(), "the golden Qwen tokenizer must take the fast path");
        assert!(below_u0300("abc \u{e9}\u{2ff}") && !below_u0300("\u{300}") && !below_u0300("\u{6771}"));
        let pool: Vec<&str> = vec![
            "'s", "'S", "'\u{17f}", "'t", "'T", "'re", "'rE", "'Re", "'ve", "'VE", "'m", "'M", "'ll", "'lL", "'LL",
            "'d", "'D", "'", "''", "'\u{212a}", "'x", " ", "  ", "\t", "\n", "\r", "\r\n", "\u{b}", "\u{c}",
            "\u{85}", "\u{a0}", "\u{1680}", "\u{2000}", "\u{200a}", "\u{2028}", "\u{2029}", "\u{202f}",
            "\u{205f}", "\u{3000}", "\u{1c}", "\u{1f}", "\u{200b}", "\u{feff}", "a", "Z", "word", " word",
            "\u{e9}", "e\u{301}", "\u{df}", "\u{6771}", "\u{3131}", "\u{1c5}", "\u{2b0}", "\u{aa}", "\u{94d}",
            "\u{939}\u{93f}", "1", "42", "\u{663}", "\u{bd}", "\u{216b}", "\u{2460}", ".", ",", "!", "?", "\"",
            "\u{20ac}", "\u{1f600}", "\u{200d}", "\u{fe0f}", "\u{1f1e9}\u{1f1ea}", "-", "_", "\u{0}", "\u{7f}",
            "<|im_end|>", "\u{ff41}", "\u{10000}", "\u{e000}", "\u{fb01}", "\u{fb06}", "\u{ff}", "\u{2ff}",
            "\u{300}", "\u{2000}", "\u{212b}", "A\u{30a}", "\u{1100}\u{1161}", "\u{f900}",
        ];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for round in 0..30_000 {
            let len = next(14);
            let mut s = String::new();
            for _ in 0..len {
                if round % 3 == 0 && next(4) == 0 {
                    // any scalar value, assigned or not
                    let c = loop {
                        if let Some(c) = char::from_u32(next(0x11_0000) as u32) {
                            break c;
                        }
                    };
                    s.push(c);
                } else {
                    s.push_str(pool[next(pool.len() as u64) as usize]);
                }
            }
            assert_eq!(tok.encode(&s).unwrap(), tok.encode_with_crate(&s).unwrap(), "{s:?}");
        }
    }

    /// The fast path is taken only for Qwen's exact pre-tokeniser; any other goes through the crate.
    #[test]
    fn other_pre_tokenizers_take_the_crate_path() {
        let json = std::fs::read_to_string(golden_dir().join("models").join("tokenizer.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = serde_json::Value::Bool(true);
        let other = Tokenizer::from_bytes(v.to_string().as_bytes(), "modified").unwrap();
        assert!(other.fast.is_none());
        // With a prefix space "Hello" becomes "ĠHello" (id of " Hello"), unlike the Qwen file.
        assert_eq!(other.encode("Hello").unwrap(), qwen().encode(" Hello").unwrap());
        assert_eq!(qwen().encode("Hello").unwrap(), vec![9707]);
    }

    #[test]
    fn bad_files_are_tokenizer_errors() {
        assert!(matches!(Tokenizer::from_file("/nonexistent/tokenizer.json"), Err(Error::Tokenizer { .. })));
        assert!(matches!(Tokenizer::from_bytes(b"{not json", "x"), Err(Error::Tokenizer { .. })));
        assert!(matches!(Tokenizer::from_bytes(b"{}", "x"), Err(Error::Tokenizer { .. })));
    }
}
