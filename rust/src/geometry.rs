//! Image geometry of the Qwen3-VL reference: `smart_resize` (qwen-vl-utils, factor 32 = patch 16 x
//! merge 2) and the image token count.
//!
//! The reference is Python (`make_golden.py` in the golden folder is the statement we match):
//! ```python
//! if max(h, w) / min(h, w) > 200: raise ValueError
//! hb = max(factor, round(h / factor) * factor); wb = max(factor, round(w / factor) * factor)
//! if hb * wb > max_pixels:
//!     beta = math.sqrt((h * w) / max_pixels)
//!     hb = math.floor(h / beta / factor) * factor; wb = math.floor(w / beta / factor) * factor
//! elif hb * wb < min_pixels:
//!     beta = math.sqrt(min_pixels / (h * w))
//!     hb = math.ceil(h * beta / factor) * factor; wb = math.ceil(w * beta / factor) * factor
//! ```
//! Every float step is an f64 operation in the same order as Python's, so results are identical.
//! Python's `round` is round-half-to-even, and `int / int` is the *correctly rounded* quotient of
//! the exact integers (even past 2**53), which `exact_div` reproduces.
//!
//! Unlike transformers' variant, qwen-vl-utils does not clamp the shrink branch at `factor`: with a
//! tiny `max_pixels` and a thin image it yields a zero side, on which the reference then fails in
//! PIL's resize. We fail up front with a typed error instead of inventing a size (clamping to 32
//! would break the budget that the caller asked for).

use crate::error::{Error, Result};

/// The resize factor of Qwen3-VL: patch size 16 times spatial merge 2.
pub const FACTOR: u32 = 32;
/// Default pixel budget (qwen-vl-utils' 4 x 32 x 32 minimum; the hosted 1,280-token maximum).
pub const DEFAULT_MIN_PIXELS: u64 = 4096;
pub const DEFAULT_MAX_PIXELS: u64 = 1_310_720;
/// Longest / shortest side above which the reference refuses an image.
pub const MAX_ASPECT_RATIO: f64 = 200.0;

/// Correctly rounded `a / b` as f64 (round-half-even), as Python's `int / int` computes it.
fn exact_div(a: u128, b: u128) -> f64 {
    const EXACT: u128 = 1 << 53;
    if a < EXACT && b < EXACT {
        // Both convert exactly and IEEE division rounds once: the same result as Python's.
        return a as f64 / b as f64;
    }
    if a == 0 {
        return 0.0;
    }
    // Long division to 55 significant bits plus a sticky bit, then one round-half-even.
    // Scale so that the quotient has between 55 and 56 bits.
    let shift: i32 = 55 - (128 - a.leading_zeros() as i32) + (128 - b.leading_zeros() as i32);
    let (mut num, mut den) = (a, b);
    // a, b < 2^64 here (they come from u64 products of u32s), so shifting by <= 64 fits in u128.
    if shift >= 0 {
        num <<= shift as u32;
    } else {
        den <<= (-shift) as u32;
    }
    let mut q = num / den;
    let mut rem = num % den;
    let mut exp = -shift;
    // Normalise q into [2^54, 2^55): 55 bits = 53 mantissa bits + guard + one extra.
    while q >= (1u128 << 55) {
        rem |= q & 1;
        q >>= 1;
        exp += 1;
    }
    while q < (1u128 << 54) {
        num = rem << 1;
        q = (q << 1) | (num / den);
        rem = num % den;
        exp -= 1;
    }
    // q has 55 bits: keep 53, round on the 2 dropped bits plus the remainder (sticky).
    let dropped = q & 0b11;
    let mut m = q >> 2;
    if dropped == 0b11 || (dropped == 0b10 && (rem != 0 || m & 1 == 1)) {
        m += 1;
    }
    (m as f64) * 2f64.powi(exp + 2)
}

/// The resized (height, width) of an image under the pixel budget, exactly as the reference.
pub fn smart_resize(height: u32, width: u32, factor: u32, min_pixels: u64, max_pixels: u64) -> Result<(u32, u32)> {
    if height == 0 || width == 0 {
        return Err(Error::invalid(
            if height == 0 { "height" } else { "width" },
            format!("image size {width}x{height} has a zero side; pass an image at least 1 pixel wide and high"),
        ));
    }
    if factor == 0 {
        return Err(Error::invalid("factor", "factor must be positive (Qwen3-VL uses 32)"));
    }
    if min_pixels > max_pixels {
        return Err(Error::invalid(
            "min_pixels",
            format!("min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels}); pass min_pixels <= max_pixels"),
        ));
    }
    if max_pixels == 0 {
        return Err(Error::invalid("max_pixels", "max_pixels must be positive (default 1310720)"));
    }
    let (h, w) = (height as f64, width as f64);
    if h.max(w) / h.min(w) > MAX_ASPECT_RATIO {
        return Err(Error::invalid(
            "image",
            format!(
                "aspect ratio of a {width}x{height} image is over {MAX_ASPECT_RATIO}; crop or pad it to at most 200:1"
            ),
        ));
    }
    let f = factor as f64;
    let fi = factor as i128;
    let round_f = |x: u32| -> i128 { ((x as f64 / f).round_ties_even() as i128 * fi).max(fi) };
    let mut hb = round_f(height);
    let mut wb = round_f(width);
    let area = height as u128 * width as u128;
    if (hb * wb) as u128 > max_pixels as u128 {
        let beta = exact_div(area, max_pixels as u128).sqrt();
        hb = (h / beta / f).floor() as i128 * fi;
        wb = (w / beta / f).floor() as i128 * fi;
    } else if ((hb * wb) as u128) < min_pixels as u128 {
        let beta = exact_div(min_pixels as u128, area).sqrt();
        hb = (h * beta / f).ceil() as i128 * fi;
        wb = (w * beta / f).ceil() as i128 * fi;
    }
    if hb <= 0 || wb <= 0 {
        return Err(Error::invalid(
            "max_pixels",
            format!(
                "max_pixels={max_pixels} is too small for a {width}x{height} image: its short side would resize to 0; \
                 pass a larger max_pixels (at least {} for this aspect ratio)",
                min_budget_for(height, width, factor)
            ),
        ));
    }
    if hb > u32::MAX as i128 || wb > u32::MAX as i128 {
        return Err(Error::invalid("min_pixels", format!("min_pixels={min_pixels} gives a resized size that is too large")));
    }
    Ok((hb as u32, wb as u32))
}

/// A max_pixels large enough that the short side of a (height, width) image keeps one factor.
fn min_budget_for(height: u32, width: u32, factor: u32) -> u64 {
    let (s, l) = (height.min(width) as f64, height.max(width) as f64);
    let f = factor as f64;
    // short side / beta >= f  <=>  max_pixels >= f^2 * long / short
    ((f * f * l / s).ceil() as u64).max(f as u64 * f as u64)
}

/// Image tokens the model sees for a resized (height, width): one per 32 x 32 merged block.
pub fn image_tokens(resized_height: u32, resized_width: u32) -> u64 {
    (resized_height / FACTOR) as u64 * (resized_width / FACTOR) as u64
}

/// Convenience: tokens of an original (height, width) under a budget.
pub fn tokens_for(height: u32, width: u32, min_pixels: u64, max_pixels: u64) -> Result<u64> {
    let (h, w) = smart_resize(height, width, FACTOR, min_pixels, max_pixels)?;
    Ok(image_tokens(h, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sr(h: u32, w: u32, mn: u64, mx: u64) -> Result<(u32, u32)> {
        smart_resize(h, w, 32, mn, mx)
    }

    #[test]
    fn spec_examples() {
        assert_eq!(sr(1936, 1296, 4096, 1_310_720).unwrap(), (1376, 928));
        assert_eq!(tokens_for(1936, 1296, 4096, 1_310_720).unwrap(), 1247);
    }

    #[test]
    fn round_half_even() {
        // 80 / 32 = 2.5 -> 2 (Python's round), not 3.
        assert_eq!(sr(80, 80, 4096, 1_310_720).unwrap(), (64, 64));
        // 112 / 32 = 3.5 -> 4
        assert_eq!(sr(112, 112, 4096, 1_310_720).unwrap(), (128, 128));
    }

    #[test]
    fn small_images_grow_to_min_pixels() {
        let (h, w) = sr(33, 33, 4096, 1_310_720).unwrap();
        assert!(h as u64 * w as u64 >= 4096);
        assert_eq!((h % 32, w % 32), (0, 0));
    }

    #[test]
    fn errors() {
        assert!(matches!(sr(0, 10, 4096, 1_310_720), Err(Error::InvalidInput { .. })));
        assert!(matches!(sr(10, 0, 4096, 1_310_720), Err(Error::InvalidInput { .. })));
        assert!(matches!(sr(1, 201, 4096, 1_310_720), Err(Error::InvalidInput { .. })));
        assert!(sr(1, 200, 4096, 1_310_720).is_ok());
        assert!(matches!(sr(100, 100, 8192, 4096), Err(Error::InvalidInput { ref field, .. }) if field == "min_pixels"));
        // thin image with a tiny budget: the reference resizes a side to 0
        assert!(matches!(sr(100, 10000, 4096, 4096), Err(Error::InvalidInput { ref field, .. }) if field == "max_pixels"));
    }

    #[test]
    fn exact_div_matches_f64_when_small() {
        for (a, b) in [(1u128, 3u128), (10, 7), (1_310_720, 3_000_000), (123_456_789, 1_000)] {
            assert_eq!(exact_div(a, b), a as f64 / b as f64);
        }
    }

    #[test]
    fn exact_div_large_is_correctly_rounded() {
        // 2^60 + 1 over 1: correctly rounded is 2^60 (the +1 is below half an ulp).
        assert_eq!(exact_div((1u128 << 60) + 1, 1), (1u128 << 60) as f64);
        // (2^53 + 1) * 2^7 is exactly halfway between two doubles: ties to even -> 2^60.
        assert_eq!(exact_div(((1u128 << 53) + 1) << 7, 1), (1u128 << 60) as f64);
        // a bit above the tie rounds up
        assert_eq!(exact_div((((1u128 << 53) + 1) << 7) + 1, 1), ((1u128 << 53) + 2) as f64 * 128.0);
        // non-trivial quotient: compare with a long-double-free check through two exact halves
        let a: u128 = 18_000_000_000_000_000_000 / 3 * 3;
        let q = exact_div(a, 3);
        assert_eq!(q, (a / 3) as f64);
        // 10^19 / 7: verify against a high-precision reference value
        let q = exact_div(10_000_000_000_000_000_000, 7);
        assert_eq!(q, 1_428_571_428_571_428_571.428_571_4_f64);
    }

    #[test]
    fn golden_geometry_cases() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cases/geometry.json");
        let text = std::fs::read_to_string(&path).expect("golden geometry.json (tests/golden)");
        let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert!(cases.len() > 100);
        for c in &cases {
            let g = |k: &str| c[k].as_u64().unwrap();
            let got = sr(g("height") as u32, g("width") as u32, g("min_pixels"), g("max_pixels"));
            if c.get("error").is_some() {
                assert!(got.is_err(), "{c}");
            } else {
                let (h, w) = got.unwrap_or_else(|e| panic!("{c}: {e}"));
                assert_eq!((h as u64, w as u64), (g("resized_height"), g("resized_width")), "{c}");
                assert_eq!(image_tokens(h, w), g("tokens"));
            }
        }
    }
}
