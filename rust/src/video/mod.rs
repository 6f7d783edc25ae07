//! Video preprocessing of the Qwen3-VL reference (qwen-vl-utils 0.0.14 + transformers 5.24's
//! `Qwen3VLVideoProcessor`), exact to it. The golden README's Video section is the statement:
//! frame sampling (`sample`), the second resize (`resize`), the pixel budget and token counts
//! (`budget`), normalisation and the temporal-pair patch layout (`patchify`) and the `<t seconds>`
//! texts (`timestamps`). Decoding is not here: file videos are decoded by PyAV in Python, frame
//! lists reuse the image decoder.

pub mod resize;
pub mod sample;
pub mod timestamps;
pub mod budget;
pub mod patchify;
pub mod frames;

#[cfg(test)]
mod golden_tests;

/// Token ids of `<|vision_start|>`, `<|vision_end|>` and `<|video_pad|>` in the Qwen vocabulary.
pub const VISION_START: u32 = 151652;
pub const VISION_END: u32 = 151653;
pub const VIDEO_PAD: u32 = 151656;

/// The token ids of one video in the transformers 5.24 layout: `<|vision_start|>`, then per pair
/// the timestamp text's ids, `<|vision_start|>`, `tokens_per_group` x `<|video_pad|>`,
/// `<|vision_end|>`, then `<|vision_end|>`. `encode` tokenizes a plain text without special tokens.
pub fn video_token_ids(plan: &budget::VideoPlan, mut encode: impl FnMut(&str) -> Vec<u32>) -> Vec<u32> {
    let mut ids = Vec::with_capacity(plan.num_tokens() as usize);
    ids.push(VISION_START);
    for t in &plan.timestamp_text {
        ids.extend(encode(t));
        ids.push(VISION_START);
        ids.extend(std::iter::repeat_n(VIDEO_PAD, plan.tokens_per_group as usize));
        ids.push(VISION_END);
    }
    ids.push(VISION_END);
    ids
}
