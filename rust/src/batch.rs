//! The one batching helper: plan token-budgeted batches over length-sorted sequences, and
//! right-pad a batch into contiguous arrays.
//!
//! Cost model: a right-padded batch costs `rows * longest` tokens of compute and activation memory,
//! so a plan keeps `rows * longest <= token_budget` (and `rows <= max_batch_size`). Sorting by length
//! first keeps padding small. Longest first: the heaviest batch runs first, so an out-of-memory
//! surfaces at once rather than at the end of a long request.

use crate::error::{Error, Result};

/// Batches of indices into `lengths`: every index exactly once; indices sorted by length,
/// longest first, ties in input order (stable); each batch has at most `max_batch_size` rows and
/// `rows * longest <= token_budget` -- except a single sequence longer than the budget, which gets
/// a batch of its own (it cannot be split; the caller decides whether it may run).
pub fn plan_batches(lengths: &[usize], max_batch_size: usize, token_budget: usize) -> Result<Vec<Vec<usize>>> {
    if max_batch_size == 0 {
        return Err(Error::invalid("max_batch_size", "max_batch_size is 0; pass at least 1"));
    }
    if token_budget == 0 {
        return Err(Error::invalid("token_budget", "token_budget is 0; pass at least the longest sequence length"));
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a])); // stable: ties keep input order
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0usize;
    for i in order {
        // Longest first: the batch's first row is its longest (zero-length rows still count as 1).
        let width = if current.is_empty() { lengths[i].max(1) } else { longest };
        let fits = current.len() < max_batch_size && (current.len() + 1).saturating_mul(width) <= token_budget;
        if !current.is_empty() && !fits {
            batches.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            longest = lengths[i].max(1);
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    Ok(batches)
}

/// A right-padded batch: `rows x width` row-major arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct Padded {
    pub rows: usize,
    pub width: usize,
    /// Token ids, `pad_id` after each row's end.
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// `3 x rows x width` M-RoPE position ids when given, `pad_position` after each row's end.
    pub position_ids: Option<Vec<i64>>,
}

/// Right-pad `seqs` to the longest (or `min_width` if larger). `positions`, when given, holds one
/// `3 x len` row-major array per sequence (M-RoPE t/h/w rows) and is padded to `3 x rows x width`.
pub fn pad_right(
    seqs: &[&[i64]],
    pad_id: i64,
    positions: Option<&[&[i64]]>,
    pad_position: i64,
    min_width: usize,
) -> Result<Padded> {
    let rows = seqs.len();
    let width = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(min_width);
    let mut input_ids = vec![pad_id; rows * width];
    let mut attention_mask = vec![0i64; rows * width];
    for (r, s) in seqs.iter().enumerate() {
        input_ids[r * width..r * width + s.len()].copy_from_slice(s);
        attention_mask[r * width..r * width + s.len()].fill(1);
    }
    let position_ids = match positions {
        None => None,
        Some(pos) => {
            if pos.len() != rows {
                return Err(Error::invalid(
                    "positions",
                    format!("{rows} sequences but {} position arrays; pass one (3, len) array per sequence", pos.len()),
                ));
            }
            let mut out = vec![pad_position; 3 * rows * width];
            for (r, (p, s)) in pos.iter().zip(seqs).enumerate() {
                let n = s.len();
                if p.len() != 3 * n {
                    return Err(Error::invalid(
                        format!("positions[{r}]"),
                        format!("has {} values for a sequence of {n} tokens; pass a (3, {n}) array", p.len()),
                    ));
                }
                for axis in 0..3 {
                    let dst = axis * rows * width + r * width;
                    out[dst..dst + n].copy_from_slice(&p[axis * n..(axis + 1) * n]);
                }
            }
            Some(out)
        }
    };
    Ok(Padded { rows, width, input_ids, attention_mask, position_ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random lengths (xorshift), so the property runs without extra crates.
    fn lengths(seed: u64, n: usize, max: usize) -> Vec<usize> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % (max as u64 + 1)) as usize
            })
            .collect()
    }

    #[test]
    fn plan_properties() {
        for seed in 0..300u64 {
            let lens = lengths(seed, (seed % 40) as usize, 600);
            let max_batch = 1 + (seed % 9) as usize;
            let budget = 64 + (seed * 37 % 2000) as usize;
            let plan = plan_batches(&lens, max_batch, budget).unwrap();
            let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
            // longest first, stable
            for w in seen.windows(2) {
                assert!(lens[w[0]] > lens[w[1]] || (lens[w[0]] == lens[w[1]] && w[0] < w[1]));
            }
            seen.sort();
            assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>());
            for b in &plan {
                assert!(!b.is_empty() && b.len() <= max_batch);
                let longest = b.iter().map(|&i| lens[i].max(1)).max().unwrap();
                assert!(b.len() * longest <= budget || b.len() == 1, "{b:?} {lens:?} {budget}");
            }
        }
    }

    #[test]
    fn plan_examples() {
        assert_eq!(plan_batches(&[], 4, 100).unwrap(), Vec::<Vec<usize>>::new());
        assert_eq!(plan_batches(&[10, 30, 20, 30], 8, 60).unwrap(), vec![vec![1, 3], vec![2, 0]]);
        assert_eq!(plan_batches(&[500, 1], 8, 100).unwrap(), vec![vec![0], vec![1]]);
        assert_eq!(plan_batches(&[5; 5], 2, 1000).unwrap(), vec![vec![0, 1], vec![2, 3], vec![4]]);
        assert!(plan_batches(&[1], 0, 10).is_err());
        assert!(plan_batches(&[1], 1, 0).is_err());
    }

    #[test]
    fn padding_layout() {
        let a = [1i64, 2, 3];
        let b = [4i64];
        let pa = [0i64, 1, 2, 0, 1, 2, 0, 1, 2];
        let pb = [7i64, 8, 9];
        let p = pad_right(&[&a, &b], 0, Some(&[&pa, &pb]), 1, 0).unwrap();
        assert_eq!((p.rows, p.width), (2, 3));
        assert_eq!(p.input_ids, vec![1, 2, 3, 4, 0, 0]);
        assert_eq!(p.attention_mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(p.position_ids.unwrap(), vec![0, 1, 2, 7, 1, 1, 0, 1, 2, 8, 1, 1, 0, 1, 2, 9, 1, 1]);
        let q = pad_right(&[&b], 9, None, 1, 4).unwrap();
        assert_eq!(q.input_ids, vec![4, 9, 9, 9]);
        assert!(pad_right(&[&a], 0, Some(&[&pb]), 1, 0).is_err());
        assert!(pad_right(&[&a], 0, Some(&[]), 1, 0).is_err());
    }
}
