//! Memory rules of the image path.
//!
//! - Every large buffer is allocated fallibly (`try_zeroed`): an allocation the system refuses is
//!   an `ImageTooLarge` error for that image, never a process abort.
//! - Before an image is decoded, the bytes its decode + resize will hold at peak are estimated
//!   from the header (`decode_cost`). A batch runs in consecutive waves whose costs sum to at
//!   most the call's budget (`Options::max_decode_bytes_in_flight`, `waves`), and each wave
//!   reserves its bytes from the process's budget (`process_budget`, shared by every call)
//!   before it starts, so neither a batch nor all calls together hold more decoded pixels than
//!   their budget however many images they have. An image whose own cost exceeds the call's
//!   budget is refused with a typed error that names the budget to raise.

use std::sync::{Condvar, Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::probe::{Format, ImageInfo};

/// Default per-call budget of decoded bytes in flight: 1 GiB holds one decode of Pillow's largest
/// accepted 8-bit RGB JPEG (178.9 Mpx x 3 bytes) plus its resize buffers.
pub const DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT: u64 = 1 << 30;
/// Default process-wide budget of decoded bytes in flight (all calls together).
pub const DEFAULT_PROCESS_DECODE_BYTES: u64 = 2 << 30;
/// Environment variable that sets the process-wide budget (bytes), read once.
pub const PROCESS_BUDGET_ENV: &str = "VLRANK_DECODE_BYTES_IN_FLIGHT";

/// An allocation failure as the error of image `source`.
pub fn alloc_error(what: &str, bytes: u64) -> Error {
    Error::ImageTooLarge {
        source: what.to_string(),
        message: format!(
            "cannot allocate {bytes} bytes (the system refused the memory); pass a smaller image, fewer images per call, \
             or lower max_decode_bytes_in_flight"
        ),
    }
}

/// `vec![value; len]`, with an allocation failure returned as an error instead of an abort.
pub fn try_zeroed<T: Clone + Default>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| alloc_error(what, (len as u64).saturating_mul(std::mem::size_of::<T>() as u64)))?;
    v.resize(len, T::default());
    Ok(v)
}

/// An empty vector with room for `len` elements, fallibly.
pub fn try_with_capacity<T>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| alloc_error(what, (len as u64).saturating_mul(std::mem::size_of::<T>() as u64)))?;
    Ok(v)
}

/// Bytes per pixel the decoder writes for an image of this header (before conversion to RGB).
fn native_bytes_per_pixel(info: &ImageInfo) -> u64 {
    match info.format {
        // libjpeg writes RGB directly (gray and YCbCr are converted by libjpeg; CMYK is 4 bytes,
        // converted to RGB in place).
        Format::Jpeg => 4,
        Format::Png => match info.png_color {
            Some((0, d)) => if d == 16 { 2 } else { 1 },
            Some((2, d)) => if d == 16 { 6 } else { 3 },
            Some((3, _)) => 4,
            Some((4, d)) => if d == 16 { 4 } else { 2 },
            Some((6, d)) => if d == 16 { 8 } else { 4 },
            _ => 8,
        },
        Format::Gif | Format::Bmp => 4,
        // Lossless WebP decodes through an ARGB working buffer beside the output.
        Format::WebP => 8,
        Format::Tiff => 8,
    }
}

/// Peak bytes that decoding and resizing one image holds: the decoder's output, the RGB copy
/// where the conversion cannot run in place, and the resize intermediate (source rows x target
/// width) and result.
pub fn decode_cost(info: &ImageInfo, resized_h: u32, resized_w: u32) -> u64 {
    let px = info.width as u64 * info.height as u64;
    let native = native_bytes_per_pixel(info);
    // 3- and 4-byte 8-bit layouts are converted in place; the others get a new RGB buffer.
    let in_place = matches!(info.format, Format::Jpeg | Format::Gif | Format::Bmp)
        || matches!(info.png_color, Some((2, 8)) | Some((3, _)) | Some((6, 8)));
    let rgb = if in_place { 0 } else { px * 3 };
    let resize = (info.height.max(resized_h) as u64) * resized_w as u64 * 3 + resized_h as u64 * resized_w as u64 * 3;
    px.saturating_mul(native).saturating_add(rgb).saturating_add(resize)
}

/// Refuse an image whose decode needs more than a budget of `capacity` bytes named `name`.
pub fn check_fits(bytes: u64, capacity: u64, source: &str, name: &str) -> Result<()> {
    if bytes > capacity {
        return Err(Error::ImageTooLarge {
            source: source.to_string(),
            message: format!(
                "decoding it needs about {} MiB, over {name} = {} MiB; pass a smaller image (the model sees at most \
                 max_pixels of it) or raise {name}",
                bytes >> 20,
                capacity >> 20
            ),
        });
    }
    Ok(())
}

/// Consecutive index ranges whose costs sum to at most `capacity` (an item over it alone gets a
/// range of its own).
pub fn waves(costs: &[u64], capacity: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut sum) = (0usize, 0u64);
    for (i, &c) in costs.iter().enumerate() {
        if i > start && sum.saturating_add(c) > capacity {
            out.push(start..i);
            start = i;
            sum = 0;
        }
        sum = sum.saturating_add(c);
    }
    if start < costs.len() {
        out.push(start..costs.len());
    }
    out
}

/// A budget of bytes shared by concurrent calls. Reserve only from threads outside the rayon
/// pool (a waiting rayon worker could be the one holding the bytes it waits for).
pub struct Budget {
    capacity: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// A reservation; returns its bytes to the budget when dropped.
pub struct Reservation<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= self.bytes;
        self.budget.freed.notify_all();
    }
}

impl Budget {
    pub fn new(capacity: u64) -> Self {
        Budget { capacity, used: Mutex::new(0), freed: Condvar::new() }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserve `min(bytes, capacity)`, waiting until it fits (a wave larger than the whole
    /// budget runs alone).
    pub fn reserve_up_to(&self, bytes: u64) -> Reservation<'_> {
        let bytes = bytes.min(self.capacity);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used + bytes > self.capacity {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        Reservation { budget: self, bytes }
    }

    /// Reserve `bytes`, waiting until they fit. Every holder is an image being decoded, which
    /// finishes without needing this budget again, so the wait always ends. `name` is the
    /// budget's parameter, named in the error when `bytes` alone exceeds it.
    pub fn reserve(&self, bytes: u64, source: &str, name: &str) -> Result<Reservation<'_>> {
        check_fits(bytes, self.capacity, source, name)?;
        Ok(self.reserve_up_to(bytes))
    }
}

/// The process-wide budget: `VLRANK_DECODE_BYTES_IN_FLIGHT` bytes if set to a positive integer,
/// else `DEFAULT_PROCESS_DECODE_BYTES`.
pub fn process_budget() -> &'static Budget {
    static BUDGET: OnceLock<Budget> = OnceLock::new();
    BUDGET.get_or_init(|| {
        let cap = std::env::var(PROCESS_BUDGET_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&v| v > 0)
            .unwrap_or(DEFAULT_PROCESS_DECODE_BYTES);
        Budget::new(cap)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn info(format: Format, width: u32, height: u32, png_color: Option<(u8, u8)>) -> ImageInfo {
        ImageInfo { format, width, height, png_color }
    }

    #[test]
    fn impossible_allocation_is_an_error() {
        let e = try_zeroed::<u8>(usize::MAX / 2, "x.png").unwrap_err();
        assert!(matches!(e, Error::ImageTooLarge { ref source, .. } if source == "x.png"));
        assert!(try_with_capacity::<u64>(usize::MAX / 4, "y").is_err());
        assert_eq!(try_zeroed::<u8>(5, "z").unwrap(), vec![0; 5]);
    }

    #[test]
    fn costs_follow_the_header() {
        // The 13000 x 13000 GIF logical screen: 4 bytes a pixel, whatever the frame size.
        let gif = decode_cost(&info(Format::Gif, 13000, 13000, None), 1152, 1152);
        assert!(gif >= 13000u64 * 13000 * 4 && gif < 13000u64 * 13000 * 5, "{gif}");
        let webp = decode_cost(&info(Format::WebP, 13000, 13000, None), 1152, 1152);
        assert!(webp > DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT, "a 13000^2 lossless WebP is over the call budget");
        let rgb16 = decode_cost(&info(Format::Png, 100, 100, Some((2, 16))), 96, 96);
        let rgb8 = decode_cost(&info(Format::Png, 100, 100, Some((2, 8))), 96, 96);
        assert!(rgb16 > rgb8 + 100 * 100 * 5, "16-bit needs its own RGB copy");
        // Pillow's largest accepted 8-bit JPEG fits one call's default budget.
        let big = decode_cost(&info(Format::Jpeg, 13376, 13376, None), 1152, 1152);
        assert!(big <= DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT, "{big}");
    }

    #[test]
    fn over_capacity_is_refused_with_the_budget_named() {
        let b = Budget::new(1000);
        let e = b.reserve(1001, "img.gif", "max_decode_bytes_in_flight").err().unwrap();
        match e {
            Error::ImageTooLarge { source, message } => {
                assert_eq!(source, "img.gif");
                assert!(message.contains("max_decode_bytes_in_flight"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let r = b.reserve(1000, "a", "n").unwrap();
        assert_eq!(b.in_use(), 1000);
        drop(r);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn waves_fit_the_budget() {
        assert!(waves(&[], 10).is_empty());
        assert_eq!(waves(&[4, 4, 4, 11, 1, 9], 10), vec![0..2, 2..3, 3..4, 4..6]);
        let w = waves(&[3; 40], 10);
        assert_eq!(w.len(), 14);
        assert!(w[..13].iter().all(|r| r.len() == 3) && w[13] == (39..40), "{w:?}");
        let b = Budget::new(10);
        let r = b.reserve_up_to(25);
        assert_eq!(b.in_use(), 10, "a wave over the whole budget holds all of it");
        drop(r);
    }

    #[test]
    fn reservations_never_exceed_capacity() {
        let b = Arc::new(Budget::new(100));
        let peak = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (b, peak) = (b.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _r = b.reserve(30 + i, "x", "n").unwrap();
                        peak.fetch_max(b.in_use(), Ordering::SeqCst);
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 100);
        assert!(peak.load(Ordering::SeqCst) >= 30);
        assert_eq!(b.in_use(), 0);
    }
}
