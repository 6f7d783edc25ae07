"""Every error vlrank raises, in one place.

Input faults subclass ``ValueError`` as well as ``VlrankError`` so callers that already catch
``ValueError`` keep working. Each message says what was wrong *and* what to pass instead; ``field``
names the offending argument or JSON path (e.g. ``documents[3].content[0].image_url.url``).
The native core raises these same classes (mapped in ``rust/src/py.rs::to_py_err``).
"""

from __future__ import annotations


class VlrankError(Exception):
    """Base class of every error vlrank raises on purpose."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInputError(VlrankError, ValueError):
    """The caller passed a value vlrank cannot use (the message names the field and the fix)."""


class ImageDecodeError(InvalidInputError):
    """Image bytes are corrupt, truncated, or in a format vlrank does not read."""


class ImageTooLargeError(InvalidInputError):
    """An image exceeds the decode pixel limit (decompression-bomb guard) or the byte cap."""


class ImageFetchError(InvalidInputError):
    """An image URL could not be fetched (refused by policy, timed out, too large, HTTP error)."""


class ContextTooLongError(InvalidInputError):
    """A prompt (with its image tokens) cannot fit the model's context."""


class TokenizerError(VlrankError, ValueError):
    """A tokenizer file is missing or unusable."""


class ModelDirectoryError(VlrankError, ValueError):
    """A model or checkpoint directory is missing files, or is of an unsupported architecture."""


class RuntimeUnavailableError(VlrankError, RuntimeError):
    """A requested execution provider (e.g. CUDA) or runtime component is not available."""


__all__ = [
    "VlrankError",
    "InvalidInputError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "ImageFetchError",
    "ContextTooLongError",
    "TokenizerError",
    "ModelDirectoryError",
    "RuntimeUnavailableError",
]
