//! Image preprocessing of the Qwen3-VL reference, exact to it:
//! decode -> RGB (qwen-vl-utils `to_rgb`) -> smart_resize -> Pillow bicubic -> x/255, (x-0.5)/0.5 ->
//! patchify into (N, 1536) rows ordered by 2x2 merge block.
//!
//! Parallelism: rayon owns it. A batch runs one task per image, and inside an image the resize
//! passes and the patchify split their rows with rayon too; nested rayon work is stolen from the
//! same pool, so a batch never oversubscribes the cores (no second thread pool anywhere).

use std::io::Cursor;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::geometry::{image_tokens, smart_resize, FACTOR};
use crate::probe::{probe_bytes, Format, ImageInfo};

/// Pillow refuses images above 2 x `Image.MAX_IMAGE_PIXELS` (89,478,485) as decompression bombs;
/// we use the same default.
pub const DEFAULT_MAX_DECODE_PIXELS: u64 = 178_956_970;
pub const PATCH: usize = 16;
pub const MERGE: usize = 2;
pub const TEMPORAL: usize = 2;
/// Values per patch row: C x T x 16 x 16.
pub const ROW: usize = 3 * TEMPORAL * PATCH * PATCH;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub min_pixels: u64,
    pub max_pixels: u64,
    /// Largest width x height we agree to decode (checked from the header, before decoding).
    pub max_decode_pixels: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_pixels: crate::geometry::DEFAULT_MIN_PIXELS,
            max_pixels: crate::geometry::DEFAULT_MAX_PIXELS,
            max_decode_pixels: DEFAULT_MAX_DECODE_PIXELS,
        }
    }
}

/// A packed 8-bit RGB image (row-major, 3 bytes per pixel).
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// One input: encoded bytes of any supported format, or a uint8 array (H, W, C) with C in 1, 3, 4
/// (4 = RGBA, composited on white like the reference).
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Encoded { bytes: &'a [u8], name: &'a str },
    Array { data: &'a [u8], height: usize, width: usize, channels: usize, name: &'a str },
}

impl Source<'_> {
    pub fn name(&self) -> &str {
        match self {
            Source::Encoded { name, .. } | Source::Array { name, .. } => name,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// (N, 1536) row-major float32.
    pub pixel_values: Vec<f32>,
    /// (t, h, w) in 16-pixel patches.
    pub grid_thw: [u32; 3],
    pub num_tokens: u64,
    pub original_height: u32,
    pub original_width: u32,
    pub resized_height: u32,
    pub resized_width: u32,
}

impl Preprocessed {
    pub fn num_patches(&self) -> usize {
        self.pixel_values.len() / ROW
    }
}

fn decode_err(source: &str, message: impl Into<String>) -> Error {
    Error::ImageDecode { source: source.to_string(), message: message.into() }
}

fn check_pixel_limit(width: u64, height: u64, limit: u64, source: &str) -> Result<()> {
    if width.saturating_mul(height) > limit {
        return Err(Error::ImageTooLarge {
            source: source.to_string(),
            message: format!(
                "{width}x{height} = {} pixels exceeds the decode limit of {limit} pixels (decompression-bomb guard); \
                 downscale the image first or raise max_decode_pixels",
                width * height
            ),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// decode + to RGB

/// PIL's RGBA-on-white paste (`Image.paste(img, mask=alpha)`), per channel:
/// `DIV255(255 * (255 - a) + c * a)` with Pillow's `DIV255(v) = ((v + 128) >> 8) + v + 128) >> 8`.
#[inline]
fn blend_white(c: u8, a: u8) -> u8 {
    let v = 255 * (255 - a as u32) + c as u32 * a as u32;
    let t = v + 128;
    (((t >> 8) + t) >> 8) as u8
}

/// Whether a decoded alpha channel is one the reference composites on white. qwen-vl-utils
/// composites only images whose PIL mode is "RGBA"; palette+tRNS, RGB+tRNS, gray+tRNS and 8-bit
/// LA open in other modes and `convert("RGB")` drops their alpha. PIL opens 16-bit LA PNGs as RGBA.
fn composites_alpha(info: &ImageInfo) -> bool {
    match info.format {
        Format::Png => matches!(info.png_color, Some((6, _)) | Some((4, 16))),
        Format::WebP | Format::Tiff | Format::Bmp => true,
        Format::Gif | Format::Jpeg => false,
    }
}

fn rgb_from_dynamic(img: image::DynamicImage, info: &ImageInfo, source: &str) -> Result<Rgb> {
    use image::DynamicImage as D;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let n = width * height;
    let mut data = Vec::with_capacity(n * 3);
    let composite = composites_alpha(info);
    match img {
        D::ImageRgb8(b) => data = b.into_raw(),
        D::ImageLuma8(b) => b.as_raw().iter().for_each(|&v| data.extend_from_slice(&[v, v, v])),
        D::ImageLumaA8(b) => b.as_raw().chunks_exact(2).for_each(|p| data.extend_from_slice(&[p[0], p[0], p[0]])),
        D::ImageRgba8(b) => rgba_to_rgb(b.as_raw(), composite, &mut data),
        // PIL reads 16-bit RGB(A) and LA PNGs by their most significant byte ...
        D::ImageRgb16(b) => b.as_raw().iter().for_each(|&v| data.push((v >> 8) as u8)),
        D::ImageRgba16(b) => {
            let msb: Vec<u8> = b.as_raw().iter().map(|&v| (v >> 8) as u8).collect();
            rgba_to_rgb(&msb, composite, &mut data);
        }
        D::ImageLumaA16(b) => {
            if composite {
                let msb: Vec<u8> =
                    b.as_raw().chunks_exact(2).flat_map(|p| {
                        let g = (p[0] >> 8) as u8;
                        [g, g, g, (p[1] >> 8) as u8]
                    }).collect();
                rgba_to_rgb(&msb, true, &mut data);
            } else {
                b.as_raw().chunks_exact(2).for_each(|p| {
                    let g = p[0].min(255) as u8;
                    data.extend_from_slice(&[g, g, g]);
                });
            }
        }
        // ... but 16-bit gray opens as mode "I;16", whose convert("RGB") clips at 255.
        D::ImageLuma16(b) => b.as_raw().iter().for_each(|&v| {
            let g = v.min(255) as u8;
            data.extend_from_slice(&[g, g, g]);
        }),
        other => {
            return Err(decode_err(
                source,
                format!("unsupported pixel format {:?}; pass an 8- or 16-bit gray, RGB or RGBA image", other.color()),
            ))
        }
    }
    Ok(Rgb { width, height, data })
}

fn rgba_to_rgb(rgba: &[u8], composite: bool, out: &mut Vec<u8>) {
    out.reserve(rgba.len() / 4 * 3);
    if composite {
        rgba.chunks_exact(4).for_each(|p| {
            let a = p[3];
            out.extend_from_slice(&[blend_white(p[0], a), blend_white(p[1], a), blend_white(p[2], a)]);
        });
    } else {
        rgba.chunks_exact(4).for_each(|p| out.extend_from_slice(&p[..3]));
    }
}

/// 4:2:0 JPEGs through jpeg-decoder (see Cargo.toml for why). Measured against Pillow's
/// libjpeg-turbo on the golden photo: mean |d| 0.12 levels (zune-jpeg: 0.39), max 3 (zune: 12);
/// on 4:4:4 / 4:2:2 / gray zune-jpeg is the closer one and keeps the job. None: a colour space
/// this path does not handle (CMYK), left to the general decoder.
fn decode_jpeg_h2v2(bytes: &[u8], source: &str, max_decode_pixels: u64) -> Result<Option<Rgb>> {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    d.set_max_decoding_buffer_size(usize::try_from(max_decode_pixels.saturating_mul(4)).unwrap_or(usize::MAX));
    let data = d.decode().map_err(|e| decode_err(source, format!("corrupt or truncated jpeg data: {e}")))?;
    let info = d.info().ok_or_else(|| decode_err(source, "jpeg without a frame header"))?;
    let (width, height) = (info.width as usize, info.height as usize);
    match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 if data.len() == width * height * 3 => Ok(Some(Rgb { width, height, data })),
        _ => Ok(None),
    }
}

/// Decode encoded bytes to RGB by the reference rules. The size is read from the header and
/// checked against `max_decode_pixels` before the decoder allocates anything.
pub fn decode_to_rgb(bytes: &[u8], source: &str, max_decode_pixels: u64) -> Result<Rgb> {
    let info = probe_bytes(bytes, source)?;
    check_pixel_limit(info.width as u64, info.height as u64, max_decode_pixels, source)?;
    let format = match info.format {
        Format::Png => image::ImageFormat::Png,
        Format::Jpeg => image::ImageFormat::Jpeg,
        Format::WebP => image::ImageFormat::WebP,
        Format::Gif => image::ImageFormat::Gif,
        Format::Bmp => image::ImageFormat::Bmp,
        Format::Tiff => image::ImageFormat::Tiff,
    };
    if info.format == Format::Jpeg && !crate::probe::jpeg_is_complete(bytes) {
        return Err(decode_err(source, "truncated JPEG (its scan data ends before the EOI marker); pass the complete file"));
    }
    if info.format == Format::Jpeg && crate::probe::jpeg_is_h2v2(bytes) {
        if let Some(rgb) = decode_jpeg_h2v2(bytes, source, max_decode_pixels)? {
            return Ok(rgb);
        }
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    // Second guard for formats whose real size can differ from the first header we probed.
    limits.max_image_width = Some(info.width.max(1).saturating_mul(2));
    limits.max_image_height = Some(info.height.max(1).saturating_mul(2));
    limits.max_alloc = Some(max_decode_pixels.saturating_mul(8).saturating_add(1 << 24));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => Error::ImageTooLarge { source: source.to_string(), message: l.to_string() },
        image::ImageError::Unsupported(u) => decode_err(source, format!("unsupported {} variant: {u}", info.format.name())),
        other => decode_err(source, format!("corrupt or truncated {} data: {other}", info.format.name())),
    })?;
    check_pixel_limit(img.width() as u64, img.height() as u64, max_decode_pixels, source)?;
    rgb_from_dynamic(img, &info, source)
}

/// A uint8 array (H, W, C), C = 1 (gray), 3 (RGB) or 4 (RGBA, composited on white), to RGB.
pub fn array_to_rgb(data: &[u8], height: usize, width: usize, channels: usize, source: &str, max_decode_pixels: u64) -> Result<Rgb> {
    if height == 0 || width == 0 {
        return Err(Error::invalid(source, format!("image array of shape ({height}, {width}) has a zero side; pass a non-empty image")));
    }
    if !matches!(channels, 1 | 3 | 4) {
        return Err(Error::invalid(
            source,
            format!("image array has {channels} channels; pass (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA uint8"),
        ));
    }
    check_pixel_limit(width as u64, height as u64, max_decode_pixels, source)?;
    if data.len() != height * width * channels {
        return Err(Error::invalid(source, format!("image array has {} bytes, expected {height}x{width}x{channels}", data.len())));
    }
    let out = match channels {
        3 => data.to_vec(),
        1 => data.iter().flat_map(|&v| [v, v, v]).collect(),
        _ => {
            let mut out = Vec::new();
            rgba_to_rgb(data, true, &mut out);
            out
        }
    };
    Ok(Rgb { width, height, data: out })
}

// ---------------------------------------------------------------------------------------------
// Pillow-exact bicubic resize
//
// A port of Pillow's Resample.c (`precompute_coeffs`, `normalize_coeffs_8bpc`,
// `ImagingResampleHorizontal_8bpc` / `Vertical_8bpc`): double-precision coefficients rounded to
// 22-bit fixed point, a horizontal pass (over the source rows that the vertical pass uses) into an
// 8-bit intermediate, then a vertical pass (or the other order, see resize_bicubic). Not used:
// fast_image_resize 6 with Convolution(CatmullRom) has the same kernel, but its source shows it
// runs u8 images vertical-first always and rounds coefficients to i16 with its own precision, so
// its 8-bit intermediate differs from Pillow's by a level on some pixels; this port is bit-exact
// (every golden resized PNG) and splits rows across rayon. (The crate is still listed in
// Cargo.toml and can be dropped.)

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 {
        return ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    }
    if x < 2.0 {
        return (((x - 5.0) * x + 8.0) * x - 4.0) * A;
    }
    0.0
}

/// Per output pixel: first input index, tap count, and `ksize` fixed-point weights.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    k: Vec<i32>,
}

fn precompute_coeffs(in_size: usize, out_size: usize) -> Coeffs {
    const SUPPORT: f64 = 2.0;
    let (in0, in1) = (0.0f64, in_size as f64);
    let scale = (in1 - in0) / out_size as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut k = vec![0i32; out_size * ksize];
    let mut kk = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 + (xx as f64 + 0.5) * scale;
        let mut ww = 0.0f64;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize; // C (int) truncates
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        for x in 0..xmax {
            let w = bicubic_filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            kk[x] = w;
            ww += w;
        }
        for x in 0..xmax {
            if ww != 0.0 {
                kk[x] /= ww;
            }
        }
        let row = &mut k[xx * ksize..(xx + 1) * ksize];
        for x in 0..xmax {
            let v = kk[x] * (1u32 << PRECISION_BITS) as f64;
            row[x] = if kk[x] < 0.0 { (-0.5 + v) as i32 } else { (0.5 + v) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs { ksize, bounds, k }
}

#[inline(always)]
fn clip8(v: i32) -> u8 {
    // Pillow's clip8 lookup: v >> 22 clamped to 0..=255 (a form the compiler vectorises).
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Rows per rayon task: big enough to amortise scheduling, small enough to balance 2-16 cores.
const ROWS_PER_TASK: usize = 16;
const HALF: i32 = 1 << (PRECISION_BITS - 1);

// The passes are written as plain loops over i32 lanes (exact integer arithmetic, like Pillow's)
// and compiled twice: baseline x86-64 (SSE2, which has no 32-bit lane multiply) and AVX2, picked
// at run time, so wheels stay portable while AVX2 machines get vpmulld.
macro_rules! dispatch {
    ($generic:ident, $avx2:ident, ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2($($arg: $ty),*) {
            $generic($($arg),*)
        }
        pub(super) fn run($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { $avx2($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

mod hpass {
    use super::{clip8, Coeffs, HALF};

    #[inline(always)]
    fn row_any(wide: &[[i32; 4]], dst_row: &mut [u8], c: &Coeffs) {
        for (xx, px) in dst_row.chunks_exact_mut(3).enumerate() {
            let (xmin, n) = c.bounds[xx];
            let k = &c.k[xx * c.ksize..xx * c.ksize + n];
            let mut acc = [HALF; 4];
            for (p, &w) in wide[xmin..xmin + n].iter().zip(k) {
                for i in 0..4 {
                    acc[i] += p[i] * w;
                }
            }
            px[0] = clip8(acc[0]);
            px[1] = clip8(acc[1]);
            px[2] = clip8(acc[2]);
        }
    }

    /// Horizontal pass over `dst.len() / (out_w * 3)` rows starting at source row `y0`.
    #[inline(always)]
    fn generic(src: &[u8], src_w: usize, y0: usize, dst: &mut [u8], out_w: usize, c: &Coeffs) {
        // Each source row widened once to 4 x i32 per pixel, so a tap is one 4-lane multiply-add.
        let mut wide = vec![[0i32; 4]; src_w];
        for (r, dst_row) in dst.chunks_exact_mut(out_w * 3).enumerate() {
            let y = y0 + r;
            let src_row = &src[y * src_w * 3..(y + 1) * src_w * 3];
            for (wv, p) in wide.iter_mut().zip(src_row.chunks_exact(3)) {
                *wv = [p[0] as i32, p[1] as i32, p[2] as i32, 0];
            }
            // Tried: a const-generic tap count per ksize (fully unrolled, zero-padded taps): no
            // faster, because LLVM still split the 4-lane multiply-add into scalar imuls; the
            // AVX2 build uses explicit 128-bit vpmulld instead (row_simd).
            row(&wide, dst_row, c);
        }
    }

    dispatch!(generic, avx2, (src: &[u8], src_w: usize, y0: usize, dst: &mut [u8], out_w: usize, c: &Coeffs));

    /// The tap loop of one output row: explicit SIMD where the CPU has it, else the plain loop.
    #[inline(always)]
    fn row(wide: &[[i32; 4]], dst_row: &mut [u8], c: &Coeffs) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 (hence SSE4.1) is present; row_simd reads wide[xmin..xmin + n],
                // inside the row because precompute_coeffs clamps every window to the input.
                return unsafe { row_simd(wide, dst_row, c) };
            }
        }
        row_any(wide, dst_row, c)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn row_simd(wide: &[[i32; 4]], dst_row: &mut [u8], c: &Coeffs) {
        use std::arch::x86_64::*;
        let base = wide.as_ptr() as *const __m128i;
        for (xx, px) in dst_row.chunks_exact_mut(3).enumerate() {
            let (xmin, n) = c.bounds[xx];
            debug_assert!(xmin + n <= wide.len());
            let k = &c.k[xx * c.ksize..xx * c.ksize + n];
            let mut acc = _mm_set1_epi32(HALF);
            for (t, &w) in k.iter().enumerate() {
                let p = _mm_loadu_si128(base.add(xmin + t));
                acc = _mm_add_epi32(acc, _mm_mullo_epi32(p, _mm_set1_epi32(w)));
            }
            let mut out = [0i32; 4];
            _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, acc);
            px[0] = clip8(out[0]);
            px[1] = clip8(out[1]);
            px[2] = clip8(out[2]);
        }
    }
}

mod vpass {
    use super::{clip8, Coeffs, HALF};

    /// Vertical pass for output rows `yy0..` (as many as `dst` holds); source rows are shifted by
    /// `row_shift` (the horizontal pass only produced the rows this pass reads).
    #[inline(always)]
    fn generic(src: &[u8], stride: usize, yy0: usize, dst: &mut [u8], c: &Coeffs, row_shift: usize) {
        // One i32 accumulator row: the inner loop runs over contiguous bytes and vectorises.
        let mut acc = vec![0i32; stride];
        for (r, dst_row) in dst.chunks_exact_mut(stride).enumerate() {
            let yy = yy0 + r;
            let (ymin, n) = c.bounds[yy];
            let ymin = ymin - row_shift;
            acc.fill(HALF);
            for y in 0..n {
                let w = c.k[yy * c.ksize + y];
                let src_row = &src[(ymin + y) * stride..(ymin + y + 1) * stride];
                for (a, &p) in acc.iter_mut().zip(src_row) {
                    *a += p as i32 * w;
                }
            }
            for (d, &a) in dst_row.iter_mut().zip(acc.iter()) {
                *d = clip8(a);
            }
        }
    }

    dispatch!(generic, avx2, (src: &[u8], stride: usize, yy0: usize, dst: &mut [u8], c: &Coeffs, row_shift: usize));
}

fn resample_horizontal(src: &[u8], src_w: usize, row0: usize, rows: usize, out_w: usize, c: &Coeffs) -> Vec<u8> {
    let mut out = vec![0u8; rows * out_w * 3];
    out.par_chunks_mut(out_w * 3 * ROWS_PER_TASK).enumerate().for_each(|(chunk, dst)| {
        hpass::run(src, src_w, row0 + chunk * ROWS_PER_TASK, dst, out_w, c);
    });
    out
}

fn resample_vertical(src: &[u8], width: usize, out_h: usize, c: &Coeffs, row_shift: usize) -> Vec<u8> {
    let stride = width * 3;
    let mut out = vec![0u8; out_h * stride];
    out.par_chunks_mut(stride * ROWS_PER_TASK).enumerate().for_each(|(chunk, dst)| {
        vpass::run(src, stride, chunk * ROWS_PER_TASK, dst, c, row_shift);
    });
    out
}

/// `PIL.Image.resize((width, height), BICUBIC)` on an RGB image, bit for bit.
pub fn resize_bicubic(src: &Rgb, out_w: usize, out_h: usize) -> Rgb {
    if (src.width, src.height) == (out_w, out_h) {
        return src.clone(); // PIL returns a copy when the size is unchanged
    }
    let need_h = out_w != src.width;
    let need_v = out_h != src.height;
    let hc = precompute_coeffs(src.width, out_w);
    let vc = precompute_coeffs(src.height, out_h);
    if need_h && need_v && vc.ksize > hc.ksize {
        // Pass order. Pillow <= 11's Resample.c (which this ports) always went horizontal first,
        // and every golden case agrees with that. Pillow 13 (installed in the dev venv) sometimes
        // runs the vertical pass first; rounding to 8 bits between the passes makes the order
        // visible (a level or so). Measured on 596 random resizes where the order shows: with
        // ksize_v <= ksize_h Pillow 13 went horizontal first 356/364 times, with ksize_v > ksize_h
        // vertical first 204/232 times; every miss shrinks both axes. We could not pin its rule
        // down (not temp size, not kernel-weighted cost, not scale ratio), so we follow the
        // majority rule; the golden cases all have ksize_v <= ksize_h and stay bit-exact.
        let tmp = resample_vertical(&src.data, src.width, out_h, &vc, 0);
        let out = resample_horizontal(&tmp, src.width, 0, out_h, out_w, &hc);
        return Rgb { width: out_w, height: out_h, data: out };
    }
    let mut data_owned: Option<Vec<u8>> = None;
    let mut width = src.width;
    let mut row_shift = 0;
    if need_h {
        // Only the source rows that the vertical pass reads.
        let first = vc.bounds[0].0;
        let (lb, ls) = vc.bounds[out_h - 1];
        let last = lb + ls;
        let (first, last) = if need_v { (first, last) } else { (0, src.height) };
        data_owned = Some(resample_horizontal(&src.data, src.width, first, last - first, out_w, &hc));
        width = out_w;
        row_shift = first;
    }
    if need_v {
        let input = data_owned.as_deref().unwrap_or(&src.data);
        let out = resample_vertical(input, width, out_h, &vc, row_shift);
        return Rgb { width: out_w, height: out_h, data: out };
    }
    Rgb { width: out_w, height: out_h, data: data_owned.unwrap() }
}

// ---------------------------------------------------------------------------------------------
// normalise + patchify (fused)

/// The reference's normalised value of each byte, bit-exact: transformers rescales in float64 and
/// casts to float32 (`(x * (1/255)).astype(float32)`), then normalises in float32 `(x - 0.5) / 0.5`.
fn norm_lut() -> [f32; 256] {
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
pub fn normalize_patchify(img: &Rgb) -> Vec<f32> {
    let (h, w) = (img.height, img.width);
    assert!(h % (PATCH * MERGE) == 0 && w % (PATCH * MERGE) == 0, "resized size must be a multiple of 32");
    let lut = norm_lut();
    let (bh, bw) = (h / 32, w / 32);
    let n = bh * bw * 4;
    let mut out = vec![0f32; n * ROW];
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
    out
}

// ---------------------------------------------------------------------------------------------
// pipeline

/// The RGB image of a source, before resizing.
pub fn source_to_rgb(src: &Source, opts: &Options) -> Result<Rgb> {
    match *src {
        Source::Encoded { bytes, name } => decode_to_rgb(bytes, name, opts.max_decode_pixels),
        Source::Array { data, height, width, channels, name } => {
            array_to_rgb(data, height, width, channels, name, opts.max_decode_pixels)
        }
    }
}

/// The reference's resized RGB image (what `fetch_image` hands to the processor).
pub fn resized_rgb(src: &Source, opts: &Options) -> Result<(Rgb, u32, u32)> {
    // An image that cannot be resized (aspect ratio over 200) is named by its own source name.
    let name = src.name();
    let sized = |h: u32, w: u32| {
        smart_resize(h, w, FACTOR, opts.min_pixels, opts.max_pixels).map_err(|e| match e {
            Error::InvalidInput { field, message } if field == "image" => Error::invalid(name, message),
            other => other,
        })
    };
    // Validate the budget and the size before decoding, so bad arguments cost nothing.
    if let Source::Array { height, width, .. } = *src {
        sized(height as u32, width as u32)?;
    } else if let Source::Encoded { bytes, name } = *src {
        let info = probe_bytes(bytes, name)?;
        sized(info.height, info.width)?;
    }
    let rgb = source_to_rgb(src, opts)?;
    let (oh, ow) = (rgb.height as u32, rgb.width as u32);
    let (rh, rw) = sized(oh, ow)?;
    Ok((resize_bicubic(&rgb, rw as usize, rh as usize), oh, ow))
}

pub fn preprocess(src: &Source, opts: &Options) -> Result<Preprocessed> {
    let (img, oh, ow) = resized_rgb(src, opts)?;
    let (rh, rw) = (img.height as u32, img.width as u32);
    let pixel_values = normalize_patchify(&img);
    Ok(Preprocessed {
        pixel_values,
        grid_thw: [1, rh / PATCH as u32, rw / PATCH as u32],
        num_tokens: image_tokens(rh, rw),
        original_height: oh,
        original_width: ow,
        resized_height: rh,
        resized_width: rw,
    })
}

/// Preprocess many images in parallel (one rayon task each; see the module note on nesting).
pub fn preprocess_batch(srcs: &[Source], opts: &Options) -> Vec<Result<Preprocessed>> {
    srcs.par_iter().map(|s| preprocess(s, opts)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_matches_pillow_corners() {
        assert_eq!(blend_white(0, 0), 255);
        assert_eq!(blend_white(0, 255), 0);
        assert_eq!(blend_white(200, 255), 200);
        // 255*127 + 0*128 = 32385 -> (32385+128 = 32513; (32513>>8)+32513 = 32640; >>8 = 127)
        assert_eq!(blend_white(0, 128), 127);
    }

    #[test]
    fn lut_is_reference_arithmetic() {
        let lut = norm_lut();
        assert_eq!(lut[0], -1.0);
        assert_eq!(lut[255], 1.0);
        // float64 rescale, cast, float32 normalise (not (x - 127.5) / 127.5)
        let x = (128f64 / 255.0) as f32;
        assert_eq!(lut[128], (x - 0.5) / 0.5);
    }

    /// Every value encodes its own position, so the layout can be read back.
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
        let pv = normalize_patchify(&img);
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

    #[test]
    fn resize_identity_and_constant() {
        let img = Rgb { width: 5, height: 4, data: (0..60).map(|v| v as u8).collect() };
        assert_eq!(resize_bicubic(&img, 5, 4), img);
        let flat = Rgb { width: 37, height: 23, data: vec![77; 37 * 23 * 3] };
        for (w, h) in [(64, 32), (10, 7), (37, 96), (5, 23)] {
            let r = resize_bicubic(&flat, w, h);
            assert_eq!((r.width, r.height), (w, h));
            assert!(r.data.iter().all(|&v| v == 77), "constant image stays constant at {w}x{h}");
        }
    }

    #[test]
    fn coeffs_sum_to_one() {
        for (i, o) in [(100, 37), (37, 100), (2500, 1376), (1, 32)] {
            let c = precompute_coeffs(i, o);
            for xx in 0..o {
                let (_, n) = c.bounds[xx];
                let s: i64 = c.k[xx * c.ksize..xx * c.ksize + n].iter().map(|&v| v as i64).sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= n as i64, "{i}->{o} at {xx}: {s}");
            }
        }
    }

    #[test]
    fn arrays_and_errors() {
        let opts = Options::default();
        let gray = vec![10u8; 50 * 40];
        let src = Source::Array { data: &gray, height: 50, width: 40, channels: 1, name: "a" };
        let p = preprocess(&src, &opts).unwrap();
        // 50x40 is under min_pixels: smart_resize grows it to 96x64
        assert_eq!(p.grid_thw, [1, 6, 4]);
        assert_eq!((p.resized_height, p.resized_width, p.num_tokens), (96, 64, 6));
        assert_eq!(p.pixel_values.len(), 24 * ROW);
        assert!(p.pixel_values.iter().all(|&v| v == norm_lut()[10]));
        let rgba = [0u8, 0, 0, 0].repeat(64 * 64);
        let p = preprocess(&Source::Array { data: &rgba, height: 64, width: 64, channels: 4, name: "a" }, &opts).unwrap();
        assert!(p.pixel_values.iter().all(|&v| v == 1.0), "transparent RGBA composites to white");
        let bad = Source::Array { data: &gray, height: 50, width: 40, channels: 2, name: "a" };
        assert!(matches!(preprocess(&bad, &opts), Err(Error::InvalidInput { .. })));
        let small = Options { max_decode_pixels: 100, ..opts };
        assert!(matches!(preprocess(&src, &small), Err(Error::ImageTooLarge { .. })));
        let e = preprocess(&Source::Encoded { bytes: b"", name: "x.png" }, &opts).unwrap_err();
        assert!(matches!(e, Error::ImageDecode { ref source, .. } if source == "x.png"));
    }

    #[test]
    fn png_bomb_header_refused_before_decoding() {
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        v.extend_from_slice(&13u32.to_be_bytes());
        v.extend_from_slice(b"IHDR");
        v.extend_from_slice(&100_000u32.to_be_bytes());
        v.extend_from_slice(&100_000u32.to_be_bytes());
        v.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        let e = decode_to_rgb(&v, "bomb.png", DEFAULT_MAX_DECODE_PIXELS).unwrap_err();
        assert!(matches!(e, Error::ImageTooLarge { .. }));
    }
}
