//! Exact prompt assembly + truncation for the three model families, returning token ids.
//!
//! Reference: `../shared/golden/README.md` ("Reference semantics") and `make_golden.py`, which drive
//! the official Qwen3-VL-Embedding `Qwen3VLReranker` / `Qwen3VLEmbedder` and the Qwen3-Reranker
//! README recipe. The reference renders one prompt string and encodes it with the added vocabulary
//! active, i.e. it splits at every control token and BPE-encodes each run of text in between. We
//! build the same sequence of runs (template text + user text joined exactly as the reference joins
//! them, so merges across the seam, e.g. `?` + `\n` -> 5267, happen the same way) and put the control
//! tokens in by id. Unlike the reference, control-token strings typed by a user stay plain text.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;

/// Context window of every supported checkpoint; no prompt may be longer.
pub const CONTEXT_TOKENS: usize = 32_768;

/// System prompt of both rerankers (VL and text).
pub const RERANK_SYSTEM: &str = "Judge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be \"yes\" or \"no\".";
pub const VL_RERANK_DEFAULT_INSTRUCTION: &str =
    "Given a search query, retrieve relevant candidates that answer the query.";
pub const EMBED_DEFAULT_INSTRUCTION: &str = "Represent the user's input.";
pub const TEXT_RERANK_DEFAULT_INSTRUCTION: &str =
    "Given a web search query, retrieve relevant passages that answer the query";

pub const VL_RERANK_MAX_LENGTH: usize = 10_240;
pub const EMBED_MAX_LENGTH: usize = 8_192;
pub const TEXT_RERANK_MAX_LENGTH: usize = 8_192;

/// Control tokens of the Qwen chat template, by their text in `tokenizer.json`. Prompts put them in
/// by id (`Tokenizer::required_id`); user text that spells them stays plain text.
pub const ENDOFTEXT_TOKEN: &str = "<|endoftext|>";
pub const IM_START_TOKEN: &str = "<|im_start|>";
pub const IM_END_TOKEN: &str = "<|im_end|>";
pub const VISION_START_TOKEN: &str = "<|vision_start|>";
pub const VISION_END_TOKEN: &str = "<|vision_end|>";
/// One per merged image token; an image of `n` tokens is `n` of these between its start and end marks.
pub const IMAGE_PAD_TOKEN: &str = "<|image_pad|>";
/// One per merged video token of a frame pair.
pub const VIDEO_PAD_TOKEN: &str = "<|video_pad|>";
/// Tokens one image takes in a prompt besides its pads: `<|vision_start|>` and `<|vision_end|>`.
pub const IMAGE_MARKER_TOKENS: usize = 2;

/// The VL reranker keeps the last 5 tokens (`<|im_end|>\n<|im_start|>assistant\n`) out of truncation.
pub const VL_RERANK_KEPT_TAIL: usize = 5;

/// The tokens the VL reranker's truncation never drops: the tokenizer's `all_special_ids`
/// (ids 151643-151656 in Qwen). `<|image_pad|>` is among them, so images are never cut.
pub const TRUNCATION_SPECIAL_TOKENS: [&str; 14] = [
    ENDOFTEXT_TOKEN,
    IM_START_TOKEN,
    IM_END_TOKEN,
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    VISION_START_TOKEN,
    VISION_END_TOKEN,
    "<|vision_pad|>",
    IMAGE_PAD_TOKEN,
    VIDEO_PAD_TOKEN,
];

/// One side of a VL prompt (query, document, or embedding input): its videos, its images, each
/// given as its token count (`vlrank.image_tokens`), then its texts. Rendered in that order, no
/// separators; a side with none renders as `NULL` (a side with one empty text renders as nothing).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Side {
    pub images: Vec<usize>,
    pub texts: Vec<String>,
    pub videos: Vec<VideoTokens>,
}

/// What a video's tokens depend on (its plan): `<|video_pad|>` tokens per frame pair and the
/// `<t seconds>` text of each pair.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VideoTokens {
    pub pads_per_pair: usize,
    pub timestamps: Vec<String>,
}

/// Control-token ids of the chat template, looked up by name in the tokenizer.
struct Marks {
    im_start: u32,
    im_end: u32,
    vision_start: u32,
    vision_end: u32,
    image_pad: u32,
    video_pad: u32,
}

impl Marks {
    fn of(tok: &Tokenizer) -> Result<Self> {
        Ok(Marks {
            im_start: tok.required_id(IM_START_TOKEN)?,
            im_end: tok.required_id(IM_END_TOKEN)?,
            vision_start: tok.required_id(VISION_START_TOKEN)?,
            vision_end: tok.required_id(VISION_END_TOKEN)?,
            image_pad: tok.required_id(IMAGE_PAD_TOKEN)?,
            video_pad: tok.required_id(VIDEO_PAD_TOKEN)?,
        })
    }
}

/// Builds an id sequence: text accumulates into the current run; a control token ends the run
/// (which is encoded as one plain string) and is appended by id.
/// A run made only of template text (`fixed`) is memoised per tokenizer; one holding user text
/// (`text`) is encoded afresh.
struct Assembler<'t> {
    tok: &'t Tokenizer,
    ids: Vec<u32>,
    run: String,
    run_is_fixed: bool,
}

impl<'t> Assembler<'t> {
    fn new(tok: &'t Tokenizer) -> Self {
        Assembler { tok, ids: Vec::new(), run: String::new(), run_is_fixed: true }
    }
    /// User-dependent text (or anything not constant across prompts).
    fn text(&mut self, s: &str) {
        self.run.push_str(s);
        self.run_is_fixed = false;
    }
    /// Constant template text.
    fn fixed(&mut self, s: &'static str) {
        self.run.push_str(s);
    }
    fn flush(&mut self) -> Result<()> {
        if !self.run.is_empty() {
            let ids = if self.run_is_fixed { self.tok.encode_template(&self.run)? } else { self.tok.encode(&self.run)? };
            self.ids.extend(ids);
            self.run.clear();
        }
        self.run_is_fixed = true;
        Ok(())
    }
    fn control(&mut self, id: u32) -> Result<()> {
        self.flush()?;
        self.ids.push(id);
        Ok(())
    }
    fn side(&mut self, marks: &Marks, side: &Side) -> Result<()> {
        if side.images.is_empty() && side.texts.is_empty() && side.videos.is_empty() {
            self.fixed("NULL");
            return Ok(());
        }
        // transformers 5.24: the template's `<|vision_start|><|video_pad|><|vision_end|>` with the
        // pad replaced by, per pair, `<t seconds><|vision_start|>` + pads + `<|vision_end|>`. The
        // timestamp is its own run, tokenized alone between special tokens.
        for v in &side.videos {
            self.control(marks.vision_start)?;
            for t in &v.timestamps {
                self.text(t);
                self.control(marks.vision_start)?;
                self.ids.extend(std::iter::repeat_n(marks.video_pad, v.pads_per_pair));
                self.ids.push(marks.vision_end);
            }
            self.ids.push(marks.vision_end);
        }
        for &n in &side.images {
            self.control(marks.vision_start)?;
            self.ids.extend(std::iter::repeat_n(marks.image_pad, n));
            self.ids.push(marks.vision_end);
        }
        for t in &side.texts {
            self.text(t);
        }
        Ok(())
    }
    fn finish(mut self) -> Result<Vec<u32>> {
        self.flush()?;
        Ok(self.ids)
    }
}

fn check_max_length(max_length: usize) -> Result<()> {
    if max_length == 0 || max_length > CONTEXT_TOKENS {
        return Err(Error::invalid(
            "max_length",
            format!("max_length is {max_length}; pass a value from 1 to {CONTEXT_TOKENS} (the model's context)"),
        ));
    }
    Ok(())
}

/// Validates image token counts before any allocation (a bogus count must not allocate gigabytes).
/// Returns the tokens the images take with their `<|vision_start|>`/`<|vision_end|>` markers.
fn image_tokens(sides: &[(&str, &Side)]) -> Result<usize> {
    let mut total = 0usize;
    for (name, side) in sides {
        for (i, &n) in side.images.iter().enumerate() {
            if n == 0 || n > CONTEXT_TOKENS {
                return Err(Error::invalid(
                    format!("{name}.images[{i}]"),
                    format!(
                        "an image takes {n} tokens; pass each image's token count (vlrank.image_tokens), from 1 to {CONTEXT_TOKENS}"
                    ),
                ));
            }
            total += n + IMAGE_MARKER_TOKENS;
        }
        for (i, v) in side.videos.iter().enumerate() {
            let field = format!("{name}.videos[{i}]");
            if v.pads_per_pair == 0 || v.pads_per_pair > CONTEXT_TOKENS {
                return Err(Error::invalid(
                    field,
                    format!("a frame pair takes {} tokens; pass the video plan's tokens_per_group, from 1 to {CONTEXT_TOKENS}", v.pads_per_pair),
                ));
            }
            if v.timestamps.is_empty() || v.timestamps.len() > CONTEXT_TOKENS {
                return Err(Error::invalid(field, "a video has one timestamp per frame pair; pass the video plan's timestamp_text (at least one)"));
            }
            // Pads and markers only (timestamps are ordinary text and may be truncated).
            total = total.saturating_add(v.timestamps.len().saturating_mul(v.pads_per_pair + IMAGE_MARKER_TOKENS) + IMAGE_MARKER_TOKENS);
            if total > CONTEXT_TOKENS {
                break;
            }
        }
    }
    if total > CONTEXT_TOKENS {
        return Err(too_long(total, total, "its images and videos alone"));
    }
    Ok(total)
}

fn too_long(needed: usize, image_tokens: usize, what: &str) -> Error {
    Error::ContextTooLong {
        message: format!(
            "the prompt needs {needed} tokens ({what}; {image_tokens} of them image tokens) but the model's context holds \
             {CONTEXT_TOKENS}; pass fewer or smaller images (lower max_pixels) or shorter texts"
        ),
    }
}

/// The VL reranker's truncation (official `truncate_tokens_optimized` on all but the last 5 ids):
/// when those exceed `max_length`, keep every special token and the first
/// `max_length - (number of special tokens)` others, in order; then re-append the last 5.
pub fn truncate_keep_special(ids: &[u32], max_length: usize, special: &[u32]) -> Vec<u32> {
    let split = ids.len().saturating_sub(VL_RERANK_KEPT_TAIL);
    let (head, tail) = ids.split_at(split);
    if head.len() <= max_length {
        return ids.to_vec();
    }
    let is_special = |t: &u32| special.contains(t);
    let n_special = head.iter().filter(|t| is_special(t)).count();
    // The reference's budget may go negative (more specials than max_length): then no other token is kept.
    let budget = max_length.saturating_sub(n_special);
    let mut out = Vec::with_capacity(max_length.max(n_special) + tail.len());
    let mut kept = 0usize;
    for &t in head {
        if is_special(&t) {
            out.push(t);
        } else if kept < budget {
            out.push(t);
            kept += 1;
        }
    }
    out.extend_from_slice(tail);
    out
}

/// Ids of the VL reranker's truncation-exempt special tokens in this tokenizer.
pub fn truncation_special_ids(tok: &Tokenizer) -> Vec<u32> {
    TRUNCATION_SPECIAL_TOKENS.iter().filter_map(|t| tok.token_to_id(t)).collect()
}

fn instruction_or<'a>(instruction: Option<&'a str>, default: &'a str) -> &'a str {
    // Reference: `instruction or DEFAULT` -- an empty instruction means the default.
    match instruction {
        Some(s) if !s.is_empty() => s,
        _ => default,
    }
}

/// Qwen3-VL-Reranker prompt ids for one (query, document) pair, truncated to `max_length`
/// (default [`VL_RERANK_MAX_LENGTH`]); the result may exceed `max_length` by the 5 kept tail tokens
/// and by special tokens (image pads are never dropped), never [`CONTEXT_TOKENS`].
pub fn vl_rerank_ids(
    tok: &Tokenizer,
    query: &Side,
    document: &Side,
    instruction: Option<&str>,
    max_length: usize,
) -> Result<Vec<u32>> {
    check_max_length(max_length)?;
    let img = image_tokens(&[("query", query), ("document", document)])?;
    let marks = Marks::of(tok)?;
    let mut a = Assembler::new(tok);
    a.control(marks.im_start)?;
    a.fixed("system\n");
    a.fixed(RERANK_SYSTEM);
    a.control(marks.im_end)?;
    a.fixed("\n");
    a.control(marks.im_start)?;
    a.fixed("user\n<Instruct>: ");
    a.text(instruction_or(instruction, VL_RERANK_DEFAULT_INSTRUCTION));
    a.fixed("<Query>:");
    a.side(&marks, query)?;
    a.fixed("\n<Document>:");
    a.side(&marks, document)?;
    a.control(marks.im_end)?;
    a.fixed("\n");
    a.control(marks.im_start)?;
    a.fixed("assistant\n");
    let ids = a.finish()?;
    let out = truncate_keep_special(&ids, max_length, &truncation_special_ids(tok));
    if out.len() > CONTEXT_TOKENS {
        return Err(too_long(out.len(), img, "after truncation; images and special tokens are never dropped"));
    }
    Ok(out)
}

/// The embedder's instruction rule: strip (Python `str.strip` whitespace), append `.` unless the
/// last character is Unicode punctuation (category P*); empty or missing -> the default.
pub fn embed_instruction(instruction: Option<&str>) -> String {
    let s = instruction.unwrap_or("").trim_matches(is_python_space);
    if s.is_empty() {
        return EMBED_DEFAULT_INSTRUCTION.to_string();
    }
    let last = s.chars().next_back().expect("non-empty");
    if is_punctuation(last) {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

/// Python's `str.isspace`: Unicode White_Space plus the information separators U+001C..U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn is_punctuation(c: char) -> bool {
    use std::sync::OnceLock;
    static P: OnceLock<regex::Regex> = OnceLock::new();
    let re = P.get_or_init(|| regex::Regex::new(r"^\p{P}$").expect("static regex"));
    let mut buf = [0u8; 4];
    re.is_match(c.encode_utf8(&mut buf))
}

/// Qwen3-VL-Embedding prompt ids for one input. Longer than `max_length` (default
/// [`EMBED_MAX_LENGTH`]) -> the first `max_length` ids (the official processor's right truncation);
/// a cut through an image's tokens is an error, as it is in the reference processor.
pub fn vl_embed_ids(tok: &Tokenizer, input: &Side, instruction: Option<&str>, max_length: usize) -> Result<Vec<u32>> {
    check_max_length(max_length)?;
    let img = image_tokens(&[("input", input)])?;
    let marks = Marks::of(tok)?;
    let mut a = Assembler::new(tok);
    a.control(marks.im_start)?;
    a.fixed("system\n");
    a.text(&embed_instruction(instruction));
    a.control(marks.im_end)?;
    a.fixed("\n");
    a.control(marks.im_start)?;
    a.fixed("user\n");
    a.side(&marks, input)?;
    a.control(marks.im_end)?;
    a.fixed("\n");
    a.control(marks.im_start)?;
    a.fixed("assistant\n");
    let mut ids = a.finish()?;
    if ids.len() > max_length {
        let pads: usize = input.images.iter().sum::<usize>()
            + input.videos.iter().map(|v| v.pads_per_pair * v.timestamps.len()).sum::<usize>();
        let kept_pads = ids[..max_length].iter().filter(|&&t| t == marks.image_pad || t == marks.video_pad).count();
        if kept_pads < pads {
            return Err(Error::ContextTooLong {
                message: format!(
                    "the input needs {} tokens ({img} of them for its images) but max_length is {max_length}, which would cut \
                     an image; pass a larger max_length (up to {CONTEXT_TOKENS}) or smaller images (lower max_pixels)",
                    ids.len()
                ),
            });
        }
        ids.truncate(max_length);
    }
    Ok(ids)
}

/// Qwen3-Reranker (text) prompt ids: prefix + body + suffix, the body
/// (`<Instruct>: {i}\n<Query>: {q}\n<Document>: {d}`) cut to its first
/// `max_length - len(prefix) - len(suffix)` tokens (default max_length [`TEXT_RERANK_MAX_LENGTH`]).
pub fn text_rerank_ids(
    tok: &Tokenizer,
    query: &str,
    document: &str,
    instruction: Option<&str>,
    max_length: usize,
) -> Result<Vec<u32>> {
    check_max_length(max_length)?;
    let (prefix, suffix) = text_rerank_frame(tok)?;
    let frame = prefix.len() + suffix.len();
    if max_length <= frame {
        return Err(Error::invalid(
            "max_length",
            format!(
                "max_length is {max_length} but the text reranker's fixed prompt alone takes {frame} tokens; pass more than {frame}"
            ),
        ));
    }
    let instr = instruction_or(instruction, TEXT_RERANK_DEFAULT_INSTRUCTION);
    let mut body = tok.encode(&format!("<Instruct>: {instr}\n<Query>: {query}\n<Document>: {document}"))?;
    body.truncate(max_length - frame);
    let mut ids = prefix;
    ids.extend(body);
    ids.extend(suffix);
    Ok(ids)
}

/// The text reranker's fixed prefix and suffix ids.
fn text_rerank_frame(tok: &Tokenizer) -> Result<(Vec<u32>, Vec<u32>)> {
    let marks = Marks::of(tok)?;
    let mut p = Assembler::new(tok);
    p.control(marks.im_start)?;
    p.fixed("system\n");
    p.fixed(RERANK_SYSTEM);
    p.control(marks.im_end)?;
    p.fixed("\n");
    p.control(marks.im_start)?;
    p.fixed("user\n");
    let mut s = Assembler::new(tok);
    s.control(marks.im_end)?;
    s.fixed("\n");
    s.control(marks.im_start)?;
    s.fixed("assistant\n");
    s.control(tok.required_id("<think>")?)?;
    s.fixed("\n\n");
    s.control(tok.required_id("</think>")?)?;
    s.fixed("\n\n");
    Ok((p.finish()?, s.finish()?))
}

/// Names the failing item of a batch in the error (`documents[3].images[0]`, ...).
/// `item` is the single-pair name the field starts with (`document`), `list` the batch's (`documents`).
fn in_item(err: Error, item: &str, list: &str, i: usize) -> Error {
    match err {
        Error::InvalidInput { field, message } if field.starts_with(item) => {
            Error::invalid(format!("{list}[{i}]{}", &field[item.len()..]), message)
        }
        Error::ContextTooLong { message } => Error::ContextTooLong { message: format!("{list}[{i}]: {message}") },
        other => other,
    }
}

/// [`vl_rerank_ids`] for one query and many documents, in parallel; output order = input order.
pub fn vl_rerank_ids_batch(
    tok: &Tokenizer,
    query: &Side,
    documents: &[Side],
    instruction: Option<&str>,
    max_length: usize,
) -> Result<Vec<Vec<u32>>> {
    documents
        .par_iter()
        .enumerate()
        .map(|(i, d)| vl_rerank_ids(tok, query, d, instruction, max_length).map_err(|e| in_item(e, "document", "documents", i)))
        .collect()
}

/// [`vl_embed_ids`] for many inputs, in parallel; output order = input order.
pub fn vl_embed_ids_batch(
    tok: &Tokenizer,
    inputs: &[Side],
    instruction: Option<&str>,
    max_length: usize,
) -> Result<Vec<Vec<u32>>> {
    inputs
        .par_iter()
        .enumerate()
        .map(|(i, x)| vl_embed_ids(tok, x, instruction, max_length).map_err(|e| in_item(e, "input", "inputs", i)))
        .collect()
}

/// [`text_rerank_ids`] for one query and many documents, in parallel; output order = input order.
pub fn text_rerank_ids_batch<S: AsRef<str> + Sync>(
    tok: &Tokenizer,
    query: &str,
    documents: &[S],
    instruction: Option<&str>,
    max_length: usize,
) -> Result<Vec<Vec<u32>>> {
    documents
        .par_iter()
        .enumerate()
        .map(|(i, d)| {
            text_rerank_ids(tok, query, d.as_ref(), instruction, max_length).map_err(|e| in_item(e, "document", "documents", i))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::tests::{golden_dir, qwen};
    use serde_json::Value;

    fn cases(name: &str) -> Vec<Value> {
        serde_json::from_str(&std::fs::read_to_string(golden_dir().join("cases").join(name)).unwrap()).unwrap()
    }

    fn ids(v: &Value) -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    }

    fn texts(side: &Value) -> Vec<String> {
        side.get("texts")
            .and_then(|t| t.as_array())
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn golden_vl_rerank_text_only_cases_exact() {
        // Image cases need pixel geometry (tested in Python, tests/test_prompts.py); text ones here.
        let mut n = 0;
        for case in cases("vl_rerank.json") {
            let q = Side { texts: texts(&case["query"]), ..Default::default() };
            if case["query"].get("images").is_some() {
                continue;
            }
            let instr = case["instruction"].as_str();
            let max_length = case["max_length"].as_u64().unwrap() as usize;
            for (d, r) in case["documents"].as_array().unwrap().iter().zip(case["results"].as_array().unwrap()) {
                if d.get("images").is_some() {
                    continue;
                }
                let doc = Side { texts: texts(d), ..Default::default() };
                let got = vl_rerank_ids(qwen(), &q, &doc, instr, max_length).unwrap();
                assert_eq!(got, ids(&r["input_ids"]));
                n += 1;
            }
        }
        assert!(n > 0);
    }

    #[test]
    fn golden_text_rerank_cases_exact() {
        for case in cases("text_rerank.json") {
            let q = case["query"].as_str().unwrap();
            let instr = case["instruction"].as_str();
            let max_length = case["max_length"].as_u64().unwrap() as usize;
            let docs: Vec<&str> = case["documents"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
            let got = text_rerank_ids_batch(qwen(), q, &docs, instr, max_length).unwrap();
            for (g, r) in got.iter().zip(case["results"].as_array().unwrap()) {
                assert_eq!(g, &ids(&r["input_ids"]));
                assert_eq!(g.len() as u64, r["prompt_tokens"].as_u64().unwrap());
            }
        }
    }

    #[test]
    fn embed_instruction_rule() {
        assert_eq!(embed_instruction(None), EMBED_DEFAULT_INSTRUCTION);
        assert_eq!(embed_instruction(Some("   ")), EMBED_DEFAULT_INSTRUCTION);
        assert_eq!(embed_instruction(Some("  Trailing!  ")), "Trailing!");
        assert_eq!(embed_instruction(Some("Find it")), "Find it.");
        assert_eq!(embed_instruction(Some("Find it。")), "Find it。");
        assert_eq!(embed_instruction(Some("a)")), "a)");
        assert_eq!(embed_instruction(Some("a$")), "a$."); // $ is a symbol (Sc), not punctuation
        assert_eq!(embed_instruction(Some("\u{1f}x\u{a0}")), "x.");
    }

    #[test]
    fn truncation_keeps_specials_and_tail() {
        let special = [100, 101];
        let ids: Vec<u32> = vec![100, 1, 2, 101, 3, 4, 5, 100, 6, 7, 8, 9, 10];
        // head = first 8 ids (3 specials, 5 others); max_length 5 -> 2 others kept
        let out = truncate_keep_special(&ids, 5, &special);
        assert_eq!(out, vec![100, 1, 2, 101, 100, 6, 7, 8, 9, 10]);
        assert_eq!(truncate_keep_special(&ids, 8, &special), ids);
        // more specials than max_length: every special kept, no other
        assert_eq!(truncate_keep_special(&ids, 1, &special), vec![100, 101, 100, 6, 7, 8, 9, 10]);
    }

    #[test]
    fn special_strings_in_user_text_stay_plain() {
        let q = Side { images: vec![], texts: vec!["<|im_end|><|image_pad|>".into()], ..Default::default() };
        let d = Side { images: vec![3], texts: vec!["<think>".into()], ..Default::default() };
        let got = vl_rerank_ids(qwen(), &q, &d, None, VL_RERANK_MAX_LENGTH).unwrap();
        assert_eq!(got.iter().filter(|&&t| t == 151655).count(), 3);
        assert_eq!(got.iter().filter(|&&t| t == 151645).count(), 2);
        assert!(!got.contains(&151667));
    }

    #[test]
    fn errors() {
        let tok = qwen();
        let empty = Side::default();
        assert!(matches!(vl_rerank_ids(tok, &empty, &empty, None, 0), Err(Error::InvalidInput { .. })));
        assert!(matches!(vl_rerank_ids(tok, &empty, &empty, None, 40_000), Err(Error::InvalidInput { .. })));
        let huge = Side { images: vec![20_000, 20_000], texts: vec![], ..Default::default() };
        assert!(matches!(vl_rerank_ids(tok, &huge, &empty, None, 1000), Err(Error::ContextTooLong { .. })));
        let bogus = Side { images: vec![usize::MAX], texts: vec![], ..Default::default() };
        match vl_embed_ids(tok, &bogus, None, 100) {
            Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "input.images[0]"),
            other => panic!("{other:?}"),
        }
        let img = Side { images: vec![500], texts: vec![], ..Default::default() };
        assert!(matches!(vl_embed_ids(tok, &img, None, 100), Err(Error::ContextTooLong { .. })));
        assert!(matches!(text_rerank_ids(tok, "q", "d", None, 20), Err(Error::InvalidInput { .. })));
        match vl_rerank_ids_batch(tok, &empty, &[empty.clone(), Side { images: vec![0], texts: vec![], ..Default::default() }], None, 100) {
            Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "documents[1].images[0]"),
            other => panic!("{other:?}"),
        }
    }
}
