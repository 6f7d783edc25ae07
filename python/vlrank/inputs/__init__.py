"""Inputs: request shapes -> typed parts, and every image source resolved under a fetch policy.

``parse`` turns IONOS / OpenAI query, document and embedding shapes into ``ParsedInput`` (images first,
then texts); ``sources`` resolves one image source (data URL, http(s), file, bytes, PIL, array) into an
``ImageSource``; ``policy`` says where images may come from; ``http`` fetches under that policy.
"""

from __future__ import annotations

from vlrank.inputs.parse import (
    DEFAULT_MAX_DOCUMENTS,
    ParsedInput,
    holds_images,
    parse_documents,
    parse_embedding_input,
    parse_query,
)
from vlrank.inputs.policy import FetchPolicy
from vlrank.inputs.sources import ImageSource, resolve_image

__all__ = [
    "DEFAULT_MAX_DOCUMENTS",
    "FetchPolicy",
    "ImageSource",
    "ParsedInput",
    "holds_images",
    "parse_documents",
    "parse_embedding_input",
    "parse_query",
    "resolve_image",
]
