//! Video preprocessing of the Qwen3-VL reference (qwen-vl-utils 0.0.14 + transformers 5.24's
//! `Qwen3VLVideoProcessor`), exact to it. The golden README's Video section is the statement:
//! frame sampling (`sample`), the second resize (`resize`), the pixel budget and token counts
//! (`budget`), normalisation and the temporal-pair patch layout (`patchify`) and the `<t seconds>`
//! texts (`timestamps`). Decoding is not here: file videos are decoded by PyAV in Python, frame
//! lists reuse the image decoder.

pub mod resize;
pub mod sample;
pub mod timestamps;

#[cfg(test)]
mod golden_tests;
