//! Pixel budgets and token counts of a video (qwen-vl-utils 0.0.14 `fetch_video` / `fetch_image`,
//! transformers 5.24 `Qwen3VLProcessor`), and the refusal math for a video that cannot fit.

use crate::error::{Error, Result};
use crate::geometry::smart_resize;

use super::sample::{file_indices, frame_list_indices, pad_to_even, DEFAULT_MAX_FRAMES, FRAME_FACTOR, FRAME_LIST_FPS};
use super::timestamps::{timestamp_text, timestamp_tokens, timestamps};

/// Factor of the second resize: patch 16 x merge 2.
pub const VIDEO_FACTOR: u32 = 32;
/// qwen-vl-utils VIDEO_MIN_TOKEN_NUM x 32^2 and VIDEO_MAX_TOKEN_NUM x 32^2.
pub const VIDEO_MIN_PIXELS: u64 = 128 * 32 * 32;
pub const VIDEO_MAX_PIXELS: u64 = 768 * 32 * 32;
/// qwen-vl-utils' default total_pixels (MODEL_SEQ_LEN 128,000 x 32^2 x 0.9), used by file videos.
pub const DEFAULT_FILE_TOTAL_PIXELS: f64 = 128_000.0 * 32.0 * 32.0 * 0.9;
/// The official code's total_pixels for frame lists (10 x 768 x 32^2).
pub const FRAME_LIST_TOTAL_PIXELS: f64 = 7_864_320.0;
/// First resize of a frame list: `fetch_image` with patch factor 64 and its default budget.
pub const FRAME_FACTOR_64: u32 = 64;
pub const FETCH_MIN_PIXELS: u64 = 4 * 64 * 64;
pub const FETCH_MAX_PIXELS: u64 = 16384 * 64 * 64;

/// `max(min(768 * 32^2, total_pixels / n * 2), int(min_pixels * 1.05))`, as a float like Python's.
pub fn second_resize_max_pixels(min_pixels: u64, total_pixels: f64, nframes: usize) -> f64 {
    let cap = (VIDEO_MAX_PIXELS as f64).min(total_pixels / nframes as f64 * FRAME_FACTOR as f64);
    cap.max((min_pixels as f64 * 1.05).floor())
}

/// smart_resize with a float max_pixels: Python compares `h * w > max_pixels` and divides by it in
/// float; the integer form below gives the same result because `h * w` is an integer (so `> m`
/// equals `> floor(m)`) and `sqrt(h * w / m)` for the shrink branch is taken with the float m.
pub fn resize_for(height: u32, width: u32, min_pixels: u64, max_pixels: f64) -> Result<(u32, u32)> {
    if max_pixels.fract() == 0.0 {
        return smart_resize(height, width, VIDEO_FACTOR, min_pixels, max_pixels as u64);
    }
    // Non-integral budget: Python's float arithmetic directly (h * w / max_pixels is one float
    // division of exactly representable values).
    let f = VIDEO_FACTOR as f64;
    let (h, w) = (height as f64, width as f64);
    let hb = ((h / f).round_ties_even() * f).max(f);
    let wb = ((w / f).round_ties_even() * f).max(f);
    if hb * wb > max_pixels {
        let beta = (h * w / max_pixels).sqrt();
        let hb = (h / beta / f).floor() * f;
        let wb = (w / beta / f).floor() * f;
        if hb <= 0.0 || wb <= 0.0 {
            return Err(Error::invalid(
                "total_pixels",
                format!("total_pixels leaves {max_pixels} pixels per frame, too few for a {width}x{height} frame; pass a larger total_pixels"),
            ));
        }
        return Ok((hb as u32, wb as u32));
    }
    // Not shrunk: the grow branch and the plain rounding do not read max_pixels.
    smart_resize(height, width, VIDEO_FACTOR, min_pixels, u64::MAX)
}

/// Per-request video settings (the content part's optional fields).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoOptions {
    pub fps: f64,
    pub max_frames: usize,
    /// Second-resize minimum (and, for frame lists, also the first resize's minimum when given).
    pub min_pixels: Option<u64>,
    pub total_pixels: Option<f64>,
}

impl Default for VideoOptions {
    fn default() -> Self {
        VideoOptions { fps: super::sample::DEFAULT_FPS, max_frames: DEFAULT_MAX_FRAMES, min_pixels: None, total_pixels: None }
    }
}

/// Everything about a video that is known before its pixels: what the golden `video_pixels.json`
/// records per video.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoPlan {
    /// Positions into the decoded frames (files) or into the given frame list, in order, after
    /// the 64-frame subsampling and the padding to even (a padded frame repeats the last one).
    pub frames: Vec<usize>,
    /// Metadata indices used for timestamps.
    pub frames_indices: Vec<usize>,
    pub metadata_fps: f64,
    pub sample_fps: f64,
    /// Size before the second resize (decoded, or fetched by the first resize).
    pub pre_height: u32,
    pub pre_width: u32,
    pub resized_height: u32,
    pub resized_width: u32,
    pub min_pixels: u64,
    pub total_pixels: f64,
    pub max_pixels: f64,
    pub grid_thw: [u32; 3],
    pub tokens_per_group: u64,
    pub timestamps: Vec<f64>,
    pub timestamp_text: Vec<String>,
}

impl VideoPlan {
    /// Tokens of the video in the transformers 5.24 layout: `<|vision_start|>` + per pair
    /// (timestamp tokens + `<|vision_start|>` + pads + `<|vision_end|>`) + `<|vision_end|>`.
    pub fn num_tokens(&self) -> u64 {
        self.pair_tokens() + 2
    }

    /// Σ over pairs (pads + timestamp tokens + 2); the transformers 4.57 layout's length.
    pub fn pair_tokens(&self) -> u64 {
        self.timestamp_text.iter().map(|t| self.tokens_per_group + timestamp_tokens(t) as u64 + 2).sum()
    }

    pub fn num_pads(&self) -> u64 {
        self.tokens_per_group * self.grid_thw[0] as u64
    }
}

fn finish(frames: Vec<usize>, frames_indices: Vec<usize>, metadata_fps: f64, sample_fps: f64, pre: (u32, u32), min_pixels: u64, total_pixels: f64) -> Result<VideoPlan> {
    let n = frames.len();
    let max_pixels = second_resize_max_pixels(min_pixels, total_pixels, n);
    let (rh, rw) = resize_for(pre.0, pre.1, min_pixels, max_pixels)?;
    let ts = timestamps(&frames_indices, metadata_fps)?;
    let grid_thw = [(n / 2) as u32, rh / 16, rw / 16];
    Ok(VideoPlan {
        frames,
        frames_indices,
        metadata_fps,
        sample_fps,
        pre_height: pre.0,
        pre_width: pre.1,
        resized_height: rh,
        resized_width: rw,
        min_pixels,
        total_pixels,
        max_pixels,
        grid_thw,
        tokens_per_group: (rh / 32) as u64 * (rw / 32) as u64,
        timestamp_text: ts.iter().map(|&t| timestamp_text(t)).collect(),
        timestamps: ts,
    })
}

/// Plan of a file video from its header: frame count, the stream's average rate and the size.
pub fn plan_file(total_frames: usize, video_fps: f64, height: u32, width: u32, opts: &VideoOptions) -> Result<VideoPlan> {
    let (idx, sample_fps) = file_indices(total_frames, video_fps, opts.fps, Some(opts.max_frames))?;
    let min_pixels = opts.min_pixels.unwrap_or(VIDEO_MIN_PIXELS);
    let total = opts.total_pixels.unwrap_or(DEFAULT_FILE_TOTAL_PIXELS);
    finish(idx.clone(), idx, video_fps, sample_fps, (height, width), min_pixels, total)
}

/// Size of a frame-list frame after the first resize (`fetch_image`, factor 64).
pub fn frame_list_fetch_size(height: u32, width: u32, opts: &VideoOptions) -> Result<(u32, u32)> {
    smart_resize(height, width, FRAME_FACTOR_64, opts.min_pixels.unwrap_or(FETCH_MIN_PIXELS), FETCH_MAX_PIXELS)
}

/// Plan of a frame list of `len` frames whose first frame is `height` x `width` (all frames must
/// share the fetched size; the caller checks that).
pub fn plan_frame_list(len: usize, height: u32, width: u32, opts: &VideoOptions) -> Result<VideoPlan> {
    if len == 0 {
        return Err(Error::invalid("video", "a frame list needs at least one frame; pass a list of images"));
    }
    let sampled = frame_list_indices(len, DEFAULT_MAX_FRAMES);
    let frames: Vec<usize> = pad_to_even(sampled.len()).into_iter().map(|i| sampled[i]).collect();
    let n = frames.len();
    let fetched = frame_list_fetch_size(height, width, opts)?;
    let min_pixels = opts.min_pixels.unwrap_or(VIDEO_MIN_PIXELS);
    let total = opts.total_pixels.unwrap_or(FRAME_LIST_TOTAL_PIXELS);
    finish(frames, (0..n).collect(), FRAME_LIST_FPS, FRAME_LIST_FPS, fetched, min_pixels, total)
}

/// What to change so that a file video fits `budget` tokens: the largest max_frames, the largest
/// fps and the largest total_pixels (each alone, the others as given) whose plan fits.
#[derive(Debug, Clone, PartialEq)]
pub struct FitAdvice {
    pub tokens: u64,
    pub budget: u64,
    pub max_frames: Option<usize>,
    pub fps: Option<f64>,
    pub total_pixels: Option<u64>,
}

impl FitAdvice {
    pub fn message(&self) -> String {
        let mut ways = Vec::new();
        if let Some(m) = self.max_frames {
            ways.push(format!("max_frames={m}"));
        }
        if let Some(f) = self.fps {
            ways.push(format!("fps={f}"));
        }
        if let Some(t) = self.total_pixels {
            ways.push(format!("total_pixels={t}"));
        }
        let how = if ways.is_empty() { "a shorter clip".to_string() } else { ways.join(" or ") };
        format!("the video needs {} tokens but only {} fit the context; pass {how}", self.tokens, self.budget)
    }
}

/// Refuse (from the header, before decoding) a file video whose tokens exceed `budget`.
pub fn check_file_fits(total_frames: usize, video_fps: f64, height: u32, width: u32, opts: &VideoOptions, budget: u64) -> Result<VideoPlan> {
    let plan = plan_file(total_frames, video_fps, height, width, opts)?;
    let tokens = plan.num_tokens();
    if tokens <= budget {
        return Ok(plan);
    }
    let fits = |o: &VideoOptions| plan_file(total_frames, video_fps, height, width, o).map(|p| p.num_tokens() <= budget).unwrap_or(false);
    let max_frames = (FRAME_FACTOR..plan.frames.len()).rev().step_by(1).filter(|m| m % 2 == 0).find(|&m| fits(&VideoOptions { max_frames: m, ..*opts }));
    // fps: the sampled count is monotone in fps; search on a 0.01 grid below the current fps.
    let fps = (1..(opts.fps * 100.0) as i64).rev().map(|k| k as f64 / 100.0).find(|&f| fits(&VideoOptions { fps: f, ..*opts }));
    // total_pixels: tokens are monotone in it; bisect on integers.
    let total_pixels = {
        let (mut lo, mut hi) = (0u64, opts.total_pixels.unwrap_or(DEFAULT_FILE_TOTAL_PIXELS) as u64);
        if !fits(&VideoOptions { total_pixels: Some(1.0), ..*opts }) {
            None
        } else {
            while lo + 1 < hi {
                let mid = lo + (hi - lo) / 2;
                if fits(&VideoOptions { total_pixels: Some(mid as f64), ..*opts }) { lo = mid } else { hi = mid }
            }
            Some(lo.max(1))
        }
    };
    let advice = FitAdvice { tokens, budget, max_frames, fps, total_pixels };
    Err(Error::ContextTooLong { message: advice.message() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pixels_formula() {
        assert_eq!(second_resize_max_pixels(131_072, 7_864_320.0, 64), 245_760.0);
        assert_eq!(second_resize_max_pixels(131_072, 7_864_320.0, 4), 786_432.0);
        assert_eq!(second_resize_max_pixels(131_072, 7_864_320.0, 24), 655_360.0);
        // the floor int(min * 1.05) = 137,625
        assert_eq!(second_resize_max_pixels(131_072, 1_000_000.0, 64), 137_625.0);
    }

    #[test]
    fn ten_hour_clip_is_refused_from_the_header_with_advice() {
        // 10 h at 30 fps, 1920x1080: 64 frames of 786,432 pixels, far over an 8k context.
        let opts = VideoOptions::default();
        let err = check_file_fits(1_080_000, 30.0, 1080, 1920, &opts, 8192).unwrap_err();
        let Error::ContextTooLong { message } = err else { panic!() };
        assert!(message.contains("max_frames=") && message.contains("total_pixels="), "{message}");
        // and each suggestion really fits
        let m: usize = message.split("max_frames=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        let p = plan_file(1_080_000, 30.0, 1080, 1920, &VideoOptions { max_frames: m, ..opts }).unwrap();
        assert!(p.num_tokens() <= 8192);
        let p = plan_file(1_080_000, 30.0, 1080, 1920, &VideoOptions { max_frames: m + 2, ..opts }).unwrap();
        assert!(p.num_tokens() > 8192);
        assert!(check_file_fits(30, 10.0, 96, 128, &VideoOptions::default(), 8192).is_ok());
    }
}
