"""vlrank: serve the Qwen3 retrieval models (Qwen3-VL-Reranker, Qwen3-VL-Embedding,
Qwen3-Reranker) exactly and fast on ONNX Runtime.

The public API is re-exported here; the native core is the private ``vlrank._native``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vlrank import errors as _errors
from vlrank.errors import (
    ContextTooLongError,
    ImageDecodeError,
    ImageFetchError,
    ImageTooLargeError,
    InvalidInputError,
    MemoryBudgetError,
    ModelDirectoryError,
    RuntimeUnavailableError,
    TokenizerError,
    VlrankError,
)
from vlrank.extras import MissingExtraError
from vlrank.engine.ort_install import OnnxRuntimeInstallError
from vlrank.inputs.video import VideoDecodeError, VideoTooLongError

from vlrank.version import __version__

# Every error class vlrank raises, importable from here (README "Errors" lists them with what each means).
__all__ = ["__version__", *(name for name in _errors.__all__ if name.endswith("Error")), "MissingExtraError",
           "OnnxRuntimeInstallError", "VideoDecodeError", "VideoTooLongError"]

# inputs: request shapes -> typed parts, image / video source policy
from vlrank.inputs import FetchPolicy, ImageSource, VideoInput  # noqa: E402
from vlrank.inputs import ParsedInput, parse_documents, parse_embedding_input, parse_query  # noqa: E402

from vlrank.inputs.pdf import pdf_pages  # noqa: E402  (pypdfium2, the pdf extra, loads on first call)

__all__ += ["FetchPolicy", "ImageSource", "VideoInput", "ParsedInput", "parse_query", "parse_documents", "parse_embedding_input", "pdf_pages"]

# tasks and export: the model classes, and checkpoint -> ONNX model directory. The exporter (and onnx, most
# of what it costs to import) loads on first use of ``vlrank.export``: running an exported model needs none
# of it (tests/test_import_graph.py).
from vlrank.tasks import Embedder, Reranker  # noqa: E402

if TYPE_CHECKING:
    from vlrank.export import export


def __getattr__(name: str) -> Any:
    if name == "export":
        import vlrank.export  # binds the (callable) package as vlrank.export

        return vlrank.export
    raise AttributeError(f"module 'vlrank' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"export"})


__all__ += ["export", "Reranker", "Embedder"]

from vlrank.compare import compare  # noqa: E402  (two model directories on the same inputs)

__all__ += ["compare"]

# native preprocessing: tokens, image geometry, header-only token counts, pixels
from vlrank._native import Tokenizer  # noqa: E402

__all__ += ["Tokenizer"]

from vlrank.preprocess.images import (  # noqa: E402
    ImageTokenCount,
    PreprocessedImage,
    ResizedSize,
    count_image_tokens,
    image_tokens,
    preprocess_image,
    preprocess_images,
    smart_resize,
)

__all__ += [
    "smart_resize",
    "image_tokens",
    "count_image_tokens",
    "preprocess_image",
    "preprocess_images",
    "ResizedSize",
    "ImageTokenCount",
    "PreprocessedImage",
]
