//! Which frames a video keeps (qwen-vl-utils 0.0.14 `smart_nframes`, `_read_video_torchvision`, the
//! official `sample_frames` of a frame list, and `fetch_video`'s padding to an even count).

use crate::error::{Error, Result};

/// Frames are merged in temporal pairs: counts are multiples of this.
pub const FRAME_FACTOR: usize = 2;
/// qwen-vl-utils' FPS_MIN_FRAMES.
pub const MIN_FRAMES: usize = 4;
/// qwen-vl-utils' FPS_MAX_FRAMES (used when a request gives no max_frames).
pub const FPS_MAX_FRAMES: usize = 768;
/// The official reranker/embedder's fps and max_frames, and the frame-list cap of `sample_frames`.
pub const DEFAULT_FPS: f64 = 1.0;
pub const DEFAULT_MAX_FRAMES: usize = 64;
/// `sample_fps` default of a frame list: the fps written into its metadata.
pub const FRAME_LIST_FPS: f64 = 2.0;

fn floor_by(x: f64, f: usize) -> usize {
    ((x / f as f64).floor() as usize) * f
}

fn ceil_by(x: f64, f: usize) -> usize {
    ((x / f as f64).ceil() as usize) * f
}

/// `smart_nframes` for a decoded file: n = total / video_fps * fps, clamped to
/// [ceil2(min_frames), floor2(max_frames)] and to total, floored to even; below 2 is an error.
/// `max_frames = None` means qwen-vl-utils' default `min(768, total)`.
pub fn smart_nframes(total_frames: usize, video_fps: f64, fps: f64, max_frames: Option<usize>) -> Result<usize> {
    if !(video_fps.is_finite() && video_fps > 0.0) {
        return Err(Error::invalid("video", format!("the video stream reports a frame rate of {video_fps}; pass a video whose stream has a positive average frame rate")));
    }
    if !(fps.is_finite() && fps > 0.0) {
        return Err(Error::invalid("fps", format!("fps={fps} must be a positive number of sampled frames per second (default 1)")));
    }
    let min_frames = ceil_by(MIN_FRAMES as f64, FRAME_FACTOR);
    let max_frames = floor_by(max_frames.unwrap_or(FPS_MAX_FRAMES.min(total_frames)) as f64, FRAME_FACTOR);
    let n = total_frames as f64 / video_fps * fps;
    let n = n.max(min_frames as f64).min(max_frames as f64).min(total_frames as f64);
    let n = floor_by(n, FRAME_FACTOR);
    if !(FRAME_FACTOR <= n && n <= total_frames) {
        return Err(Error::invalid(
            if total_frames < FRAME_FACTOR { "video" } else { "max_frames" },
            format!(
                "{total_frames} decoded frames at {video_fps} fps with fps={fps} and max_frames={max_frames} sample {n} frames; \
                 a video needs at least 2 (pass a video of 2 or more frames and max_frames >= 2)"
            ),
        ));
    }
    Ok(n)
}

/// `torch.linspace(0, total - 1, n)` in float32 (ATen's CPU kernel: start + step * i for the first
/// half, end - step * (n - 1 - i) for the second), rounded half to even (`.round().long()`).
pub fn linspace_indices(total_frames: usize, n: usize) -> Vec<usize> {
    if n == 0 {
        return vec![];
    }
    if n == 1 {
        return vec![0];
    }
    let (start, end) = (0f32, (total_frames - 1) as f32);
    let step: f32 = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            let v = if i < half { start + step * i as f32 } else { end - step * (n - 1 - i) as f32 };
            v.round_ties_even() as usize
        })
        .collect()
}

/// Sample of a decoded file: (indices into the decoded frames, sample_fps) where sample_fps =
/// n / max(total, 1e-6) * video_fps. The indices are also the metadata `frames_indices`.
pub fn file_indices(total_frames: usize, video_fps: f64, fps: f64, max_frames: Option<usize>) -> Result<(Vec<usize>, f64)> {
    let n = smart_nframes(total_frames, video_fps, fps, max_frames)?;
    let sample_fps = n as f64 / (total_frames as f64).max(1e-6) * video_fps;
    Ok((linspace_indices(total_frames, n), sample_fps))
}

/// The official `sample_frames` of a frame list: over `max_segments` frames keep
/// `np.linspace(0, len - 1, max_segments, dtype=int)` (float64, truncated toward zero).
pub fn frame_list_indices(len: usize, max_segments: usize) -> Vec<usize> {
    if len <= max_segments {
        return (0..len).collect();
    }
    if max_segments == 1 {
        return vec![0];
    }
    // numpy: step = (stop - start) / div; y = arange(num) * step + start; y[-1] = stop.
    let div = (max_segments - 1) as f64;
    let step = (len - 1) as f64 / div;
    let mut v: Vec<usize> = (0..max_segments).map(|i| (i as f64 * step) as usize).collect();
    v[max_segments - 1] = len - 1;
    v
}

/// `fetch_video` pads an odd frame list to even by repeating its last frame: positions into the
/// sampled frames, of length ceil2(n).
pub fn pad_to_even(n: usize) -> Vec<usize> {
    let padded = n.div_ceil(FRAME_FACTOR) * FRAME_FACTOR;
    (0..padded).map(|i| i.min(n.saturating_sub(1))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nframes_rules() {
        // 3 s at 10 fps: 30 frames -> 3 at fps 1, raised to min 4.
        assert_eq!(smart_nframes(30, 10.0, 1.0, Some(64)).unwrap(), 4);
        assert_eq!(smart_nframes(225, 25.0, 1.0, Some(64)).unwrap(), 8);
        assert_eq!(smart_nframes(24, 1.0, 1.0, Some(64)).unwrap(), 24);
        // capped by max_frames, floored to even
        assert_eq!(smart_nframes(3600, 1.0, 1.0, Some(64)).unwrap(), 64);
        assert_eq!(smart_nframes(3600, 1.0, 1.0, Some(9)).unwrap(), 8);
        // clamped to the frame count then floored: 3 frames -> 2
        assert_eq!(smart_nframes(3, 1.0, 1.0, Some(64)).unwrap(), 2);
        assert!(smart_nframes(1, 1.0, 1.0, Some(64)).is_err());
        assert!(smart_nframes(0, 25.0, 1.0, Some(64)).is_err());
        assert!(smart_nframes(100, 25.0, 0.0, Some(64)).is_err());
        assert!(smart_nframes(100, 0.0, 1.0, Some(64)).is_err());
        assert!(matches!(smart_nframes(100, 25.0, 1.0, Some(1)), Err(Error::InvalidInput { ref field, .. }) if field == "max_frames"));
    }

    #[test]
    fn linspace_round_half_even() {
        assert_eq!(linspace_indices(30, 4), vec![0, 10, 19, 29]);
        assert_eq!(linspace_indices(225, 8), vec![0, 32, 64, 96, 128, 160, 192, 224]);
        // 0, 3.5, 7: 3.5 rounds to 4 (even)
        assert_eq!(linspace_indices(8, 3), vec![0, 4, 7]);
        // 0, 2.5, 5: 2.5 rounds to 2
        assert_eq!(linspace_indices(6, 3), vec![0, 2, 5]);
    }

    #[test]
    fn frame_list_subsampling() {
        assert_eq!(frame_list_indices(8, 64), (0..8).collect::<Vec<_>>());
        let v = frame_list_indices(70, 64);
        assert_eq!(v.len(), 64);
        assert_eq!((v[0], v[63]), (0, 69));
        assert_eq!(pad_to_even(5), vec![0, 1, 2, 3, 4, 4]);
        assert_eq!(pad_to_even(4), vec![0, 1, 2, 3]);
    }
}
