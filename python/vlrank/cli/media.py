"""Image files named on the command line as content parts (``--image`` / ``--document-image``).

A path is checked when the arguments are parsed (a missing file is a usage error naming the flag, exit 2)
and handed on as a ``file://`` URL of its absolute path: the library reads local files, and results that
echo a document show that URL rather than the image bytes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def image_file(value: str) -> dict[str, Any]:
    """argparse ``type=``: an existing image file -> an ``image_url`` content part."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r} is not a file; pass the path of an image file")
    return {"type": "image_url", "image_url": {"url": path.resolve().as_uri()}}


def text_part(value: str) -> dict[str, Any]:
    """argparse ``type=``: a text -> a ``text`` content part."""
    return {"type": "text", "text": value}


def image_document(value: str) -> dict[str, Any]:
    """argparse ``type=``: an existing image file -> a document of that one image."""
    return {"content": [image_file(value)]}


__all__ = ["image_file", "text_part", "image_document"]
