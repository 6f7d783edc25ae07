"""vlrank: serve the Qwen3 retrieval models (Qwen3-VL-Reranker, Qwen3-VL-Embedding,
Qwen3-Reranker) exactly and fast on ONNX Runtime.

The public API is re-exported here; the native core is the private ``vlrank._native``.
"""

from __future__ import annotations

from vlrank.errors import (
    ContextTooLongError,
    ImageDecodeError,
    ImageFetchError,
    ImageTooLargeError,
    InvalidInputError,
    ModelDirectoryError,
    RuntimeUnavailableError,
    TokenizerError,
    VlrankError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
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
