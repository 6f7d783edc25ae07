//! The video processor's pixel layout (transformers 5.24 `Qwen3VLVideoProcessor`, mean = std =
//! 0.5): rescale and normalise fused into `(x - 127.5) / 127.5` in float32 (the processor folds
//! 1/255 into mean and std), frames grouped in consecutive pairs, and per pair the rows in image
//! order — 2x2 merge blocks row-major, the 4 patches of a block row-major — each row C(3) x T(2,
//! the pair's two frames) x 16 x 16 = 1,536 values.

use rayon::prelude::*;

use crate::error::Result;
use crate::image::{try_zeroed, Rgb, PATCH, ROW, TEMPORAL};

fn lut() -> [f32; 256] {
    let mut t = [0f32; 256];
    for (v, o) in t.iter_mut().enumerate() {
        *o = (v as f32 - 127.5f32) / 127.5f32;
    }
    t
}

/// Frames (even count, all H x W, H and W multiples of 32) -> (T/2 * H/16 * W/16, 1536) rows.
pub fn patchify_video(frames: &[Rgb]) -> Result<Vec<f32>> {
    assert!(!frames.is_empty() && frames.len() % TEMPORAL == 0, "an even, non-zero number of frames");
    let (h, w) = (frames[0].height, frames[0].width);
    assert!(frames.iter().all(|f| f.height == h && f.width == w), "frames of one size");
    assert!(h % 32 == 0 && w % 32 == 0, "resized size must be a multiple of 32");
    let lut = lut();
    let (bh, bw) = (h / 32, w / 32);
    let per_pair = bh * bw * 4 * ROW;
    let mut out: Vec<f32> = try_zeroed(frames.len() / 2 * per_pair, "video rows")?;
    let stride = w * 3;
    // One task per (pair, merged block row): contiguous output.
    out.par_chunks_mut(bw * 4 * ROW).enumerate().for_each(|(task, block_row)| {
        let (pair, by) = (task / bh, task % bh);
        let fr = [&frames[2 * pair].data, &frames[2 * pair + 1].data];
        for (i, row) in block_row.chunks_exact_mut(ROW).enumerate() {
            let (bx, m) = (i / 4, i % 4);
            let (ph, pw) = (by * 2 + m / 2, bx * 2 + m % 2);
            for (t, data) in fr.iter().enumerate() {
                for y in 0..PATCH {
                    let s = &data[(ph * PATCH + y) * stride + pw * PATCH * 3..][..PATCH * 3];
                    for c in 0..3 {
                        let base = (c * TEMPORAL + t) * PATCH * PATCH + y * PATCH;
                        for (x, d) in row[base..base + PATCH].iter_mut().enumerate() {
                            *d = lut[s[x * 3 + c] as usize];
                        }
                    }
                }
            }
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_a_pair() {
        // Frame 0 all 0, frame 1 all 255, 32x32: 4 rows, each [c0: t0 (-1) x256, t1 (1) x256, c1 ...].
        let f0 = Rgb { width: 32, height: 32, data: vec![0; 32 * 32 * 3] };
        let f1 = Rgb { width: 32, height: 32, data: vec![255; 32 * 32 * 3] };
        let rows = patchify_video(&[f0, f1]).unwrap();
        assert_eq!(rows.len(), 4 * ROW);
        for r in rows.chunks_exact(ROW) {
            for c in 0..3 {
                assert!(r[c * 512..c * 512 + 256].iter().all(|&v| v == -1.0));
                assert!(r[c * 512 + 256..c * 512 + 512].iter().all(|&v| v == 1.0));
            }
        }
        assert_eq!(lut()[128], 0.5f32 / 127.5);
    }
}
