//! vlrank's native core: the model-facing front half of the pipeline (inputs -> pixel values, token
//! ids, position ids), exact to the Qwen3 reference. Every module but `py` is pure Rust with its own
//! `#[cfg(test)]` tests; `py` is the thin PyO3 layer (one file per concept), compiled only with the
//! `python` feature.

pub mod error;
pub mod geometry;
pub mod probe;
pub mod image;
pub mod tokenize;
pub mod prompt;
pub mod rope;
pub mod batch;
pub mod video;

#[cfg(feature = "python")]
mod py;
