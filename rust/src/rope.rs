//! Position math of Qwen3-VL, exact to the reference (transformers `get_rope_index`,
//! `get_vision_position_ids`, the vision rotary embedding and
//! `get_vision_interpolation_indices_and_weights(mode="bilinear", align_corners=True)`).
//!
//! Three products, all pure index/float math that the ONNX graphs take as inputs (so the graphs stay
//! free of data-dependent shapes):
//! * [`mrope_position_ids`]: the 3 x L (t, h, w) position ids of the text decoder;
//! * [`vision_rotary`]: the 2-D rotary cos/sin tables of the vision tower, per patch row;
//! * [`pos_embed_interpolation`]: the 4 bilinear corners (indices + weights) into the learned
//!   position-embedding table, per patch row.
//!
//! Patch rows are always in *merge-block order* (the order of `pixel_values` rows): the 2 x 2 patches
//! of one merged token are adjacent, merged tokens in raster order.

use crate::error::{Error, Result};

/// Size of one image in merged tokens (patch grid / merge size): `rows * cols` `<|image_pad|>` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergedGrid {
    pub rows: usize,
    pub cols: usize,
}

impl MergedGrid {
    pub fn tokens(&self) -> usize {
        self.rows * self.cols
    }
}

impl From<(usize, usize)> for MergedGrid {
    fn from((rows, cols): (usize, usize)) -> Self {
        MergedGrid { rows, cols }
    }
}

/// M-RoPE position ids for one token sequence, row-major `3 x L` (t row, then h, then w).
///
/// Text tokens get t = h = w = the running position. Each image occupies `rows * cols` consecutive
/// `image_pad_id` tokens (images in the order of `grids`); a block starting at running position `p`
/// gets t = p, h = p + row, w = p + col, and the text after it continues at `p + max(rows, cols)`
/// (the reference's `max + 1` over the block). Like the reference, each image starts at the next
/// `image_pad_id` token at or after the end of the previous block, so back-to-back images work too.
///
/// Videos: with the video pad id among `pad_ids`, each frame pair's run of `<|video_pad|>` is one
/// block of grid (H/32, W/32) placed the same way (the t axis does not advance inside a video;
/// the timestamps between pairs are text). `grids` then lists image and pair blocks in prompt order.
///
/// Errors if the number of pad tokens differs from the sum of the grids' token counts, or a block
/// is interrupted by another token.
pub fn mrope_position_ids(ids: &[i64], pad_ids: &[i64], grids: &[MergedGrid]) -> Result<Vec<i64>> {
    let len = ids.len();
    let mut out = vec![0i64; 3 * len];
    let (t_row, rest) = out.split_at_mut(len);
    let (h_row, w_row) = rest.split_at_mut(len);
    write_positions(ids, pad_ids, grids, "", [t_row, h_row, w_row])?;
    Ok(out)
}

/// M-RoPE position ids of a right-padded batch, row-major `3 x rows x width`: row `b`'s first
/// `lengths[b]` tokens of `ids` (`rows x width`, row-major) get [`mrope_position_ids`] with
/// `grids[b]`; padding gets 1, as the reference fills masked positions. Errors name the row
/// (`image_grids[b]`, `input_ids[b]`, `lengths[b]`).
pub fn mrope_position_ids_batch(
    ids: &[i64],
    rows: usize,
    width: usize,
    lengths: &[usize],
    pad_ids: &[i64],
    grids: &[Vec<MergedGrid>],
) -> Result<Vec<i64>> {
    if ids.len() != rows * width {
        return Err(Error::invalid(
            "input_ids",
            format!("{} ids for a {rows} x {width} batch; pass a (rows, width) array", ids.len()),
        ));
    }
    if lengths.len() != rows || grids.len() != rows {
        return Err(Error::invalid(
            "lengths",
            format!(
                "input_ids has {rows} rows but lengths has {} and image_grids {}; pass one of each per row",
                lengths.len(),
                grids.len()
            ),
        ));
    }
    let plane = rows * width;
    let mut out = vec![1i64; 3 * plane];
    let (t_plane, rest) = out.split_at_mut(plane);
    let (h_plane, w_plane) = rest.split_at_mut(plane);
    for (row, (&n, row_grids)) in lengths.iter().zip(grids).enumerate() {
        if n > width {
            return Err(Error::invalid(
                format!("lengths[{row}]"),
                format!("length {n} exceeds the padded width {width}; pass each row's unpadded length"),
            ));
        }
        let span = row * width..row * width + n;
        let planes = [&mut t_plane[span.clone()], &mut h_plane[span.clone()], &mut w_plane[span.clone()]];
        write_positions(&ids[span], pad_ids, row_grids, &format!("[{row}]"), planes)?;
    }
    Ok(out)
}

/// Fills the t, h, w position rows of `ids` (see [`mrope_position_ids`]); `at` is appended to the
/// field names of errors (`"[3]"` for batch row 3, `""` for a single sequence).
fn write_positions(ids: &[i64], pad_ids: &[i64], grids: &[MergedGrid], at: &str, rows: [&mut [i64]; 3]) -> Result<()> {
    let [t_row, h_row, w_row] = rows;
    let len = ids.len();
    let is_pad = |t: i64| pad_ids.contains(&t);
    let pads = ids.iter().filter(|&&t| is_pad(t)).count();
    let expected: usize = grids.iter().map(MergedGrid::tokens).sum();
    if pads != expected {
        let kinds = if pad_ids.len() > 1 { "image-pad / video-pad" } else { "image-pad" };
        return Err(Error::invalid(
            format!("image_grids{at}"),
            format!(
                "the token ids hold {pads} {kinds} tokens (ids {pad_ids:?}) but the grids \
                 need {expected}; pass one (rows, cols) merged grid per image and per video frame pair, in prompt order"
            ),
        ));
    }
    let mut next_pos: i64 = 0; // running position of the next text token
    let mut i = 0usize; // index into ids
    let mut grid_iter = grids.iter();
    while i < len {
        if !is_pad(ids[i]) {
            t_row[i] = next_pos;
            h_row[i] = next_pos;
            w_row[i] = next_pos;
            next_pos += 1;
            i += 1;
            continue;
        }
        let grid = grid_iter.next().ok_or_else(|| {
            Error::invalid(format!("image_grids{at}"), "more image blocks in the token ids than image grids")
        })?;
        if grid.rows == 0 || grid.cols == 0 {
            return Err(Error::invalid(
                format!("image_grids{at}"),
                format!("an image grid of {} x {} merged tokens is empty; every image has at least 1 x 1", grid.rows, grid.cols),
            ));
        }
        let n = grid.tokens();
        let kind = ids[i];
        if i + n > len || ids[i..i + n].iter().any(|&t| t != kind) {
            return Err(Error::invalid(
                format!("input_ids{at}"),
                format!(
                    "an image of {} x {} merged tokens needs {n} consecutive image-pad tokens at index {i}; \
                     the prompt must hold each image's pad tokens contiguously",
                    grid.rows, grid.cols
                ),
            ));
        }
        let p = next_pos;
        for r in 0..grid.rows {
            for c in 0..grid.cols {
                let k = i + r * grid.cols + c;
                t_row[k] = p;
                h_row[k] = p + r as i64;
                w_row[k] = p + c as i64;
            }
        }
        next_pos = p + grid.rows.max(grid.cols) as i64;
        i += n;
    }
    Ok(())
}

fn check_patch_grid(grid_h: usize, grid_w: usize, merge: usize) -> Result<()> {
    if merge == 0 {
        return Err(Error::invalid("spatial_merge_size", "must be at least 1"));
    }
    if grid_h == 0 || grid_w == 0 || !grid_h.is_multiple_of(merge) || !grid_w.is_multiple_of(merge) {
        return Err(Error::invalid(
            "grid_thw",
            format!(
                "a patch grid of {grid_h} x {grid_w} is not a positive multiple of the merge size {merge}; \
                 pass the grid_thw that preprocess_image returned"
            ),
        ));
    }
    Ok(())
}

/// (row, col) of each patch in merge-block order, for a `grid_h x grid_w` patch grid.
pub fn vision_position_ids(grid_h: usize, grid_w: usize, merge: usize) -> Result<Vec<[usize; 2]>> {
    check_patch_grid(grid_h, grid_w, merge)?;
    let mut out = Vec::with_capacity(grid_h * grid_w);
    for br in 0..grid_h / merge {
        for bc in 0..grid_w / merge {
            for ir in 0..merge {
                for ic in 0..merge {
                    out.push([br * merge + ir, bc * merge + ic]);
                }
            }
        }
    }
    Ok(out)
}

/// Inverse frequencies of the vision rotary embedding, computed like the reference in float32:
/// `1 / theta ** (arange(0, dim, 2) / dim)` with `dim = head_dim / 2`.
fn vision_inv_freq(head_dim: usize, theta: f64) -> Vec<f32> {
    let dim = head_dim / 2;
    (0..dim)
        .step_by(2)
        .map(|k| {
            let exponent = k as f32 / dim as f32;
            // f64 pow rounded once to f32 is the correctly rounded float32 power, which is what
            // torch's float32 pow returns for these small exponents.
            let denom = (theta as f32 as f64).powf(exponent as f64) as f32;
            1.0f32 / denom
        })
        .collect()
}

/// Vision rotary tables for one image: `(cos, sin)`, each row-major `N x head_dim` with
/// N = grid_h * grid_w patch rows in merge-block order. Per row the angles are
/// `[row * inv_freq, col * inv_freq]` (head_dim / 2 values) repeated twice, as the reference's
/// `cat((emb, emb), -1)`; angles are float32 products like the reference's table.
pub fn vision_rotary(
    grid_h: usize,
    grid_w: usize,
    merge: usize,
    head_dim: usize,
    theta: f64,
) -> Result<(Vec<f32>, Vec<f32>)> {
    if head_dim == 0 || !head_dim.is_multiple_of(4) {
        return Err(Error::invalid(
            "head_dim",
            format!("the vision head_dim {head_dim} must be a positive multiple of 4 (2-D rotary halves)"),
        ));
    }
    let positions = vision_position_ids(grid_h, grid_w, merge)?;
    let inv = vision_inv_freq(head_dim, theta);
    let quarter = inv.len(); // head_dim / 4
    let mut cos = vec![0f32; positions.len() * head_dim];
    let mut sin = vec![0f32; positions.len() * head_dim];
    let mut angles = vec![0f32; head_dim / 2];
    for (n, [row, col]) in positions.iter().enumerate() {
        for k in 0..quarter {
            angles[k] = *row as f32 * inv[k];
            angles[quarter + k] = *col as f32 * inv[k];
        }
        let base = n * head_dim;
        for (j, &a) in angles.iter().enumerate() {
            // cos/sin in f64 then rounded: the correctly rounded float32 value (torch's float32
            // kernels are within an ulp of it).
            let (s, c) = (a as f64).sin_cos();
            for half in [0, head_dim / 2] {
                cos[base + half + j] = c as f32;
                sin[base + half + j] = s as f32;
            }
        }
    }
    Ok((cos, sin))
}

/// Per-axis bilinear taps (align_corners = true) for target index `index` on an axis of `size`
/// samples resampling a `side`-long table; float32 arithmetic in the reference's order.
fn axis_taps(index: usize, size: usize, side: usize) -> ([usize; 2], [f32; 2]) {
    let src = (index as f32 * (side - 1) as f32) / (size.saturating_sub(1).max(1)) as f32;
    let floor = src.floor();
    let frac = src - floor;
    let base = floor as usize;
    let mut taps = [0usize; 2];
    let mut weights = [0f32; 2];
    for (o, (tap, weight)) in taps.iter_mut().zip(weights.iter_mut()).enumerate() {
        *tap = (base + o).min(side - 1);
        let distance = (frac - o as f32).abs();
        *weight = (1.0f32 - distance).max(0.0);
    }
    (taps, weights)
}

/// Bilinear interpolation of the learned `side x side` position-embedding table onto a
/// `grid_h x grid_w` patch grid (align_corners = true): per patch row (merge-block order) the 4
/// flat table indices and weights, corners ordered (top-left, top-right, bottom-left, bottom-right).
/// Row-major `N x 4` each.
pub fn pos_embed_interpolation(
    grid_h: usize,
    grid_w: usize,
    merge: usize,
    side: usize,
) -> Result<(Vec<i64>, Vec<f32>)> {
    if side == 0 {
        return Err(Error::invalid("num_position_embeddings", "the position-embedding table is empty"));
    }
    let positions = vision_position_ids(grid_h, grid_w, merge)?;
    let rows: Vec<_> = (0..grid_h).map(|r| axis_taps(r, grid_h, side)).collect();
    let cols: Vec<_> = (0..grid_w).map(|c| axis_taps(c, grid_w, side)).collect();
    let mut indices = Vec::with_capacity(positions.len() * 4);
    let mut weights = Vec::with_capacity(positions.len() * 4);
    for [row, col] in positions {
        let (h_taps, h_w) = rows[row];
        let (w_taps, w_w) = cols[col];
        for a in 0..2 {
            for b in 0..2 {
                indices.push((h_taps[a] * side + w_taps[b]) as i64);
                weights.push(h_w[a] * w_w[b]);
            }
        }
    }
    Ok((indices, weights))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAD: i64 = 151655;

    #[test]
    fn text_only_positions_are_arange() {
        let ids = [1i64, 2, 3, 4];
        let p = mrope_position_ids(&ids, &[PAD], &[]).unwrap();
        assert_eq!(p, vec![0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn image_block_positions() {
        // text(2) + image 2 rows x 3 cols + text(2)
        let mut ids = vec![10i64, 11];
        ids.extend([PAD; 6]);
        ids.extend([12, 13]);
        let p = mrope_position_ids(&ids, &[PAD], &[MergedGrid { rows: 2, cols: 3 }]).unwrap();
        let l = ids.len();
        assert_eq!(&p[..l], &[0, 1, 2, 2, 2, 2, 2, 2, 5, 6]);
        assert_eq!(&p[l..2 * l], &[0, 1, 2, 2, 2, 3, 3, 3, 5, 6]);
        assert_eq!(&p[2 * l..], &[0, 1, 2, 3, 4, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn back_to_back_images_split_by_grid() {
        let ids = vec![PAD; 5];
        let g = [MergedGrid { rows: 1, cols: 1 }, MergedGrid { rows: 2, cols: 2 }];
        let p = mrope_position_ids(&ids, &[PAD], &g).unwrap();
        assert_eq!(&p[..5], &[0, 1, 1, 1, 1]);
        assert_eq!(&p[5..10], &[0, 1, 1, 2, 2]);
        assert_eq!(&p[10..], &[0, 1, 2, 1, 2]);
    }

    #[test]
    fn video_pairs_are_blocks_of_their_own_kind() {
        const VPAD: i64 = 8;
        // text, pair (1 x 2), text, pair (1 x 2), image (2 x 1), text
        let ids = [1, VPAD, VPAD, 2, VPAD, VPAD, PAD, PAD, 3];
        let g = [MergedGrid { rows: 1, cols: 2 }, MergedGrid { rows: 1, cols: 2 }, MergedGrid { rows: 2, cols: 1 }];
        let p = mrope_position_ids(&ids, &[PAD, VPAD], &g).unwrap();
        assert_eq!(&p[..9], &[0, 1, 1, 3, 4, 4, 6, 6, 8]);
        assert_eq!(&p[9..18], &[0, 1, 1, 3, 4, 4, 6, 7, 8]);
        assert_eq!(&p[18..], &[0, 1, 2, 3, 4, 5, 6, 6, 8]);
        // A block may not mix the two kinds.
        let mixed = [VPAD, PAD];
        assert!(mrope_position_ids(&mixed, &[PAD, VPAD], &[MergedGrid { rows: 1, cols: 2 }]).is_err());
    }

    #[test]
    fn mismatched_pad_count_is_an_error() {
        let ids = vec![1, PAD, PAD, 2];
        assert!(mrope_position_ids(&ids, &[PAD], &[MergedGrid { rows: 1, cols: 1 }]).is_err());
        assert!(mrope_position_ids(&ids, &[PAD], &[]).is_err());
        // right count but split by a text token
        let ids = vec![PAD, 1, PAD];
        assert!(mrope_position_ids(&ids, &[PAD], &[MergedGrid { rows: 1, cols: 2 }]).is_err());
    }

    #[test]
    fn batch_rows_equal_single_and_pad_with_one() {
        let a = vec![10i64, PAD, PAD, 11];
        let b = vec![PAD, 12];
        let (rows, width) = (2, 5);
        let mut ids = vec![0i64; rows * width];
        ids[..4].copy_from_slice(&a);
        ids[5..7].copy_from_slice(&b);
        let grids = vec![vec![MergedGrid { rows: 1, cols: 2 }], vec![MergedGrid { rows: 1, cols: 1 }]];
        let out = mrope_position_ids_batch(&ids, rows, width, &[4, 2], &[PAD], &grids).unwrap();
        assert_eq!(out.len(), 3 * rows * width);
        for (row, (seq, g)) in [(&a, &grids[0]), (&b, &grids[1])].into_iter().enumerate() {
            let single = mrope_position_ids(seq, &[PAD], g).unwrap();
            let n = seq.len();
            for axis in 0..3 {
                let at = axis * rows * width + row * width;
                assert_eq!(&out[at..at + n], &single[axis * n..(axis + 1) * n]);
                assert!(out[at + n..at + width].iter().all(|&p| p == 1));
            }
        }
    }

    #[test]
    fn batch_errors_name_the_row() {
        let ids = vec![1i64, PAD, 2, 3];
        let one = vec![MergedGrid { rows: 1, cols: 1 }];
        let field = |r: Result<Vec<i64>>| match r {
            Err(Error::InvalidInput { field, .. }) => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        };
        assert_eq!(field(mrope_position_ids_batch(&ids, 2, 2, &[2], &[PAD], &[one.clone(), vec![]])), "lengths");
        assert_eq!(field(mrope_position_ids_batch(&ids, 2, 2, &[2, 3], &[PAD], &[one.clone(), vec![]])), "lengths[1]");
        assert_eq!(field(mrope_position_ids_batch(&ids, 2, 2, &[2, 2], &[PAD], &[vec![], vec![]])), "image_grids[0]");
        assert_eq!(field(mrope_position_ids_batch(&ids, 3, 2, &[2, 2, 2], &[PAD], &[one.clone(), vec![], vec![]])), "input_ids");
        assert_eq!(field(mrope_position_ids(&ids, &[PAD], &[])), "image_grids");
        let split = vec![PAD, 1, PAD];
        assert_eq!(field(mrope_position_ids_batch(&split, 1, 3, &[3], &[PAD], &[vec![MergedGrid { rows: 1, cols: 2 }]])), "input_ids[0]");
    }

    #[test]
    fn vision_positions_merge_block_order() {
        let p = vision_position_ids(2, 4, 2).unwrap();
        assert_eq!(p, vec![[0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [0, 3], [1, 2], [1, 3]]);
        assert!(vision_position_ids(3, 4, 2).is_err());
    }

    #[test]
    fn rotary_layout_and_values() {
        let (cos, sin) = vision_rotary(2, 2, 2, 16, 10000.0).unwrap();
        assert_eq!(cos.len(), 4 * 16);
        // patch 3 is (row 1, col 1): angles [1 * inv_freq; 1 * inv_freq] repeated
        let inv = vision_inv_freq(16, 10000.0);
        assert_eq!(inv.len(), 4);
        assert_eq!(inv[0], 1.0);
        let row = &sin[3 * 16..4 * 16];
        assert!((row[0] - 1f32.sin()).abs() < 1e-7);
        assert_eq!(row[0], row[4]);
        assert_eq!(row[0], row[8]);
        // patch 0 is the origin
        assert!(cos[..16].iter().all(|&c| c == 1.0));
        assert!(sin[..16].iter().all(|&s| s == 0.0));
    }

    #[test]
    fn interpolation_corners_and_partition_of_unity() {
        let (idx, w) = pos_embed_interpolation(6, 8, 2, 8).unwrap();
        assert_eq!(idx.len(), 48 * 4);
        // first patch maps exactly to table entry 0
        assert_eq!(&idx[..4], &[0, 1, 8, 9]);
        assert_eq!(&w[..4], &[1.0, 0.0, 0.0, 0.0]);
        for chunk in w.chunks(4) {
            let s: f32 = chunk.iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        // the last patch (bottom-right) maps to the last table entry
        let (idx, w) = pos_embed_interpolation(2, 2, 2, 8).unwrap();
        assert_eq!(idx[12], 63);
        assert_eq!(w[12], 1.0);
    }

    #[test]
    fn single_row_axis_does_not_divide_by_zero() {
        let (taps, w) = axis_taps(0, 1, 8);
        assert_eq!(taps, [0, 1]);
        assert_eq!(w, [1.0, 0.0]);
    }
}
