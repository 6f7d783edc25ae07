//! One error type for the whole core. Each variant maps to exactly one Python exception class in
//! `py/error.rs` (`From<Error> for PyErr`), so the mapping lives in one place. The core names the
//! field at the point it makes the error; the bindings pass it through unchanged.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The caller passed a value we cannot use; `field` names it, `message` says what to pass instead.
    InvalidInput { field: String, message: String },
    /// The bytes of an image could not be decoded (corrupt, truncated, unsupported format).
    ImageDecode { source: String, message: String },
    /// The image is larger than we are willing to decode (decompression-bomb guard).
    ImageTooLarge { source: String, message: String },
    /// A prompt cannot fit the model's context.
    ContextTooLong { message: String },
    /// A tokenizer file could not be loaded or used.
    Tokenizer { message: String },
    /// A file could not be read.
    Io { path: String, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidInput { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput { field, message } => write!(f, "{field}: {message}"),
            // Every message says what to pass instead, so the hint is part of the type's Display.
            Error::ImageDecode { source, message } => write!(
                f,
                "cannot decode image {source}: {message}; pass a complete PNG, JPEG, WebP, GIF, BMP or TIFF image"
            ),
            Error::ImageTooLarge { source, message } => write!(f, "image {source} is too large: {message}"),
            Error::ContextTooLong { message } => write!(f, "{message}"),
            Error::Tokenizer { message } => write!(f, "tokenizer: {message}"),
            Error::Io { path, message } => write!(f, "cannot read {path}: {message}"),
        }
    }
}

impl std::error::Error for Error {}
