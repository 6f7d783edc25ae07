//! Normalise + patchify, fused: resized RGB bytes -> (N, 1536) float32 rows.

use rayon::prelude::*;

use super::budget::try_zeroed;
use super::{Rgb, MERGE, PATCH, ROW, TEMPORAL};
use crate::error::Result;


/// The reference's normalised value of each byte, bit-exact: transformers rescales in float64 and
/// casts to float32 (`(x * (1/255)).astype(float32)`), then normalises in float32 `(x - 0.5) / 0.5`.
pub(super) fn norm_lut() -> [f32; 256] {
    let mut lut = [0f32; 256];
    for (v, out) in lut.iter_mut().enumerate() {
        let x = (v as f64 * (1.0 / 255.0)) as f32;
        *out = (x - 0.5f32) / 0.5f32;
    }
    lut
}

/// RGB (H, W multiples of 32) -> (N, 1536) rows: rows ordered by 2x2 merge block (row-major over
/// blocks, then the 4 patches of a block row-major); each row is C(3) x T(2, the frame twice) x
/// 16 x 16, as the HF Qwen2-VL processor's reshape/transpose lays them out.
pub fn normalize_patchify(img: &Rgb) -> Result<Vec<f32>> {
    let (h, w) = (img.height, img.width);
    assert!(h % (PATCH * MERGE) == 0 && w % (PATCH * MERGE) == 0, "resized size must be a multiple of 32");
    let lut = norm_lut();
    let (bh, bw) = (h / 32, w / 32);
    let n = bh * bw * 4;
    let mut out = try_zeroed(n * ROW, "the pixel values")?;
    let stride = w * 3;
    // One task per merged block row (4 patches x bw blocks): contiguous output, 32 source rows.
    out.par_chunks_mut(bw * 4 * ROW).enumerate().for_each(|(by, block_row)| {
        for (i, row) in block_row.chunks_exact_mut(ROW).enumerate() {
            let (bx, m) = (i / 4, i % 4);
            let (ph, pw) = (by * 2 + m / 2, bx * 2 + m % 2);
            for y in 0..PATCH {
                let s = &img.data[(ph * PATCH + y) * stride + pw * PATCH * 3..][..PATCH * 3];
                for c in 0..3 {
                    let base = c * TEMPORAL * PATCH * PATCH + y * PATCH;
                    let dst = &mut row[base..base + PATCH];
                    for (x, d) in dst.iter_mut().enumerate() {
                        *d = lut[s[x * 3 + c] as usize];
                    }
                }
            }
            // T = 2: the frame repeated.
            for c in 0..3 {
                let base = c * TEMPORAL * PATCH * PATCH;
                row.copy_within(base..base + PATCH * PATCH, base + PATCH * PATCH);
            }
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lut_is_reference_arithmetic() {
        let lut = norm_lut();
        assert_eq!(lut[0], -1.0);
        assert_eq!(lut[255], 1.0);
        // float64 rescale, cast, float32 normalise (not (x - 127.5) / 127.5)
        let x = (128f64 / 255.0) as f32;
        assert_eq!(lut[128], (x - 0.5) / 0.5);
    }

    #[test]
    fn patchify_layout() {
        let (h, w) = (64usize, 96usize);
        // pixel (y, x) channel c = (y * 7 + x * 3 + c * 50) % 256
        let mut data = vec![0u8; h * w * 3];
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    data[(y * w + x) * 3 + c] = ((y * 7 + x * 3 + c * 50) % 256) as u8;
                }
            }
        }
        let img = Rgb { width: w, height: h, data: data.clone() };
        let pv = normalize_patchify(&img).unwrap();
        let lut = norm_lut();
        let (gh, gw) = (h / 16, w / 16);
        assert_eq!(pv.len(), gh * gw * ROW);
        // Reference: reshape(1, 2, 3, gh/2, 2, 16, gw/2, 2, 16).transpose(0,3,6,4,7,2,1,5,8)
        for bh in 0..gh / 2 {
            for bw in 0..gw / 2 {
                for mh in 0..2 {
                    for mw in 0..2 {
                        let r = ((bh * (gw / 2) + bw) * 2 + mh) * 2 + mw;
                        for c in 0..3 {
                            for t in 0..2 {
                                for py in 0..16 {
                                    for px in 0..16 {
                                        let y = (bh * 2 + mh) * 16 + py;
                                        let x = (bw * 2 + mw) * 16 + px;
                                        let col = ((c * 2 + t) * 16 + py) * 16 + px;
                                        assert_eq!(pv[r * ROW + col], lut[data[(y * w + x) * 3 + c] as usize]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
