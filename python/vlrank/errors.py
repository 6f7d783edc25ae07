"""Every error vlrank raises, in one place.

Input faults subclass ``ValueError`` as well as ``VlrankError`` so callers that already catch
``ValueError`` keep working. Each message says what was wrong *and* what to pass instead; ``field``
names the offending argument or JSON path (e.g. ``documents[3].content[0].image_url.url``).
The native core raises these same classes (mapped in the binding layer); ``named_field`` re-labels an error with the caller's field path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


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


class MemoryBudgetError(ContextTooLongError):
    """A pair (with its images) needs more working memory than the model's ``memory_budget``; refused
    before any work (the message says the shorter ``max_length`` that fits, or to raise the budget)."""


class TokenizerError(VlrankError, ValueError):
    """A tokenizer file is missing or unusable."""


class ModelDirectoryError(VlrankError, ValueError):
    """A model or checkpoint directory is missing files, or is of an unsupported architecture."""


class RuntimeUnavailableError(VlrankError, RuntimeError):
    """A requested execution provider (e.g. CUDA) or runtime component is not available."""


@contextlib.contextmanager
def named_field(field: str) -> Iterator[None]:
    """Re-raise a ``VlrankError`` so that it names ``field`` (the caller's path, e.g.
    ``documents[2].content[0].image_url.url``) in ``.field`` and at the start of its message, keeping
    its class. Native errors name what they saw (``image``, ``images[0]``); the caller knows the path."""
    try:
        yield
    except VlrankError as exc:
        if exc.field == field:
            raise
        message = str(exc)
        if exc.field and message.startswith(f"{exc.field}: "):  # e.g. "image: aspect ratio ..."
            message = message[len(exc.field) + 2 :]
        message = message if field in message else f"{field}: {message}"
        raise type(exc)(message, field=field) from exc


__all__ = [
    "named_field",
    "VlrankError",
    "InvalidInputError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "ImageFetchError",
    "ContextTooLongError",
    "MemoryBudgetError",
    "TokenizerError",
    "ModelDirectoryError",
    "RuntimeUnavailableError",
]
