//! Exact prompt assembly + truncation for the three model families, returning token ids.
//!
//! Reference: `../shared/golden/README.md` ("Reference semantics") and `make_golden.py`, which drive
//! the official Qwen3-VL-Embedding `Qwen3VLReranker` / `Qwen3VLEmbedder` and the Qwen3-Reranker
//! README recipe. The reference renders one prompt string and encodes it with the added vocabulary
//! active, i.e. it splits at every control token and BPE-encodes each run of text in between. We
//! build the same sequence of runs (template text + user text joined exactly as the reference joins
//! them, so merges across the seam, e.g. `?` + `\n` -> 5267, happen the same way) and put the control
//! tokens in by id. Unlike the reference, control-token strings typed by a user stay plain text.
//!
//! One builder per family, over a whole call (one query and its documents, or the inputs), in
//! parallel: it returns per row either the ids or an [`Overflow`] that says how many tokens the row
//! needs, so the first row over the context and its numbers come from the build itself. A row is
//! measured on its [`skeleton`] (pads held as counts) before any pad is written.

mod skeleton;
#[cfg(test)]
mod tests;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::image::try_with_capacity;
use crate::tokenize::Tokenizer;
use skeleton::{Assembler, Marks, Skeleton};

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
    pub texts: Vec<String>,
    pub images: Vec<usize>,
    pub videos: Vec<VideoTokens>,
}

/// What a video's tokens depend on (its plan): `<|video_pad|>` tokens per frame pair and the
/// `<t seconds>` text of each pair.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VideoTokens {
    pub pads_per_pair: usize,
    pub timestamps: Vec<String>,
}

/// Why a row cannot be built, with the numbers that say what would fit. `fixed_tokens` are the
/// row's tokens besides its image pads that must fit beside them (what is left of the context, or
/// of an embedding's `max_length`, divided among the images is the most each may take);
/// `needed = fixed_tokens + image_tokens`.
#[derive(Clone, Debug, PartialEq)]
pub struct Overflow {
    /// The row: `documents[i]` or `inputs[i]`.
    pub field: String,
    pub needed: usize,
    pub image_tokens: usize,
    pub fixed_tokens: usize,
    /// What is wrong and what to pass instead, without the field.
    pub message: String,
}

impl Overflow {
    /// A row's overflow before the builder names the row.
    fn unnamed(needed: usize, image_tokens: usize, fixed_tokens: usize, message: String) -> Self {
        Overflow { field: String::new(), needed, image_tokens, fixed_tokens, message }
    }
}

/// One row of a call: its ids, or why it does not fit (the other rows are unaffected).
pub type Row = std::result::Result<Vec<u32>, Overflow>;

fn check_max_length(max_length: usize) -> Result<()> {
    if max_length == 0 || max_length > CONTEXT_TOKENS {
        return Err(Error::invalid(
            "max_length",
            format!("max_length is {max_length}; pass a value from 1 to {CONTEXT_TOKENS} (the model's context)"),
        ));
    }
    Ok(())
}

/// Validates a side's image and video counts before anything is built. Returns the tokens its
/// images and videos take with their markers (saturating: only compared with the context). An image
/// of more tokens than the context is not a bad count but a row that cannot fit (its `Overflow` says
/// so); nothing is allocated for a count before its row is known to fit.
fn media_tokens(name: &str, side: &Side) -> Result<usize> {
    let mut total = 0usize;
    for (i, &n) in side.images.iter().enumerate() {
        if n == 0 {
            return Err(Error::invalid(
                format!("{name}.images[{i}]"),
                "an image takes 0 tokens; pass each image's token count (vlrank.image_tokens), at least 1",
            ));
        }
        total = total.saturating_add(n).saturating_add(IMAGE_MARKER_TOKENS);
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
        let pairs = v.timestamps.len().saturating_mul(v.pads_per_pair + IMAGE_MARKER_TOKENS);
        total = total.saturating_add(pairs).saturating_add(IMAGE_MARKER_TOKENS);
    }
    Ok(total)
}

/// The clause naming the media's own tokens when they alone are over the context.
fn media_clause(media: usize) -> String {
    if media > CONTEXT_TOKENS {
        format!("; the media alone needs {media} tokens")
    } else {
        String::new()
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

fn vl_rerank_skeleton(tok: &Tokenizer, marks: &Marks, query: &Side, document: &Side, instruction: &str) -> Result<Skeleton> {
    let mut a = Assembler::new(tok);
    a.open(marks, "system\n")?;
    a.fixed(RERANK_SYSTEM);
    a.close(marks)?;
    a.open(marks, "user\n<Instruct>: ")?;
    a.text(instruction);
    a.fixed("<Query>:");
    a.side(marks, query)?;
    a.fixed("\n<Document>:");
    a.side(marks, document)?;
    a.close(marks)?;
    a.open(marks, "assistant\n")?;
    a.finish()
}

/// One reranker row from its skeleton: the truncated ids when they fit the context. The length
/// after truncation is computed from the skeleton (the pads are special tokens, so they only move
/// the budget of the others): the row is refused before it is written.
fn vl_rerank_row(sk: &Skeleton, special: &[u32], max_length: usize, media: usize) -> Result<Row> {
    let head = sk.ids.len() - VL_RERANK_KEPT_TAIL;
    let specials = sk.ids[..head].iter().filter(|t| special.contains(t)).count();
    let others = head - specials;
    // Length after truncation when the runs add `extra` pads to the skeleton.
    let kept = |extra: usize| {
        let (head, specials) = (head.saturating_add(extra), specials.saturating_add(extra));
        let head = if head <= max_length { head } else { specials.saturating_add(others.min(max_length.saturating_sub(specials))) };
        head.saturating_add(VL_RERANK_KEPT_TAIL)
    };
    let (image_extra, video_extra) = (sk.extra(true), sk.extra(false));
    if kept(image_extra.saturating_add(video_extra)) <= CONTEXT_TOKENS {
        return Ok(Ok(truncate_keep_special(&sk.expand()?, max_length, special)));
    }
    // With one token per image the row keeps this much besides its image pads.
    let (image_tokens, images) = sk.image_pads();
    let fixed_tokens = kept(video_extra) - images;
    let needed = fixed_tokens.saturating_add(image_tokens);
    Ok(Err(Overflow::unnamed(
        needed,
        image_tokens,
        fixed_tokens,
        format!(
            "the prompt needs {needed} tokens ({image_tokens} of them image tokens{}) but the model's context holds \
             {CONTEXT_TOKENS}; pass fewer or smaller images (lower max_pixels), shorter videos or shorter texts",
            media_clause(media)
        ),
    )))
}

/// Qwen3-VL-Reranker prompt ids of one query against each document, in parallel (order kept).
/// Each row is truncated to `max_length` (default [`VL_RERANK_MAX_LENGTH`]) the official way and may
/// exceed it by the 5 kept tail tokens and by special tokens (pads are never dropped), never
/// [`CONTEXT_TOKENS`]: a row that would is an [`Overflow`] named `documents[i]`.
pub fn vl_rerank_ids(tok: &Tokenizer, query: &Side, documents: &[Side], instruction: Option<&str>, max_length: usize) -> Result<Vec<Row>> {
    check_max_length(max_length)?;
    let q_media = media_tokens("query", query)?;
    let media = documents
        .iter()
        .enumerate()
        .map(|(i, d)| media_tokens(&format!("documents[{i}]"), d).map(|m| m.saturating_add(q_media)))
        .collect::<Result<Vec<usize>>>()?;
    let marks = Marks::of(tok)?;
    let special = truncation_special_ids(tok);
    let instruction = instruction_or(instruction, VL_RERANK_DEFAULT_INSTRUCTION);
    documents
        .par_iter()
        .zip(&media)
        .enumerate()
        .map(|(i, (d, &m))| {
            let sk = vl_rerank_skeleton(tok, &marks, query, d, instruction)?;
            Ok(vl_rerank_row(&sk, &special, max_length, m)?.map_err(|o| Overflow { field: format!("documents[{i}]"), ..o }))
        })
        .collect()
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

fn vl_embed_skeleton(tok: &Tokenizer, marks: &Marks, input: &Side, instruction: &str) -> Result<Skeleton> {
    let mut a = Assembler::new(tok);
    a.open(marks, "system\n")?;
    a.text(instruction);
    a.close(marks)?;
    a.open(marks, "user\n")?;
    a.side(marks, input)?;
    a.close(marks)?;
    a.open(marks, "assistant\n")?;
    a.finish()
}

/// One embedding row: the first `max_length` ids (the official processor's right truncation),
/// unless that cuts a pad run, which the reference processor refuses too.
fn vl_embed_row(sk: &Skeleton, max_length: usize, media: usize) -> Result<Row> {
    let through = sk.through_last_pad();
    if through <= max_length {
        let mut ids = sk.expand()?;
        ids.truncate(max_length);
        return Ok(Ok(ids));
    }
    let (image_tokens, _) = sk.image_pads();
    let needed = sk.len();
    // What must fit within max_length beside the image pads: everything up to the last pad.
    let fixed_tokens = through.saturating_sub(image_tokens);
    Ok(Err(Overflow::unnamed(
        needed,
        image_tokens,
        fixed_tokens,
        format!(
            "the input needs {needed} tokens ({image_tokens} of them for its images{}) but max_length is {max_length}, \
             which would cut an image; pass a larger max_length (up to {CONTEXT_TOKENS}) or smaller images (lower max_pixels)",
            media_clause(media)
        ),
    )))
}

/// Qwen3-VL-Embedding prompt ids of each input, in parallel (order kept). A row longer than
/// `max_length` (default [`EMBED_MAX_LENGTH`]) keeps its first `max_length` ids; one whose cut would
/// go through an image's or a video's tokens is an [`Overflow`] named `inputs[i]`.
pub fn vl_embed_ids(tok: &Tokenizer, inputs: &[Side], instruction: Option<&str>, max_length: usize) -> Result<Vec<Row>> {
    check_max_length(max_length)?;
    let media = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| media_tokens(&format!("inputs[{i}]"), x))
        .collect::<Result<Vec<usize>>>()?;
    let marks = Marks::of(tok)?;
    let instruction = embed_instruction(instruction);
    inputs
        .par_iter()
        .zip(&media)
        .enumerate()
        .map(|(i, (x, &m))| {
            let sk = vl_embed_skeleton(tok, &marks, x, &instruction)?;
            Ok(vl_embed_row(&sk, max_length, m)?.map_err(|o| Overflow { field: format!("inputs[{i}]"), ..o }))
        })
        .collect()
}

/// Qwen3-Reranker (text) prompt ids of one query against each document, in parallel (order kept):
/// prefix + body + suffix, the body (`<Instruct>: {i}\n<Query>: {q}\n<Document>: {d}`) cut to its
/// first `max_length - len(prefix) - len(suffix)` tokens (default max_length
/// [`TEXT_RERANK_MAX_LENGTH`]). Every row fits: the text reranker truncates text only.
pub fn text_rerank_ids<S: AsRef<str> + Sync>(
    tok: &Tokenizer,
    query: &str,
    documents: &[S],
    instruction: Option<&str>,
    max_length: usize,
) -> Result<Vec<Vec<u32>>> {
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
    documents
        .par_iter()
        .map(|d| {
            let mut body = tok.encode(&format!("<Instruct>: {instr}\n<Query>: {query}\n<Document>: {}", d.as_ref()))?;
            body.truncate(max_length - frame);
            let mut ids = try_with_capacity(frame + body.len(), "prompt ids")?;
            ids.extend_from_slice(&prefix);
            ids.extend(body);
            ids.extend_from_slice(&suffix);
            Ok(ids)
        })
        .collect()
}

/// The text reranker's fixed prefix and suffix ids.
fn text_rerank_frame(tok: &Tokenizer) -> Result<(Vec<u32>, Vec<u32>)> {
    let marks = Marks::of(tok)?;
    let mut p = Assembler::new(tok);
    p.open(&marks, "system\n")?;
    p.fixed(RERANK_SYSTEM);
    p.close(&marks)?;
    p.open(&marks, "user\n")?;
    let mut s = Assembler::new(tok);
    s.close(&marks)?;
    s.open(&marks, "assistant\n")?;
    s.control(tok.required_id("<think>")?)?;
    s.fixed("\n\n");
    s.control(tok.required_id("</think>")?)?;
    s.fixed("\n\n");
    Ok((p.finish()?.ids, s.finish()?.ids))
}
