"""PDF pages as images: ``pdf_pages(src)`` renders each page to a uint8 RGB array and returns it as an input
(``{"content": [{"type": "image", "image": array}]}``) that is usable as a rerank document and as an
embedding input as it is; ``page["content"][0]`` is the image part, to combine with text parts.

Bounded before anything is rendered: the document's page count against ``max_pages``, every page's size at
``dpi`` (from the page dictionary, which costs no rendering) against ``max_image_pixels`` (the library's
decode limit for one source image) and the pages' sum against ``max_total_pixels`` (what the returned arrays
hold together, 3 bytes a pixel). ``pdf_page_sizes`` is that plan alone: ``vlrank tokens FILE.pdf`` counts
tokens from it without rendering.

Errors (vlrank.errors classes) name the file and page: ``field`` is ``NAME`` or ``NAME#page=N`` (N from 1, the
PDF open-parameters fragment). Encrypted -> InvalidInputError; corrupt or truncated -> ImageDecodeError; too
many pages or pixels -> ImageTooLargeError. pypdfium2 is the ``pdf`` extra (MissingExtraError without it).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlrank.errors import ImageDecodeError, ImageTooLargeError, InvalidInputError
from vlrank.extras import MissingExtraError

#: 144 dpi puts an A4 / Letter page at about 2 megapixels: above the model's default ``max_pixels`` (1,280
#: tokens), so the resize only ever shrinks a page and small print stays legible.
DEFAULT_DPI = 144.0
DEFAULT_MAX_PAGES = 1_000
#: What the returned arrays may hold together: 512 Mi pixels = 1.5 GiB of RGB.
DEFAULT_MAX_TOTAL_PIXELS = 512 * 1024 * 1024
#: A PDF ends with ``%%EOF``; readers (Acrobat's rule) look for it in the last 1,024 bytes. PDFium repairs a
#: file cut short by rebuilding its cross-reference table, so a truncated file is found by this marker.
_EOF_WINDOW = 1024
#: PDFium is not thread-safe: one document is open at a time in this process.
_PDFIUM_LOCK = threading.Lock()
_FPDF_ERR_PASSWORD = 4
#: The library's decode limit for one source image (``vlrank.preprocess.images.DEFAULT_MAX_IMAGE_PIXELS``,
#: restated because inputs does not import preprocess; tests/test_pdf.py holds them equal).
DEFAULT_MAX_IMAGE_PIXELS = 64 * 1024 * 1024


@dataclass(frozen=True)
class PdfPageSize:
    """One page as it renders at the chosen dpi: ``page`` counts from 1; ``width`` / ``height`` in pixels."""

    page: int
    width: int
    height: int


def _pdfium() -> Any:
    try:
        import pypdfium2  # noqa: PLC0415 (lazy: the pdf extra is optional)
    except ImportError as exc:
        raise MissingExtraError('PDF input needs the pdf extra: pip install "vlrank[pdf]" (module \'pypdfium2\' '
                                "is not installed)", field="pdf") from exc
    return pypdfium2


def _source(src: Any, *, name: str | None) -> tuple[Any, str, bytes]:
    """(what PDFium opens, the name errors use, the file's last bytes)."""
    if isinstance(src, bytes | bytearray | memoryview):
        data = bytes(src)
        if not data:
            raise ImageDecodeError(f"{name or 'pdf'}: the PDF is empty; pass the bytes of a PDF file",
                                   field=name or "pdf")
        return data, name or "pdf", data[-_EOF_WINDOW:]
    if isinstance(src, str | os.PathLike):
        path = Path(src).expanduser()
        label = name or str(src)
        if not path.is_file():
            raise InvalidInputError(f"{label}: no such file; pass the path of a PDF file", field=label)
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - _EOF_WINDOW))
            tail = f.read()
        return str(path), label, tail
    raise InvalidInputError(f"pdf: cannot use a {type(src).__name__} as a PDF; pass a path or the file's bytes",
                            field="pdf")


def _open(pdfium: Any, opened: Any, *, name: str, tail: bytes) -> Any:
    try:
        doc = pdfium.PdfDocument(opened)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == _FPDF_ERR_PASSWORD:
            raise InvalidInputError(f"{name}: the PDF is encrypted with a password; pass a decrypted copy (e.g. "
                                    "qpdf --decrypt)", field=name) from exc
        raise ImageDecodeError(f"{name}: not a readable PDF ({exc}); pass an intact PDF file", field=name) from exc
    if b"%%EOF" not in tail:
        doc.close()
        raise ImageDecodeError(f"{name}: the PDF is truncated (no %%EOF marker at its end); pass the whole file",
                               field=name)
    return doc


def _selection(pages: Sequence[int] | None, *, count: int, name: str) -> list[int]:
    if pages is None:
        return list(range(1, count + 1))
    if isinstance(pages, str | bytes) or not isinstance(pages, Sequence):
        raise InvalidInputError(f"pages: expected a list of page numbers (from 1), got {type(pages).__name__}",
                                field="pages")
    out = []
    for i, n in enumerate(pages):
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= count:
            raise InvalidInputError(f"pages[{i}]: {n!r} is not a page of {name} (it has {count}); pass page numbers "
                                    f"from 1 to {count}", field=f"pages[{i}]")
        out.append(int(n))
    if not out:
        raise InvalidInputError("pages: the list is empty; pass at least one page number, or None for every page",
                                field="pages")
    return out


def _check_positive(value: Any, *, field: str, kind: type = int) -> Any:
    ok = not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)
    if not ok or not math.isfinite(value) or value <= 0 or (kind is int and int(value) != value):
        raise InvalidInputError(f"{field} must be a positive {kind.__name__}, got {value!r}", field=field)
    return kind(value)


def _plan(doc: Any, *, name: str, dpi: float, pages: Sequence[int] | None, max_pages: int, max_image_pixels: int,
          max_total_pixels: int) -> list[PdfPageSize]:
    count = len(doc)
    if count == 0:
        raise ImageDecodeError(f"{name}: the PDF has no pages; pass a PDF with at least one page", field=name)
    chosen = _selection(pages, count=count, name=name)
    if len(chosen) > max_pages:
        raise ImageTooLargeError(f"{name}: {len(chosen)} pages are over max_pages = {max_pages}; pass pages=[...] "
                                 f"to pick at most {max_pages}, or raise max_pages", field=name)
    scale, out, total = dpi / 72.0, [], 0
    for n in chosen:
        field = f"{name}#page={n}"
        try:
            w_pt, h_pt = doc.get_page_size(n - 1)
        except Exception as exc:  # PdfiumError: the page object is missing or broken
            raise ImageDecodeError(f"{field}: the page cannot be read ({exc}); pass an intact PDF",
                                   field=field) from exc
        # The size pypdfium2's render() gives the bitmap: ceil(points x dpi / 72), rotation applied.
        width, height = math.ceil(w_pt * scale), math.ceil(h_pt * scale)
        if width < 1 or height < 1:
            raise ImageDecodeError(f"{field}: the page is empty ({w_pt:g} x {h_pt:g} points); pass pages with an "
                                   "area", field=field)
        if width * height > max_image_pixels:
            fit = math.floor(dpi * math.sqrt(max_image_pixels / (width * height)))
            raise ImageTooLargeError(
                f"{field}: a {w_pt:g} x {h_pt:g} point page renders to {width} x {height} pixels at {dpi:g} dpi, "
                f"over max_image_pixels = {max_image_pixels}; pass dpi={fit} or less, or raise max_image_pixels",
                field=field)
        total += width * height
        if total > max_total_pixels:
            raise ImageTooLargeError(
                f"{field}: the pages up to here render to {total} pixels at {dpi:g} dpi, over max_total_pixels = "
                f"{max_total_pixels}; pass fewer pages=[...], a lower dpi, or raise max_total_pixels", field=field)
        out.append(PdfPageSize(page=n, width=width, height=height))
    return out


def _checked(dpi: Any, max_pages: Any, max_image_pixels: Any, max_total_pixels: Any) -> tuple[float, int, int, int]:
    return (_check_positive(dpi, field="dpi", kind=float), _check_positive(max_pages, field="max_pages"),
            _check_positive(max_image_pixels, field="max_image_pixels"), _check_positive(max_total_pixels, field="max_total_pixels"))


@contextlib.contextmanager
def _planned(src: Any, *, dpi: Any, pages: Sequence[int] | None, max_pages: Any, max_image_pixels: Any,
             max_total_pixels: Any, name: str | None) -> Iterator[tuple[Any, str, float, list[PdfPageSize]]]:
    """(open document, its label, dpi, the checked page plan), under the PDFium lock; closed on exit."""
    dpi, max_pages, max_image_pixels, max_total_pixels = _checked(dpi, max_pages, max_image_pixels, max_total_pixels)
    pdfium = _pdfium()
    opened, label, tail = _source(src, name=name)
    with _PDFIUM_LOCK:
        doc = _open(pdfium, opened, name=label, tail=tail)
        try:
            yield doc, label, dpi, _plan(doc, name=label, dpi=dpi, pages=pages, max_pages=max_pages,
                                         max_image_pixels=max_image_pixels, max_total_pixels=max_total_pixels)
        finally:
            doc.close()


def pdf_page_sizes(src: str | os.PathLike[str] | bytes, *, dpi: float = DEFAULT_DPI, pages: Sequence[int] | None = None,
                   max_pages: int = DEFAULT_MAX_PAGES, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                   max_total_pixels: int = DEFAULT_MAX_TOTAL_PIXELS, name: str | None = None) -> list[PdfPageSize]:
    """Each chosen page's pixel size at ``dpi`` (``pages``: numbers from 1; None = all), checked against the
    limits; nothing is rendered. ``name`` labels errors (default: the path, or ``pdf`` for bytes)."""
    with _planned(src, dpi=dpi, pages=pages, max_pages=max_pages, max_image_pixels=max_image_pixels,
                  max_total_pixels=max_total_pixels, name=name) as (_, _, _, plan):
        return plan


def pdf_pages(src: str | os.PathLike[str] | bytes, *, dpi: float = DEFAULT_DPI, pages: Sequence[int] | None = None,
              max_pages: int = DEFAULT_MAX_PAGES, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
              max_total_pixels: int = DEFAULT_MAX_TOTAL_PIXELS, name: str | None = None) -> list[dict[str, Any]]:
    """Render the PDF ``src`` (a path or the file's bytes): one input per chosen page, in order, each
    ``{"content": [{"type": "image", "image": <uint8 RGB array>}]}``, rendered at ``dpi`` on white. Every
    limit is checked for every page before the first is rendered (see the module docstring)."""
    with _planned(src, dpi=dpi, pages=pages, max_pages=max_pages, max_image_pixels=max_image_pixels,
                  max_total_pixels=max_total_pixels, name=name) as (doc, label, dpi, plan):
        return [_render(doc, size, dpi=dpi, name=label) for size in plan]


def _render(doc: Any, size: PdfPageSize, *, dpi: float, name: str) -> dict[str, Any]:
    field = f"{name}#page={size.page}"
    try:
        page = doc.get_page(size.page - 1)
        try:
            bitmap = page.render(scale=dpi / 72.0, rev_byteorder=True)  # RGB, filled white first
            pixels = np.array(bitmap.to_numpy(), dtype=np.uint8, copy=True)  # own the pixels: PDFium frees its own
        finally:
            page.close()
    except Exception as exc:  # PdfiumError / ValueError from a broken page
        raise ImageDecodeError(f"{field}: the page cannot be rendered ({exc}); pass an intact PDF", field=field) from exc
    if pixels.shape[:2] != (size.height, size.width):  # the plan is what the limits were checked on
        raise ImageDecodeError(f"{field}: rendered {pixels.shape[1]} x {pixels.shape[0]} pixels, not the planned "
                               f"{size.width} x {size.height}", field=field)
    return {"content": [{"type": "image", "image": pixels}]}


__all__ = ["DEFAULT_DPI", "DEFAULT_MAX_IMAGE_PIXELS", "DEFAULT_MAX_PAGES", "DEFAULT_MAX_TOTAL_PIXELS", "PdfPageSize", "pdf_page_sizes", "pdf_pages"]
