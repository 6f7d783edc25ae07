//! The `<t seconds>` text before every frame pair (transformers 5.24
//! `Qwen3VLProcessor._calculate_timestamps` and `replace_video_token`).
//!
//! Per pair k: `(idx[2k] / fps + idx[2k+1] / fps) / 2` in float64 (an odd index list is first
//! padded with its last index), written with Python's `f"<{t:.1f} seconds>"`: the exact binary
//! value rounded to one decimal, exact ties to even. Rust's `{:.1}` formats the exact binary value
//! with the same tie rule (checked in the tests against Python's outputs).

use crate::error::{Error, Result};

/// One timestamp per temporal pair.
pub fn timestamps(indices: &[usize], fps: f64) -> Result<Vec<f64>> {
    if !(fps.is_finite() && fps > 0.0) {
        return Err(Error::invalid("fps", format!("video metadata fps {fps} must be positive")));
    }
    let mut idx: Vec<usize> = indices.to_vec();
    if idx.len() % 2 == 1 {
        idx.push(*idx.last().unwrap());
    }
    Ok(idx.chunks_exact(2).map(|p| (p[0] as f64 / fps + p[1] as f64 / fps) / 2.0).collect())
}

/// Python's `f"<{t:.1f} seconds>"`.
pub fn timestamp_text(t: f64) -> String {
    format!("<{t:.1} seconds>")
}

/// Tokens of a timestamp text in the Qwen tokenizer: `<`, one per digit, `.`, ` seconds`, `>`
/// (the text sits between special tokens, so it is pre-tokenized on its own).
pub fn timestamp_tokens(text: &str) -> usize {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    digits + 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_format_ties_to_even_on_the_binary_value() {
        // Outputs of Python's f"{t:.1f}".
        for (t, s) in [
            (0.25, "0.2"), (1.25, "1.2"), (2.25, "2.2"), (0.75, "0.8"), (0.35, "0.3"), (0.45, "0.5"),
            (0.5, "0.5"), (0.05, "0.1"), (0.15, "0.1"), (2.4, "2.4"), (0.64, "0.6"), (8.32, "8.3"),
            (1.6, "1.6"), (0.3333333333333333, "0.3"), (10.5, "10.5"), (9.95, "9.9"), (99.95, "100.0"),
            (0.0, "0.0"), (3599.75, "3599.8"), (12345.65, "12345.6"),
        ] {
            assert_eq!(timestamp_text(t), format!("<{s} seconds>"), "{t}");
        }
    }

    #[test]
    fn pairs_average_each_frame_time() {
        assert_eq!(timestamps(&[0, 10, 19, 29], 10.0).unwrap(), vec![0.5, 2.4]);
        assert_eq!(timestamps(&[0, 1, 2, 3, 4, 5], 2.0).unwrap(), vec![0.25, 1.25, 2.25]);
        assert_eq!(timestamps(&[0, 1, 2], 2.0).unwrap(), vec![0.25, 1.0]);
        assert!(timestamps(&[0, 1], 0.0).is_err());
    }

    #[test]
    fn token_count() {
        assert_eq!(timestamp_tokens("<0.2 seconds>"), 6);
        assert_eq!(timestamp_tokens("<22.5 seconds>"), 7);
    }
}
