//! The second resize of video frames: torchvision `resize(..., BICUBIC, antialias=True)` on uint8
//! frames, which casts to float32 and runs ATen's `_upsample_bicubic2d_aa` CPU kernel
//! (`separable_upsample_generic_Nd_kernel_impl` in `aten/src/ATen/native/cpu/UpSampleKernel.cpp`),
//! then clamps to 0..=255, rounds half to even and casts back to uint8.
//!
//! The rules that hold, all taken from that kernel's float path:
//! - separable: the width (contiguous) pass first into a float32 temporary, then the height pass;
//!   a pass whose size is unchanged is skipped, both unchanged is a copy;
//! - per axis, in float32: `scale = in / out`, `support = 2 * scale` when downscaling (else 2),
//!   `center = (f32)(scale * (i + 0.5))` (the product is taken in double), `xmin = trunc(center -
//!   support + 0.5)` clamped at 0, `xmax = min(trunc(center + support + 0.5), in)`, tap count
//!   capped at `ceil(support) * 2 + 1`; weight `j` is `filter(((xmin + j) - center + 0.5) *
//!   invscale)` with `invscale = 1 / scale` when downscaling (else 1), normalised by their float
//!   sum;
//! - the filter is Keys' cubic with a = -0.5 on the antialias path (ATen uses -0.75 only without
//!   antialias), evaluated in float32;
//! - each output is a float32 sum over the taps in order, starting from the first product.
//!
//! ATen's CPU kernels are built with FMA enabled (AVX2/AVX-512 dispatch, GCC contracts `a * b + c`),
//! so the filter polynomial and the tap sums are fused multiply-adds; the golden frames pin this down
//! (`fma_contraction_matches_golden`).

use rayon::prelude::*;

use crate::error::Result;
use crate::image::{try_with_capacity, try_zeroed, Rgb};

/// Keys' cubic parameter of ATen's antialiased bicubic.
pub const CUBIC_A: f32 = -0.5;

/// Per-output taps of one axis: first source index, tap count, and `max_taps` weights each.
#[derive(Debug, Clone)]
pub struct AxisWeights {
    pub xmin: Vec<usize>,
    pub xsize: Vec<usize>,
    pub max_taps: usize,
    pub weights: Vec<f32>,
}

#[inline]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// ATen `HelperInterpCubic::aa_filter<float>` with a = -0.5 (`cubic_convolution1/2`, contracted).
#[inline]
pub fn cubic_filter(x: f32) -> f32 {
    let a = CUBIC_A;
    let x = x.abs();
    if x < 1.0 {
        // ((a + 2) * x - (a + 3)) * x * x + 1
        fma(fma(a + 2.0, x, -(a + 3.0)) * x, x, 1.0)
    } else if x < 2.0 {
        // ((a * x - 5a) * x + 8a) * x - 4a
        fma(fma(fma(a, x, -5.0 * a), x, 8.0 * a), x, -4.0 * a)
    } else {
        0.0
    }
}

/// ATen `_compute_index_ranges_weights` (antialias = true, align_corners = false, no scale given).
/// Allocated fallibly (an upscale to a huge output is a typed error, never an abort).
pub fn axis_weights(input_size: usize, output_size: usize) -> Result<AxisWeights> {
    assert!(input_size > 0 && output_size > 0);
    let scale: f32 = input_size as f32 / output_size as f32;
    let support: f32 = if scale >= 1.0 { (2.0f64 * scale as f64) as f32 } else { 2.0 };
    let max_taps = support.ceil() as usize * 2 + 1;
    let invscale: f32 = if scale >= 1.0 { (1.0f64 / scale as f64) as f32 } else { 1.0 };
    let mut xmin = try_with_capacity(output_size, "video resize weights")?;
    let mut xsize = try_with_capacity(output_size, "video resize weights")?;
    let mut weights: Vec<f32> = try_zeroed(output_size.saturating_mul(max_taps), "video resize weights")?;
    for i in 0..output_size {
        let center: f32 = (scale as f64 * (i as f64 + 0.5)) as f32;
        let lo = (((center - support) as f64 + 0.5) as i64).max(0);
        let hi = (((center + support) as f64 + 0.5) as i64).min(input_size as i64);
        let size = (hi - lo).clamp(0, max_taps as i64) as usize;
        let w = &mut weights[i * max_taps..(i + 1) * max_taps];
        let mut total = 0f32;
        for (j, wj) in w.iter_mut().enumerate().take(size) {
            // (j + xmin - center + 0.5) * invscale: the integer is converted to float, the +0.5
            // and the product are double, the filter argument is float.
            let d: f32 = (j as i64 + lo) as f32 - center;
            let x: f32 = ((d as f64 + 0.5) * invscale as f64) as f32;
            let v = cubic_filter(x);
            *wj = v;
            total += v;
        }
        if total != 0.0 {
            for wj in w.iter_mut().take(size) {
                *wj /= total;
            }
        }
        xmin.push(lo as usize);
        xsize.push(size);
    }
    Ok(AxisWeights { xmin, xsize, max_taps, weights })
}

#[inline]
fn tap_sum(src: impl Fn(usize) -> f32, w: &[f32], n: usize) -> f32 {
    let mut acc = src(0) * w[0];
    for j in 1..n {
        acc = fma(src(j), w[j], acc);
    }
    acc
}

/// torchvision's rounding back to uint8: clamp to [0, 255], round half to even, cast.
#[inline]
pub fn to_u8(v: f32) -> u8 {
    v.clamp(0.0, 255.0).round_ties_even() as u8
}

/// One frame, borrowed: `height * width * 3` interleaved RGB bytes (a slice of the caller's
/// (T, H, W, 3) array, or an `Rgb`'s data), so the resize reads it where it lies.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub data: &'a [u8],
    pub height: usize,
    pub width: usize,
}

impl<'a> From<&'a Rgb> for Frame<'a> {
    fn from(f: &'a Rgb) -> Self {
        Frame { data: &f.data, height: f.height, width: f.width }
    }
}

/// Frames of one size laid out back to back (a (T, H, W, 3) array's bytes), each borrowed.
pub fn frames_of(data: &[u8], height: usize, width: usize) -> Vec<Frame<'_>> {
    let per = (height * width * 3).max(1);
    data.chunks_exact(per).map(|data| Frame { data, height, width }).collect()
}

/// The width pass: `src` (h x w x 3, u8, each value read as float32 as the kernel casts it) to an
/// h x out_w x 3 float32 temporary.
fn width_pass(src: &Frame, out_w: usize) -> Result<Vec<f32>> {
    let (h, w) = (src.height, src.width);
    let aw = axis_weights(w, out_w)?;
    let mut tmp: Vec<f32> = try_zeroed(h * out_w * 3, "video frame")?;
    for (y, row) in tmp.chunks_exact_mut(out_w * 3).enumerate() {
        let srow = &src.data[y * w * 3..(y + 1) * w * 3];
        for x in 0..out_w {
            let (x0, n) = (aw.xmin[x], aw.xsize[x]);
            let wt = &aw.weights[x * aw.max_taps..];
            for c in 0..3 {
                row[x * 3 + c] = tap_sum(|j| srow[(x0 + j) * 3 + c] as f32, wt, n);
            }
        }
    }
    Ok(tmp)
}

/// The height pass over rows of `stride` values read by `value(index)`, rounded to uint8 as each
/// output is summed (the kernel rounds the pass's float32 result, value by value).
fn height_pass(value: impl Fn(usize) -> f32, h: usize, out_h: usize, stride: usize) -> Result<Vec<u8>> {
    let ah = axis_weights(h, out_h)?;
    let mut out: Vec<u8> = try_zeroed(out_h * stride, "video frame")?;
    for (y, row) in out.chunks_exact_mut(stride).enumerate() {
        let (y0, n) = (ah.xmin[y], ah.xsize[y]);
        let wt = &ah.weights[y * ah.max_taps..];
        for (i, o) in row.iter_mut().enumerate() {
            *o = to_u8(tap_sum(|j| value((y0 + j) * stride + i), wt, n));
        }
    }
    Ok(out)
}

/// Resize one RGB frame (H, W, 3 interleaved) to (out_h, out_w) exactly as the torchvision path.
/// Channels are independent in the kernel, so interleaved storage gives the planar results. The
/// source is read in place (no float copy of it); the only temporary is the width pass's float32
/// result. Every buffer is allocated fallibly: a refused allocation is an `ImageTooLarge` error,
/// never an abort.
pub fn resize_frame(src: Frame, out_h: usize, out_w: usize) -> Result<Rgb> {
    let (h, w) = (src.height, src.width);
    let data = match (out_w != w, out_h != h) {
        (false, false) => {
            let mut data = try_with_capacity(src.data.len(), "video frame")?;
            data.extend_from_slice(src.data);
            data
        }
        (true, false) => {
            let tmp = width_pass(&src, out_w)?;
            let mut data = try_with_capacity(tmp.len(), "video frame")?;
            data.extend(tmp.into_iter().map(to_u8));
            data
        }
        (true, true) => {
            let tmp = width_pass(&src, out_w)?;
            height_pass(|i| tmp[i], h, out_h, out_w * 3)?
        }
        (false, true) => height_pass(|i| src.data[i] as f32, h, out_h, w * 3)?,
    };
    Ok(Rgb { width: out_w, height: out_h, data })
}

/// Resize every frame, one rayon task per frame.
pub fn resize_frames(frames: &[Frame], out_h: usize, out_w: usize) -> Result<Vec<Rgb>> {
    frames.par_iter().map(|f| resize_frame(*f, out_h, out_w)).collect()
}
