//! Image preprocessing of the Qwen3-VL reference, exact to it:
//! decode -> RGB (qwen-vl-utils `to_rgb`) -> smart_resize -> Pillow bicubic -> x/255, (x-0.5)/0.5 ->
//! patchify into (N, 1536) rows ordered by 2x2 merge block.
//!
//! - `decode` (+ `jpeg`): encoded bytes / arrays -> RGB; `resample`: Pillow's bicubic;
//!   `patchify`: normalise + patch rows; `budget`: fallible allocation and the decoded-bytes
//!   budgets every decode reserves from.
//!
//! Parallelism: rayon owns it. A batch runs one task per image, and inside an image the resize
//! passes and the patchify split their rows with rayon too; nested rayon work is stolen from the
//! same pool, so a batch never oversubscribes the cores (no second thread pool anywhere).
//!
//! Memory: an image's decode cost is estimated from its header before its pixels are allocated;
//! a batch runs in waves that fit the call's budget and reserve the process's (`run_budgeted`),
//! and each decoded RGB is freed inside its resize, so only the model's inputs outlive a decode.

mod budget;
mod decode;
mod jpeg;
mod patchify;
mod resample;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::geometry::{image_tokens, smart_resize, FACTOR};
use crate::probe::{probe_bytes, ImageInfo};

pub use budget::{
    process_budget, try_with_capacity, try_zeroed, Budget, Reservation, DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT,
    DEFAULT_PROCESS_DECODE_BYTES, PROCESS_BUDGET_ENV,
};
pub use decode::{array_to_rgb, decode_to_rgb};
pub use patchify::normalize_patchify;
pub use resample::resize_bicubic;

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
    /// Bytes of decoded pixels (decoder output + resize buffers) one call may hold at once;
    /// an image whose own decode needs more is refused.
    pub max_decode_bytes_in_flight: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_pixels: crate::geometry::DEFAULT_MIN_PIXELS,
            max_pixels: crate::geometry::DEFAULT_MAX_PIXELS,
            max_decode_pixels: DEFAULT_MAX_DECODE_PIXELS,
            max_decode_bytes_in_flight: DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT,
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

/// An allocation error of a stage that does not know the image, as the error of image `name`.
fn name_alloc_error(e: Error, name: &str) -> Error {
    match e {
        Error::ImageTooLarge { source, message } if source != name => {
            Error::ImageTooLarge { source: name.to_string(), message: format!("{source}: {message}") }
        }
        other => other,
    }
}

/// The RGB image of a source, before resizing (for inspection; no in-flight budget).
pub fn source_to_rgb(src: &Source, opts: &Options) -> Result<Rgb> {
    match *src {
        Source::Encoded { bytes, name } => decode_to_rgb(bytes, name, opts.max_decode_pixels),
        Source::Array { data, height, width, channels, name } => {
            array_to_rgb(data, height, width, channels, name, opts.max_decode_pixels)
        }
    }
}

/// The size a source resizes to, with the smart_resize error named by the source.
fn target_size(h: u32, w: u32, name: &str, opts: &Options) -> Result<(u32, u32)> {
    // An image that cannot be resized (aspect ratio over 200) is named by its own source name.
    smart_resize(h, w, FACTOR, opts.min_pixels, opts.max_pixels).map_err(|e| match e {
        Error::InvalidInput { field, message } if field == "image" => Error::invalid(name, message),
        other => other,
    })
}

/// Peak bytes decoding + resizing the image of header `info` holds, after checking its resize
/// target and the pixel limit: all from the header, before any pixel exists.
pub fn cost_from_info(info: &ImageInfo, name: &str, opts: &Options) -> Result<u64> {
    let (rh, rw) = target_size(info.height, info.width, name, opts)?;
    decode::check_pixel_limit(info.width as u64, info.height as u64, opts.max_decode_pixels, name)?;
    Ok(budget::decode_cost(info, rh, rw))
}

/// `cost_from_info` of any source (arrays: the RGB copy and the resize buffers).
pub fn decode_cost(src: &Source, opts: &Options) -> Result<u64> {
    match *src {
        Source::Encoded { bytes, name } => cost_from_info(&probe_bytes(bytes, name)?, name, opts),
        Source::Array { height, width, name, .. } => {
            let (rh, rw) = target_size(height as u32, width as u32, name, opts)?;
            Ok((height * width * 3) as u64 + (height.max(rh as usize) * rw as usize * 3) as u64 + rh as u64 * rw as u64 * 3)
        }
    }
}

/// The reference's resized RGB image (what `fetch_image` hands to the processor). Refuses an
/// image whose decode alone needs more than `max_decode_bytes_in_flight`; the decoded RGB is
/// freed inside the resize.
pub fn resized_rgb(src: &Source, opts: &Options) -> Result<(Rgb, u32, u32)> {
    let name = src.name();
    let cost = decode_cost(src, opts)?;
    budget::check_fits(cost, opts.max_decode_bytes_in_flight, name, "max_decode_bytes_in_flight")?;
    let rgb = match *src {
        Source::Encoded { bytes, name } => {
            let info = probe_bytes(bytes, name)?;
            decode::decode_with_info(bytes, &info, name, cost)?
        }
        Source::Array { data, height, width, channels, name } => {
            array_to_rgb(data, height, width, channels, name, opts.max_decode_pixels)?
        }
    };
    let (oh, ow) = (rgb.height as u32, rgb.width as u32);
    let (rh, rw) = target_size(oh, ow, name, opts)?;
    let out = resize_bicubic(rgb, rw as usize, rh as usize).map_err(|e| name_alloc_error(e, name))?;
    Ok((out, oh, ow))
}

pub fn preprocess(src: &Source, opts: &Options) -> Result<Preprocessed> {
    let (img, oh, ow) = resized_rgb(src, opts)?;
    let (rh, rw) = (img.height as u32, img.width as u32);
    let pixel_values = normalize_patchify(&img).map_err(|e| name_alloc_error(e, src.name()))?;
    drop(img);
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

/// Run `run(i)` for every item in parallel under the decode budgets: items go in consecutive
/// waves whose summed `costs` fit `max_decode_bytes_in_flight` (an item over it alone runs by
/// itself and refuses itself), and each wave first reserves its bytes from the process budget.
/// The reservation waits in the calling thread, never inside a rayon task, so a thread that
/// holds budget can never block on it while stealing work. Call from outside the rayon pool.
pub fn run_budgeted<T: Send>(
    costs: &[u64],
    opts: &Options,
    run: impl Fn(usize) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    let process = process_budget();
    let mut out = Vec::with_capacity(costs.len());
    for wave in budget::waves(costs, opts.max_decode_bytes_in_flight) {
        let bytes: u64 = costs[wave.clone()].iter().map(|&c| c.min(opts.max_decode_bytes_in_flight)).sum();
        let _held = process.reserve_up_to(bytes);
        let results: Vec<Result<T>> = wave.into_par_iter().map(&run).collect();
        out.extend(results);
    }
    out
}

/// Preprocess many images in parallel under the decode budgets (`run_budgeted`). An image whose
/// header cannot be read gets its error without being scheduled.
pub fn preprocess_batch(srcs: &[Source], opts: &Options) -> Vec<Result<Preprocessed>> {
    let costs: Vec<u64> = srcs.iter().map(|s| decode_cost(s, opts).unwrap_or(0)).collect();
    run_budgeted(&costs, opts, |i| preprocess(&srcs[i], opts))
}

#[cfg(test)]
mod tests {
    use super::patchify::norm_lut;
    use super::*;

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

    /// A GIF whose logical screen is `w` x `h` and whose one frame is 1 x 1.
    fn gif_screen_bomb(w: u16, h: u16) -> Vec<u8> {
        let mut v = b"GIF89a".to_vec();
        v.extend_from_slice(&w.to_le_bytes());
        v.extend_from_slice(&h.to_le_bytes());
        v.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255]); // 2-colour global table
        v.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]); // 1x1 frame at (0, 0)
        v.extend_from_slice(&[2, 2, 0x4C, 0x01, 0, 0x3B]);
        v
    }

    #[test]
    fn budgets_are_checked_from_the_header() {
        let bomb = gif_screen_bomb(13000, 13000);
        let src = Source::Encoded { bytes: &bomb, name: "bomb.gif" };
        let opts = Options::default();
        let cost = decode_cost(&src, &opts).unwrap();
        assert!(cost >= 13000 * 13000 * 4, "the logical screen, not the 1x1 frame, is what is allocated");
        let tight = Options { max_decode_bytes_in_flight: cost - 1, ..opts };
        let e = preprocess(&src, &tight).unwrap_err();
        match e {
            Error::ImageTooLarge { source, message } => {
                assert_eq!(source, "bomb.gif");
                assert!(message.contains("max_decode_bytes_in_flight"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A batch of bombs under a budget of one bomb: every image refused, none decoded.
        let batch = vec![src; 8];
        let out = preprocess_batch(&batch, &tight);
        assert!(out.iter().all(|r| matches!(r, Err(Error::ImageTooLarge { .. }))));
    }

    #[test]
    fn small_gif_screen_decodes_at_its_screen_size() {
        let gif = gif_screen_bomb(64, 40);
        let p = preprocess(&Source::Encoded { bytes: &gif, name: "g.gif" }, &Options::default()).unwrap();
        assert_eq!((p.original_width, p.original_height), (64, 40));
    }
}
