//! A prompt measured before it is written: the template and user text encoded as the reference
//! encodes them, each image's and each video pair's run of pad tokens held as ONE token plus its
//! length. Building one costs the text, never the pads, so a row's length after truncation (and
//! the tokens it would need with smaller images) is known before any pad is written, and a row
//! over the context is refused without allocating it.

use super::{Side, IMAGE_PAD_TOKEN, IM_END_TOKEN, IM_START_TOKEN, VIDEO_PAD_TOKEN, VISION_END_TOKEN, VISION_START_TOKEN};
use crate::error::Result;
use crate::image::try_with_capacity;
use crate::tokenize::Tokenizer;

/// Control-token ids of the chat template, looked up by name in the tokenizer.
pub(super) struct Marks {
    im_start: u32,
    im_end: u32,
    vision_start: u32,
    vision_end: u32,
    image_pad: u32,
    video_pad: u32,
}

impl Marks {
    pub fn of(tok: &Tokenizer) -> Result<Self> {
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

/// One run of pads: the skeleton token at `at` stands for `len` copies of itself.
#[derive(Clone, Copy, Debug)]
struct PadRun {
    at: usize,
    len: usize,
    image: bool,
}

/// Prompt ids with each pad run collapsed to one token (see the module doc). Run lengths are not
/// bounded here (an image over the context is a row that does not fit, not a bad count), so every
/// sum over them saturates; only a row known to fit is expanded.
#[derive(Debug, Default)]
pub(super) struct Skeleton {
    pub ids: Vec<u32>,
    runs: Vec<PadRun>,
}

impl Skeleton {
    /// Pads the runs add beyond their one skeleton token, of images (`image`) or of videos.
    pub fn extra(&self, image: bool) -> usize {
        self.runs.iter().filter(|r| r.image == image).fold(0, |s, r| s.saturating_add(r.len - 1))
    }
    /// Image pad tokens (what max_pixels scales) and the number of images.
    pub fn image_pads(&self) -> (usize, usize) {
        self.runs.iter().filter(|r| r.image).fold((0, 0), |(t, n), r| (t.saturating_add(r.len), n + 1))
    }
    /// Length of the written prompt.
    pub fn len(&self) -> usize {
        self.ids.len().saturating_add(self.extra(true)).saturating_add(self.extra(false))
    }
    /// Length of the written prompt's prefix that ends with its last pad (0 without pads).
    pub fn through_last_pad(&self) -> usize {
        self.runs.last().map_or(0, |r| (r.at + 1).saturating_add(self.extra(true)).saturating_add(self.extra(false)))
    }
    /// The prompt's ids with every run written out (allocated fallibly).
    pub fn expand(&self) -> Result<Vec<u32>> {
        let mut out = try_with_capacity(self.len(), "prompt ids")?;
        let mut from = 0;
        for r in &self.runs {
            out.extend_from_slice(&self.ids[from..r.at]);
            out.extend(std::iter::repeat_n(self.ids[r.at], r.len));
            from = r.at + 1;
        }
        out.extend_from_slice(&self.ids[from..]);
        Ok(out)
    }
}

/// Builds a skeleton: text accumulates into the current run; a control token ends the run (which
/// is encoded as one plain string, so merges across a template/user seam, e.g. `?` + `\n`, happen
/// as in the reference) and is appended by id. A run made only of template text (`fixed`) is
/// memoised per tokenizer; one holding user text (`text`) is encoded afresh.
pub(super) struct Assembler<'t> {
    tok: &'t Tokenizer,
    out: Skeleton,
    run: String,
    run_is_fixed: bool,
}

impl<'t> Assembler<'t> {
    pub fn new(tok: &'t Tokenizer) -> Self {
        Assembler { tok, out: Skeleton::default(), run: String::new(), run_is_fixed: true }
    }
    /// User-dependent text (or anything not constant across prompts).
    pub fn text(&mut self, s: &str) {
        self.run.push_str(s);
        self.run_is_fixed = false;
    }
    /// Constant template text.
    pub fn fixed(&mut self, s: &'static str) {
        self.run.push_str(s);
    }
    fn flush(&mut self) -> Result<()> {
        if !self.run.is_empty() {
            let ids = if self.run_is_fixed { self.tok.encode_template(&self.run)? } else { self.tok.encode(&self.run)? };
            self.out.ids.extend(ids);
            self.run.clear();
        }
        self.run_is_fixed = true;
        Ok(())
    }
    pub fn control(&mut self, id: u32) -> Result<()> {
        self.flush()?;
        self.out.ids.push(id);
        Ok(())
    }
    /// A chat turn's start: `<|im_start|>` and the role line (e.g. `"system\n"`), whose text runs on
    /// into what follows it.
    pub fn open(&mut self, marks: &Marks, role: &'static str) -> Result<()> {
        self.control(marks.im_start)?;
        self.fixed(role);
        Ok(())
    }
    /// A chat turn's end: `<|im_end|>\n`.
    pub fn close(&mut self, marks: &Marks) -> Result<()> {
        self.control(marks.im_end)?;
        self.fixed("\n");
        Ok(())
    }
    /// `<|vision_start|>`, `len` pads (held as one run), `<|vision_end|>`.
    fn pads(&mut self, marks: &Marks, pad: u32, len: usize, image: bool) -> Result<()> {
        self.control(marks.vision_start)?;
        self.out.runs.push(PadRun { at: self.out.ids.len(), len, image });
        self.out.ids.push(pad);
        self.out.ids.push(marks.vision_end);
        Ok(())
    }
    /// A side: its videos, images, texts, no separators; a side with none renders as `NULL` (one
    /// empty text renders as nothing). Counts were validated (each >= 1) by the caller.
    pub fn side(&mut self, marks: &Marks, side: &Side) -> Result<()> {
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
                self.pads(marks, marks.video_pad, v.pads_per_pair, false)?;
            }
            self.out.ids.push(marks.vision_end);
        }
        for &n in &side.images {
            self.pads(marks, marks.image_pad, n, true)?;
        }
        for t in &side.texts {
            self.text(t);
        }
        Ok(())
    }
    pub fn finish(mut self) -> Result<Skeleton> {
        self.flush()?;
        Ok(self.out)
    }
}
