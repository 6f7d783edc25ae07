//! The pixel stages of one video after its plan: the first resize of a frame list (qwen-vl-utils
//! `fetch_image` at factor 64, the image decoder's RGB conversion and PIL bicubic) and the second
//! resize + temporal-pair patchify of the sampled frames (both kinds).

use rayon::prelude::*;

use super::budget::{frame_list_fetch_size, VideoOptions};
use super::patchify::patchify_video;
use super::resize::{resize_frames, Frame};
use crate::error::{Error, Result};
use crate::image::{resize_bicubic, source_to_rgb, Options, Rgb, Source, DEFAULT_MAX_DECODE_PIXELS};

/// Decode each frame of a frame list (RGBA composited on white, other modes to RGB) and resize it
/// to its factor-64 fetch size. Every frame must fetch to the first frame's size: the processor
/// stacks them into one tensor.
pub fn fetch_frame_list(sources: &[Source], opts: &VideoOptions, max_decode_pixels: u64) -> Result<Vec<Rgb>> {
    let img_opts = Options { max_decode_pixels, ..Options::default() };
    let frames = sources
        .par_iter()
        .map(|s| {
            let rgb = source_to_rgb(s, &img_opts)?;
            let (h, w) = frame_list_fetch_size(rgb.height as u32, rgb.width as u32, opts)?;
            resize_bicubic(rgb, w as usize, h as usize)
        })
        .collect::<Result<Vec<Rgb>>>()?;
    if let Some(first) = frames.first() {
        if let Some(k) = frames.iter().position(|f| (f.height, f.width) != (first.height, first.width)) {
            return Err(Error::invalid(
                format!("video[{k}]"),
                format!(
                    "frame {k} resizes to {}x{}, frame 0 to {}x{}; pass frames of one size (or one aspect ratio)",
                    frames[k].width, frames[k].height, first.width, first.height
                ),
            ));
        }
    }
    Ok(frames)
}

/// Second resize of the sampled frames (borrowed where they lie) to (resized_height,
/// resized_width) and the processor's rows: (T/2 * H/16 * W/16) x 1536 float32 values, written
/// once into one fallible allocation.
pub fn preprocess_frames(frames: &[Frame], resized_height: usize, resized_width: usize) -> Result<Vec<f32>> {
    if frames.is_empty() || frames.len() % 2 != 0 {
        return Err(Error::invalid(
            "frames",
            format!("{} frames; pass an even, non-zero number of frames (the plan pads to even)", frames.len()),
        ));
    }
    let resized_pixels = (resized_height as u64).saturating_mul(resized_width as u64);
    if resized_pixels > DEFAULT_MAX_DECODE_PIXELS {
        return Err(Error::invalid(
            "resized_height",
            format!("resized size {resized_width}x{resized_height}; pass the plan's resized_height / resized_width (at most {DEFAULT_MAX_DECODE_PIXELS} pixels)"),
        ));
    }
    if resized_height == 0 || resized_width == 0 || resized_height % 32 != 0 || resized_width % 32 != 0 {
        return Err(Error::invalid(
            "resized_height",
            format!("resized size {resized_width}x{resized_height}; pass the plan's resized_height / resized_width (multiples of 32)"),
        ));
    }
    let (h, w) = (frames[0].height, frames[0].width);
    if let Some(k) = frames.iter().position(|f| (f.height, f.width) != (h, w) || f.data.len() != h * w * 3) {
        return Err(Error::invalid(format!("frames[{k}]"), format!("frame {k} is {}x{}, frame 0 {w}x{h}; pass frames of one size", frames[k].width, frames[k].height)));
    }
    let resized = resize_frames(frames, resized_height, resized_width)?;
    patchify_video(&resized)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(h: usize, w: usize, v: u8) -> Rgb {
        Rgb { width: w, height: h, data: vec![v; h * w * 3] }
    }

    fn refs(frames: &[Rgb]) -> Vec<Frame<'_>> {
        frames.iter().map(Frame::from).collect()
    }

    #[test]
    fn odd_or_empty_frame_counts_are_refused() {
        assert!(preprocess_frames(&[], 32, 32).is_err());
        assert!(preprocess_frames(&refs(&[frame(32, 32, 0)]), 32, 32).is_err());
    }

    #[test]
    fn sizes_must_be_multiples_of_32_and_frames_one_size() {
        let two = [frame(32, 32, 0), frame(32, 32, 0)];
        assert!(preprocess_frames(&refs(&two), 48, 32).is_err());
        let mixed = [frame(32, 32, 0), frame(64, 32, 0)];
        assert!(preprocess_frames(&refs(&mixed), 32, 32).is_err());
        assert!(preprocess_frames(&refs(&two), 1 << 31, 1 << 31).is_err()); // refused before any buffer
        let short = [Frame { data: &[0; 10], height: 32, width: 32 }, Frame { data: &[0; 10], height: 32, width: 32 }];
        assert!(preprocess_frames(&short, 32, 32).is_err());
    }

    #[test]
    fn one_pair_gives_rows_of_1536_normalised_values() {
        let two = [frame(40, 40, 255), frame(40, 40, 255)];
        let v = preprocess_frames(&refs(&two), 64, 32).unwrap();
        assert_eq!(v.len(), 4 * 2 * 1536);
        assert!(v.iter().all(|&x| x == 1.0));
    }
}
