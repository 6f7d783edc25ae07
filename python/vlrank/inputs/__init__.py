"""Inputs: request shapes -> typed parts, and every image source resolved under a fetch policy.

``parse`` turns IONOS / OpenAI query, document and embedding shapes into ``ParsedInput`` (videos, then
images, then texts; ``parts`` does the structural part); ``sources`` resolves one image source (data URL,
http(s), file, bytes, PIL, array) into an ``ImageSource``, ``video_sources`` a video file or frame list into a
``VideoInput``; ``policy`` says where media may come from; ``http`` fetches under that policy; ``video``
probes and decodes containers (PyAV).
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
from vlrank.inputs.video_sources import VideoInput

__all__ = [
    "DEFAULT_MAX_DOCUMENTS",
    "FetchPolicy",
    "ImageSource",
    "ParsedInput",
    "VideoInput",
    "holds_images",
    "parse_documents",
    "parse_embedding_input",
    "parse_query",
    "resolve_image",
]
