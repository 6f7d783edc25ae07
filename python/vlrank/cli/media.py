"""Image, video and PDF files named on the command line as content parts (``--image`` / ``--document-image``,
``--video`` / ``--document-video``; ``--pdf`` / ``--document-pdf``: one input per page).

A path is checked when the arguments are parsed (a missing file is a usage error naming the flag, exit 2)
and handed on as a ``file://`` URL of its absolute path: the library reads local files, and results that
echo a document show that URL rather than the image bytes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def image_file(value: str) -> dict[str, Any]:
    """argparse ``type=``: an existing image file -> an ``image_url`` content part."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r} is not a file; pass the path of an image file")
    return {"type": "image_url", "image_url": {"url": path.resolve().as_uri()}}


def video_file(value: str) -> dict[str, Any]:
    """argparse ``type=``: an existing video file -> a ``video_url`` content part (sampling options are added
    by ``with_video_options`` once every flag is parsed)."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r} is not a file; pass the path of a video file (e.g. .mp4)")
    return {"type": "video_url", "video_url": {"url": path.resolve().as_uri()}}


def video_document(value: str) -> dict[str, Any]:
    """argparse ``type=``: an existing video file -> a document of that one video."""
    return {"content": [video_file(value)]}


def add_video_options(p: argparse.ArgumentParser) -> None:
    """``--fps`` / ``--max-frames`` / ``--total-pixels`` for every video named on the command line."""
    g = p.add_argument_group("video sampling (for the videos named on the command line; default: the library's)")
    g.add_argument("--fps", type=float, default=None, help="frames sampled per second of video (default 1)")
    g.add_argument("--max-frames", type=int, default=None, help="at most this many sampled frames (default 64)")
    g.add_argument("--total-pixels", type=float, default=None,
                   help="pixel budget of the whole video (frames x height x width); lowers each frame's size")


def with_video_options(items: list[Any], args: argparse.Namespace) -> list[Any]:
    """``items`` (parts, or documents of parts) with the command line's sampling options set on each video part."""
    opts = {k: v for k, v in (("fps", args.fps), ("max_frames", args.max_frames),
                              ("total_pixels", args.total_pixels)) if v is not None}
    if not opts:
        return items

    def fix(part: Any) -> Any:
        return {**part, **opts} if isinstance(part, dict) and part.get("type") == "video_url" else part

    return [{"content": [fix(x) for x in it["content"]]} if isinstance(it, dict) and "content" in it else fix(it)
            for it in items]


def text_part(value: str) -> dict[str, Any]:
    """argparse ``type=``: a text -> a ``text`` content part."""
    return {"type": "text", "text": value}


def image_document(value: str) -> dict[str, Any]:
    """argparse ``type=``: an existing image file -> a document of that one image."""
    return {"content": [image_file(value)]}


@dataclass(frozen=True)
class PdfFile:
    """A PDF named on the command line, expanded into one input per page by ``expand_pdfs``."""

    path: Path
    name: str  # as given on the command line: errors and results name the file so


def pdf_file(value: str) -> PdfFile:
    """argparse ``type=``: an existing file -> a ``PdfFile`` (read and checked when expanded)."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r} is not a file; pass the path of a PDF file")
    return PdfFile(path=path.resolve(), name=value)


def add_pdf_options(p: argparse.ArgumentParser) -> None:
    """``--dpi`` / ``--max-pages`` for every PDF named on the command line."""
    from vlrank.inputs.pdf import DEFAULT_DPI, DEFAULT_MAX_PAGES

    g = p.add_argument_group("PDF pages (for the PDFs named on the command line)")
    g.add_argument("--dpi", type=float, default=DEFAULT_DPI, help=f"render resolution, default {DEFAULT_DPI:g}")
    g.add_argument("--max-pages", type=int, default=DEFAULT_MAX_PAGES,
                   help=f"refuse a PDF of more pages than this, default {DEFAULT_MAX_PAGES}")


def expand_pdfs(items: list[Any], args: argparse.Namespace) -> tuple[list[Any], dict[int, dict[str, Any]]]:
    """``items`` with each ``PdfFile`` replaced by its rendered pages (``vlrank.pdf_pages``), and for each
    page's position ``{"file": NAME, "page": N}`` (N from 1) to name it in the results."""
    from vlrank.inputs.pdf import pdf_pages

    out: list[Any] = []
    origins: dict[int, dict[str, Any]] = {}
    for item in items:
        if not isinstance(item, PdfFile):
            out.append(item)
            continue
        for n, page in enumerate(pdf_pages(item.path, dpi=args.dpi, max_pages=args.max_pages, name=item.name), 1):
            origins[len(out)] = {"file": item.name, "page": n, "url": f"{item.path.as_uri()}#page={n}"}
            out.append(page)
    return out, origins


def name_pages(entries: list[dict[str, Any]], origins: dict[int, dict[str, Any]]) -> None:
    """Give each result entry (by its ``index``) that came from a PDF page ``file`` and ``page``; a document
    echo (rendered pixels, not JSON) becomes the page's ``file://...#page=N`` URL, as ``--document-image``
    echoes its file's URL."""
    for entry in entries:
        origin = origins.get(entry.get("index"))  # type: ignore[arg-type]
        if origin is None:
            continue
        entry["file"], entry["page"] = origin["file"], origin["page"]
        if entry.get("document") is not None:
            entry["document"] = {"text": None,
                                 "multi_modal": [{"type": "image_url", "image_url": {"url": origin["url"]}}]}


__all__ = ["PdfFile", "pdf_file", "add_pdf_options", "expand_pdfs", "name_pages", "image_file", "text_part",
           "image_document", "video_file", "video_document", "add_video_options",
           "with_video_options"]
