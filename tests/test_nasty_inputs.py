"""Clear on bad input: every nasty input through the PUBLIC API (vlrank.Reranker / vlrank.Embedder on the tiny
golden checkpoints exported by vlrank.export) either works (finite scores, complete results) or raises the
exact vlrank.errors class whose ``field`` names the offending argument / JSON path and whose message says
what to pass instead. Nothing crashes, nothing is dropped, no NaN, no partial result.

Owner: QA. Regression tests for the fixes made during QA are marked "regression".
"""

from __future__ import annotations

import base64
import io
import json
import math
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from export_support import TEXT_CKPT, VL_CKPT, exported
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import vlrank
from vlrank.errors import (
    ContextTooLongError,
    ImageDecodeError,
    ImageFetchError,
    ImageTooLargeError,
    InvalidInputError,
    ModelDirectoryError,
    VlrankError,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
URL = "documents[0].content[0].image_url.url"  # the field path of the first document's image_url part
QUICK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_rr() -> vlrank.Reranker:
    return vlrank.Reranker(exported(TEXT_CKPT, "rerank"))


@pytest.fixture(scope="module")
def vl_rr() -> vlrank.Reranker:
    return vlrank.Reranker(exported(VL_CKPT, "rerank"))


@pytest.fixture(scope="module")
def vl_em() -> vlrank.Embedder:
    return vlrank.Embedder(exported(VL_CKPT, "embed"))


# ---- helpers --------------------------------------------------------------------------------------------
def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image_doc(url: str) -> dict:
    return {"content": [{"type": "image_url", "image_url": {"url": url}}]}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_raw(width: int, height: int, *, bit_depth: int, color: int, rows: list[bytes] | None = None) -> bytes:
    """A PNG written by hand (16-bit, 1-bit, or a header only when ``rows`` is None)."""
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0))
    if rows is not None:
        out += png_chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + r for r in rows)))
    return out + png_chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A real, valid, highly compressible 1-bit side x side PNG (~24 KB for 14000 x 14000)."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b""))


def jpeg_header(width: int, height: int) -> bytes:
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def gif_header(width: int, height: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b"\x2c"
            + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00\x3b")


def bmp_header(width: int, height: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)


def webp_header(width: int, height: int) -> bytes:
    vp8x = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def noise(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def gradient(h: int, w: int) -> Image.Image:
    yy, xx = np.meshgrid(np.linspace(0, 255, h), np.linspace(0, 255, w), indexing="ij")
    return Image.fromarray(np.stack([xx, yy, np.full_like(xx, 80)], -1).astype(np.uint8))


def reference_rgb(data: bytes) -> np.ndarray:
    """qwen-vl-utils ``to_rgb``: only a true RGBA image is composited on white; every other mode is
    ``convert("RGB")`` (first frame of an animation, no EXIF rotation)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    if img.mode == "RGBA":
        white = Image.new("RGB", img.size, (255, 255, 255))
        white.paste(img, mask=img.split()[3])
        return np.asarray(white)
    return np.asarray(img.convert("RGB"))


def assert_error(exc_info: pytest.ExceptionInfo, cls: type, field: str) -> None:
    """The exact class (not a parent), the field, and the field named in the message too."""
    err = exc_info.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    assert isinstance(err, ValueError)
    assert err.field == field, f"field={err.field!r}: {err}"
    assert field in str(err), str(err)


def assert_ranked(out: dict, n: int) -> None:
    results = out["results"]
    assert sorted(r["index"] for r in results) == list(range(n))
    scores = [r["relevance_score"] for r in results]
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)


# ---- query / documents of the wrong shape -----------------------------------------------------------------
BAD_RERANK = [
    # (query, documents, error class, field)
    ("q", [], InvalidInputError, "documents"),
    ("q", None, InvalidInputError, "documents"),
    ("q", "a single string", InvalidInputError, "documents"),
    ("q", {"text": "a dict"}, InvalidInputError, "documents"),
    (None, ["a"], InvalidInputError, "query"),
    (5, ["a"], InvalidInputError, "query"),
    ("q", [1], InvalidInputError, "documents[0]"),
    ("q", ["a", None], InvalidInputError, "documents[1]"),
    ("q", ["a", ["nested"]], InvalidInputError, "documents[1]"),
    ("q", ["a", 2.5], InvalidInputError, "documents[1]"),
    ("q", [{}], InvalidInputError, "documents[0]"),
    ("q", [{"foo": 1}], InvalidInputError, "documents[0]"),
    ("q", [{1: 2}], InvalidInputError, "documents[0]"),
    ("q", [{"text": None}], InvalidInputError, "documents[0]"),
    ("q", [{"text": 3}], InvalidInputError, "documents[0].text"),
    ("q", [{"content": None}], InvalidInputError, "documents[0].content"),
    ("q", [{"content": 3}], InvalidInputError, "documents[0].content"),
    ("q", [{"content": [{"type": "text"}]}], InvalidInputError, "documents[0].content[0]"),
    ("q", [{"content": [{"type": "text", "text": 1}]}], InvalidInputError, "documents[0].content[0].text"),
    ("q", [{"content": ["bare string part"]}], InvalidInputError, "documents[0].content[0]"),
    ("q", [{"content": [{"text": "no type"}]}], InvalidInputError, "documents[0].content[0].type"),
    ("q", [{"content": [{"type": "audio"}]}], InvalidInputError, "documents[0].content[0].type"),
    ("q", [{"content": [{"type": "video", "video": "x.mp4"}]}], ImageFetchError, "documents[0].content[0].video"),
    ("q", [{"content": [{"type": 5}]}], InvalidInputError, "documents[0].content[0].type"),
    ("q", [{"content": [{"type": ["text"]}]}], InvalidInputError, "documents[0].content[0].type"),
    ("q", [{"content": [{"type": "image_url"}]}], InvalidInputError, "documents[0].content[0]"),
    ("q", [{"content": [{"type": "image_url", "image_url": {}}]}], InvalidInputError, "documents[0].content[0].image_url"),
    ("q", [{"content": [{"type": "image_url", "image_url": 7}]}], InvalidInputError, "documents[0].content[0].image_url"),
    ("q", [image_doc(None)], InvalidInputError, URL),  # type: ignore[arg-type]
    ("q", [{"content": [{"type": "image", "image": None}]}], InvalidInputError, "documents[0].content[0]"),
    ("q", [{"content": [{"type": "image", "image": 3.5}]}], InvalidInputError, "documents[0].content[0].image"),
    ("q", [{"content": "x", "text": "y"}], InvalidInputError, "documents[0]"),
    ("q", ["\ud800"], InvalidInputError, "documents[0]"),
    ("\udfff tail", ["a"], InvalidInputError, "query"),
    ("q", [{"content": [{"type": "text", "text": b"\xff\xfe"}]}], InvalidInputError, "documents[0].content[0].text"),
    ("q", [{"text": b"caf\xe9"}], InvalidInputError, "documents[0].text"),
]


@pytest.mark.parametrize(("query", "documents", "cls", "field"), BAD_RERANK)
def test_bad_rerank_shapes(text_rr: vlrank.Reranker, query, documents, cls, field) -> None:
    with pytest.raises(cls) as err:
        text_rr.rerank(query, documents)
    assert_error(err, cls, field)


@pytest.mark.parametrize(("name", "value"), [
    ("top_n", 0), ("top_n", -1), ("top_n", True), ("top_n", 1.5), ("top_n", "2"),
    ("instruction", 3), ("instruction", ["x"]), ("instruction", b"bytes"),
    ("return_documents", 1), ("return_documents", None),
])
def test_bad_rerank_options(text_rr: vlrank.Reranker, name: str, value) -> None:
    with pytest.raises(InvalidInputError) as err:
        text_rr.rerank("q", ["a"], **{name: value})
    assert_error(err, InvalidInputError, name)


def test_top_n_larger_than_documents_returns_all(text_rr: vlrank.Reranker) -> None:
    out = text_rr.rerank("q", ["a", "b", "c"], top_n=100)
    assert_ranked(out, 3)


def test_empty_strings_are_valid_texts(text_rr: vlrank.Reranker, vl_rr: vlrank.Reranker,
                                       vl_em: vlrank.Embedder) -> None:
    for rr in (text_rr, vl_rr):
        out = rr.rerank("", ["", "x"])
        assert_ranked(out, 2)
        assert {r["index"]: r["document"] for r in out["results"]}[0] == {"text": "", "multi_modal": None}
    vec = vl_em.embed(["", {"content": []}])["data"]
    assert len(vec) == 2 and all(math.isfinite(v) for d in vec for v in d["embedding"])


# ---- embeddings ----------------------------------------------------------------------------------------------
BAD_EMBED = [
    # (kwargs, field)
    (dict(input=[]), "input"),
    (dict(input=None), "input"),
    (dict(input="a", messages=[{"role": "user", "content": "b"}]), "messages"),  # regression: said "input:"
    (dict(input=5), "input"),
    (dict(input={"a", "b"}), "input"),
    (dict(input={}), "input"),
    (dict(input=[1, 2, 3]), "input"),
    (dict(input=[[1, 2]]), "input"),
    (dict(input=[None]), "input[0]"),
    (dict(input=["a", 1]), "input[1]"),
    (dict(input=["a", ["b"]]), "input[1]"),
    (dict(input=[1.5]), "input[0]"),
    (dict(input=["ok", {"content": [{"type": "nope"}]}]), "input[1].content[0].type"),
    (dict(input=["\ud800"]), "input[0]"),
    (dict(messages=[]), "messages"),
    (dict(messages="hi"), "messages"),
    (dict(messages=[{"role": "system", "content": "x"}]), "messages[0].role"),
    (dict(messages=[{"role": "user"}]), "messages[0]"),
    (dict(input="a", dimensions=0), "dimensions"),
    (dict(input="a", dimensions=-1), "dimensions"),
    (dict(input="a", dimensions=True), "dimensions"),
    (dict(input="a", dimensions=2.0), "dimensions"),
    (dict(input="a", dimensions=10**6), "dimensions"),
    (dict(input="a", encoding_format="binary"), "encoding_format"),
    (dict(input="a", encoding_format=None), "encoding_format"),
    (dict(input="a", encoding_format=["float"]), "encoding_format"),
    (dict(input="a", instruction=3), "instruction"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_EMBED)
def test_bad_embed_inputs(vl_em: vlrank.Embedder, kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        vl_em.embed(**kwargs)
    assert_error(err, InvalidInputError, field)


def test_dimensions_edges(vl_em: vlrank.Embedder) -> None:
    full = vl_em.dimensions
    for k in (1, full):
        vec = np.array(vl_em.embed("a", dimensions=k)["data"][0]["embedding"])
        assert vec.shape == (k,) and abs(np.linalg.norm(vec) - 1) < 1e-5
    with pytest.raises(InvalidInputError) as err:
        vl_em.embed("a", dimensions=full + 1)
    assert_error(err, InvalidInputError, "dimensions")
    assert str(full) in str(err.value)  # says the valid range


def test_many_calls_keep_bad_ones_in_place(text_rr: vlrank.Reranker, vl_em: vlrank.Embedder) -> None:
    out = text_rr.rerank_many([{"query": "q", "documents": ["a"]}, {"query": "q", "documents": []},
                               {"query": "q", "documents": ["b"], "top_n": 0}, "not a mapping"])
    assert out[0]["results"][0]["index"] == 0
    assert [type(o) for o in out[1:]] == [InvalidInputError] * 3
    assert [o.field for o in out[1:]] == ["documents", "top_n", "calls[3]"]
    em = vl_em.embed_many([{"input": "a"}, {"input": "a", "dimensions": 0}])
    assert len(em[0]["data"]) == 1 and type(em[1]) is InvalidInputError and em[1].field == "dimensions"


# ---- images the text reranker cannot take ----------------------------------------------------------------
def test_images_to_text_reranker(text_rr: vlrank.Reranker) -> None:
    png = encode(noise(32, 32), "PNG")
    with pytest.raises(InvalidInputError) as err:
        text_rr.rerank("q", ["a", image_doc(data_url(png))])
    assert_error(err, InvalidInputError, "documents[1]")
    assert "text reranker" in str(err.value)
    with pytest.raises(InvalidInputError) as err:
        text_rr.rerank({"content": [{"type": "image", "image": png}, {"type": "text", "text": "q"}]}, ["a"])
    assert_error(err, InvalidInputError, "query")


# ---- corrupt / hostile image bytes ---------------------------------------------------------------------------
def _corrupt_images() -> list[tuple[str, bytes, type]]:
    png = encode(noise(64, 80), "PNG")
    jpg = encode(noise(64, 80, seed=1), "JPEG", quality=90)
    flipped_png = bytearray(png)
    for i in range(40, len(flipped_png), 7):
        flipped_png[i] ^= 0xFF
    flipped_jpg = bytearray(jpg)
    for i in range(200, len(flipped_jpg), 5):
        flipped_jpg[i] ^= 0x55
    return [
        ("png cut in half", png[: len(png) // 2], ImageDecodeError),
        ("png signature + 12 bytes", png[:20], ImageDecodeError),
        ("png bytes flipped", bytes(flipped_png), ImageDecodeError),
        ("jpeg cut in half", jpg[: len(jpg) // 2], ImageDecodeError),
        ("jpeg first 10 bytes", jpg[:10], ImageDecodeError),
        ("jpeg bytes flipped", bytes(flipped_jpg), ImageDecodeError),
        ("png 0x0", png_raw(0, 0, bit_depth=8, color=2), ImageDecodeError),
        ("jpeg 0x0", jpeg_header(0, 0), ImageDecodeError),
        ("gif header only", b"GIF89a", ImageDecodeError),
        ("text as png", b"hello world, not an image", ImageDecodeError),
        ("empty", b"", ImageDecodeError),
    ]


@pytest.mark.parametrize(("name", "data", "cls"), _corrupt_images(), ids=lambda v: v if isinstance(v, str) else "")
def test_corrupt_images(vl_rr: vlrank.Reranker, name: str, data: bytes, cls: type) -> None:
    """regression: native decode/probe errors used to carry field=None and name the image "images[0]"."""
    with pytest.raises(cls) as err:
        vl_rr.rerank("q", ["fine", image_doc(data_url(data))])
    assert_error(err, cls, URL.replace("documents[0]", "documents[1]"))


@pytest.mark.parametrize(("name", "data"), [
    ("png 20000x20000", png_raw(20000, 20000, bit_depth=8, color=2)),
    ("jpeg 60000x60000", jpeg_header(60000, 60000)),
    ("gif 65535x65535", gif_header(65535, 65535)),
    ("bmp 30000x30000", bmp_header(30000, 30000)),
    ("bmp 30000x-30000 (top-down)", bmp_header(30000, -30000)),
    ("webp 16000x16000", webp_header(16000, 16000)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_huge_headers_refused(vl_rr: vlrank.Reranker, vl_em: vlrank.Embedder, name: str, data: bytes) -> None:
    with pytest.raises(ImageTooLargeError) as err:
        vl_rr.rerank("q", [{"content": [{"type": "image", "image": data}]}])
    assert_error(err, ImageTooLargeError, "documents[0].content[0].image")
    assert "decode limit" in str(err.value)
    with pytest.raises(ImageTooLargeError) as err:
        vl_em.embed(["a", {"image": data}])
    assert_error(err, ImageTooLargeError, "input[1].image")


def test_decompression_bombs_use_no_memory(tmp_path: Path) -> None:
    """A header-only 20000x20000 PNG and a REAL 14000x14000 1-bit PNG (24 KB, 588 MB as RGB) are refused from
    the header: peak RSS of a fresh process grows by less than 64 MB over a normal image call."""
    model = exported(VL_CKPT, "rerank")
    bombs = tmp_path / "bombs.npz"
    np.savez(bombs, a=np.frombuffer(png_raw(20000, 20000, bit_depth=8, color=2), np.uint8),
             b=np.frombuffer(png_bomb(14000), np.uint8))
    script = textwrap.dedent(f"""
        import io, resource, numpy as np, vlrank
        from PIL import Image
        from vlrank.errors import ImageTooLargeError
        rr = vlrank.Reranker({str(model)!r})
        buf = io.BytesIO(); Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, format="PNG")
        rr.rerank("q", [{{"content": [{{"type": "image", "image": buf.getvalue()}}]}}])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for data in np.load({str(bombs)!r}).values():
            try:
                rr.rerank("q", [{{"content": [{{"type": "image", "image": data.tobytes()}}]}}])
                raise SystemExit("not refused")
            except ImageTooLargeError:
                pass
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.strip()) < 64, f"peak RSS grew by {run.stdout.strip()} MB"


# ---- data URLs and sources -------------------------------------------------------------------------------------
def _bad_urls() -> list[tuple[str, str, type]]:
    png = encode(noise(32, 32), "PNG")
    b64 = base64.b64encode(png).decode()
    return [
        ("dirty base64", "data:image/png;base64," + b64[:-4] + "!!!!", InvalidInputError),
        ("base64 with newline", "data:image/png;base64," + b64[:16] + "\n" + b64[16:], InvalidInputError),
        ("base64 with space", "data:image/png;base64," + b64[:16] + " " + b64[16:], InvalidInputError),
        ("base64 missing padding", "data:image/png;base64," + b64.rstrip("=")[:-1], InvalidInputError),
        ("urlsafe base64", "data:image/png;base64," + base64.urlsafe_b64encode(png).decode().replace("=", "") + "-_", InvalidInputError),
        ("mime text/plain", data_url(png, "text/plain"), InvalidInputError),
        ("mime svg", data_url(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"), InvalidInputError),
        ("mime missing", "data:;base64," + b64, InvalidInputError),
        ("not base64", "data:image/png," + "x" * 10, InvalidInputError),
        ("no comma", "data:image/png;base64", InvalidInputError),
        ("empty payload", "data:image/png;base64,", ImageDecodeError),
        ("png mime, text bytes", data_url(b"plain text", "image/png"), ImageDecodeError),
        ("empty url", "", InvalidInputError),
        ("blank url", "   ", InvalidInputError),
        ("ftp scheme", "ftp://example.com/a.png", InvalidInputError),
        ("s3 scheme", "s3://bucket/a.png", InvalidInputError),
        ("missing file", "/nonexistent/dir/a.png", ImageFetchError),
        ("file url missing", "file:///nonexistent/a.png", ImageFetchError),
        ("file url with host", "file://otherhost/etc/a.png", InvalidInputError),
        ("directory", "/", ImageFetchError),
        ("private http", "http://127.0.0.1:9/a.png", ImageFetchError),
    ]


@pytest.mark.parametrize(("name", "url", "cls"), _bad_urls(), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_bad_image_urls(vl_rr: vlrank.Reranker, name: str, url: str, cls: type) -> None:
    with pytest.raises(cls) as err:
        vl_rr.rerank("q", [image_doc(url)])
    assert_error(err, cls, URL)


def test_mime_of_another_image_type_is_sniffed(vl_rr: vlrank.Reranker) -> None:
    """A PNG sent as image/jpeg decodes as what its bytes are (browsers sniff too); same score as image/png."""
    png = encode(noise(48, 64), "PNG")
    a = vl_rr.rerank("q", [image_doc(data_url(png, "image/jpeg"))])["results"][0]["relevance_score"]
    b = vl_rr.rerank("q", [image_doc(data_url(png, "image/png"))])["results"][0]["relevance_score"]
    assert a == b and math.isfinite(a)


# ---- geometry edge cases ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("w", "h"), [(201, 1), (3000, 10), (10, 2500)])
def test_aspect_ratio_over_200(vl_rr: vlrank.Reranker, w: int, h: int) -> None:
    """regression: the field used to be "image", not the document's path."""
    with pytest.raises(InvalidInputError) as err:
        vl_rr.rerank("q", ["ok", image_doc(data_url(encode(Image.new("RGB", (w, h)), "PNG")))])
    assert_error(err, InvalidInputError, "documents[1].content[0].image_url.url")
    assert "200" in str(err.value)


def test_aspect_ratio_over_200_as_array(vl_em: vlrank.Embedder) -> None:
    with pytest.raises(InvalidInputError) as err:
        vl_em.embed([{"image": np.zeros((1, 300, 3), np.uint8)}])
    assert_error(err, InvalidInputError, "input[0].image")


@pytest.mark.parametrize(("w", "h"), [(1, 1), (200, 1), (1, 200), (3, 600)])
def test_tiny_and_thin_images_score(vl_rr: vlrank.Reranker, w: int, h: int) -> None:
    out = vl_rr.rerank("q", [image_doc(data_url(encode(Image.new("RGB", (w, h), (10, 200, 30)), "PNG")))])
    assert_ranked(out, 1)
    assert out["usage"]["prompt_tokens"] > 0


# ---- colour modes / containers: converted like Pillow (reference to_rgb) -------------------------------------
def _mode_cases() -> list[tuple[str, bytes]]:
    base = noise(96, 128, seed=3)
    rng = np.random.default_rng(4)
    rgba = np.asarray(base.convert("RGBA")).copy()
    rgba[..., 3] = rng.integers(0, 256, rgba.shape[:2], dtype=np.uint8)
    frames = [Image.new("RGB", (128, 96), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    rgb16 = rng.integers(0, 65536, (96, 128, 3)).astype(">u2")
    gray16 = rng.integers(0, 65536, (96, 128)).astype(">u2")
    return [
        ("L png", encode(base.convert("L"), "PNG")),
        ("P png", encode(base.convert("P"), "PNG")),
        ("P+tRNS png (alpha dropped)", encode(base.convert("P"), "PNG", transparency=0)),
        ("RGBA png (on white)", encode(Image.fromarray(rgba), "PNG")),
        ("LA png (alpha dropped)", encode(Image.fromarray(rgba).convert("LA"), "PNG")),
        ("1-bit png", encode(base.convert("1"), "PNG")),
        ("16-bit gray png", png_raw(128, 96, bit_depth=16, color=0, rows=[r.tobytes() for r in gray16])),
        ("16-bit RGB png", png_raw(128, 96, bit_depth=16, color=2, rows=[r.tobytes() for r in rgb16])),
        ("animated gif (first frame)", gif.getvalue()),
        ("CMYK jpeg", encode(gradient(96, 128).convert("CMYK"), "JPEG", quality=95)),
        ("gray jpeg", encode(gradient(96, 128).convert("L"), "JPEG", quality=95)),
        # 4:2:0 chroma (most camera JPEGs): mean |delta| was 0.0060 before the native decoder matched libjpeg's
        # fancy upsampling more closely (now ~0.0007)
        ("4:2:0 jpeg gradient", encode(gradient(96, 128), "JPEG", quality=95, subsampling=2)),
        ("bmp", encode(base, "BMP")),
        ("tiff", encode(base, "TIFF")),
        ("lossless webp", encode(base, "WEBP", lossless=True)),
    ]


@pytest.mark.parametrize(("name", "data"), _mode_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_colour_modes_like_pillow(vl_rr: vlrank.Reranker, name: str, data: bytes) -> None:
    """The encoded file and Pillow's reference RGB array give the same pixels (golden tolerance) and the same
    score through the reranker."""
    got = vlrank.preprocess_image(data)
    want = vlrank.preprocess_image(reference_rgb(data))
    assert got.grid_thw.tolist() == want.grid_thw.tolist()
    diff = np.abs(got.pixel_values - want.pixel_values)
    assert diff.mean() <= 0.004 and np.quantile(diff, 0.999) <= 3 / 127.5, (diff.mean(), diff.max())
    s_file = vl_rr.rerank("q", [{"content": [{"type": "image", "image": data}]}])["results"][0]["relevance_score"]
    s_ref = vl_rr.rerank("q", [{"content": [{"type": "image", "image": reference_rgb(data)}]}])["results"][0]["relevance_score"]
    assert math.isfinite(s_file) and abs(s_file - s_ref) <= 1e-3


def test_exif_rotation_is_ignored() -> None:
    """The reference never applies EXIF orientation: a 128x96 JPEG tagged "rotate 90" stays 128 wide."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    data = encode(gradient(96, 128), "JPEG", quality=95, subsampling=0, exif=exif)
    got = vlrank.preprocess_image(data)
    assert (got.height, got.width) == (96, 128)
    want = vlrank.preprocess_image(reference_rgb(data))
    assert got.grid_thw.tolist() == want.grid_thw.tolist() == [[1, 6, 8]]
    assert np.abs(got.pixel_values - want.pixel_values).mean() <= 0.004


# ---- text extremes ---------------------------------------------------------------------------------------------
def test_one_megabyte_document_is_truncated(vl_em: vlrank.Embedder) -> None:
    """A 1 MB document is truncated by each family's reference rule: text rerank = exactly max_length,
    VL rerank = max_length + the 5 tail tokens, embedding = the first max_length ids. Scores finite."""
    doc = "lorem ipsum dolor sit amet " * 38_900  # ~1 MB
    assert len(doc) > 1_000_000
    n = 300
    text = vlrank.Reranker(exported(TEXT_CKPT, "rerank"), max_length=n).rerank("q", [doc, "short"])
    vl = vlrank.Reranker(exported(VL_CKPT, "rerank"), max_length=n).rerank("q", [doc])
    em = vlrank.Embedder(exported(VL_CKPT, "embed"), max_length=n).embed(doc)
    assert_ranked(text, 2)
    assert_ranked(vl, 1)
    short = vlrank.Reranker(exported(TEXT_CKPT, "rerank"), max_length=n).rerank("q", ["short"])["usage"]["prompt_tokens"]
    assert text["usage"]["prompt_tokens"] == n + short
    assert vl["usage"]["prompt_tokens"] == n + 5
    assert em["usage"]["prompt_tokens"] == n
    assert abs(np.linalg.norm(em["data"][0]["embedding"]) - 1) < 1e-5


def test_ten_thousand_documents(text_rr: vlrank.Reranker) -> None:
    """10,000 short documents: all scored, sorted, usage = the sum of the per-pair tokens, and each score
    equals that document's score when reranked alone."""
    distinct = [f"document {k}: {'é' * (k % 3)} {'x' * (k % 11)}" for k in range(40)]
    docs = [distinct[i % len(distinct)] for i in range(10_000)]
    out = text_rr.rerank("which document?", docs, instruction="rank")
    assert_ranked(out, 10_000)
    alone = {d: text_rr.rerank("which document?", [d], instruction="rank") for d in distinct}
    assert out["usage"]["prompt_tokens"] == out["usage"]["total_tokens"] == sum(
        alone[d]["usage"]["prompt_tokens"] for d in docs)
    for r in out["results"][::97]:
        assert abs(r["relevance_score"] - alone[docs[r["index"]]]["results"][0]["relevance_score"]) <= 1e-5
        assert r["document"]["text"] == docs[r["index"]]


def test_more_than_the_document_limit(text_rr: vlrank.Reranker) -> None:
    with pytest.raises(InvalidInputError) as err:
        text_rr.rerank("q", ["a"] * 10_001)
    assert_error(err, InvalidInputError, "documents")
    assert "split" in str(err.value)


def test_control_and_special_token_text(text_rr: vlrank.Reranker, vl_em: vlrank.Embedder) -> None:
    weird = ["\x00", "\x00" * 100, "<|im_end|><|im_start|>assistant\n", "<|image_pad|>" * 50, "\u202e\ufeff\u200b",
             "🙂" * 200, "\r\n\t"]
    assert_ranked(text_rr.rerank("<|endoftext|>", weird), len(weird))
    data = vl_em.embed(weird)["data"]
    assert all(abs(np.linalg.norm(d["embedding"]) - 1) < 1e-5 for d in data)


# ---- model directories -----------------------------------------------------------------------------------------
def _bad_models(tmp: Path) -> list[tuple[str, Path | object, type, str]]:
    (tmp / "a_file").write_text("not a model")
    (tmp / "empty").mkdir()
    out = []
    for name, mutate in [
        ("safetensors header length huge", lambda f: f.write_bytes(struct.pack("<Q", 10**12) + f.read_bytes()[8:])),
        ("safetensors header garbage", lambda f: f.write_bytes(f.read_bytes()[:8] + b"\xff\xfe{garbage"
                                                               + f.read_bytes()[18:])),
        ("safetensors header a list", lambda f: f.write_bytes(struct.pack("<Q", 2) + b"[]")),
        ("safetensors truncated", lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])),
        ("safetensors 5 bytes", lambda f: f.write_bytes(b"\x00" * 5)),
    ]:
        ck = tmp / name.replace(" ", "_")
        shutil.copytree(TEXT_CKPT, ck)
        mutate(ck / "model.safetensors")
        out.append((name, ck, ModelDirectoryError, "model"))
    bad_cfg = tmp / "bad_config"
    shutil.copytree(TEXT_CKPT, bad_cfg)
    (bad_cfg / "config.json").write_text("{not json")
    bad_onnx = tmp / "bad_onnx"
    shutil.copytree(exported(TEXT_CKPT, "rerank"), bad_onnx)
    (bad_onnx / "decoder.onnx").write_bytes(b"garbage")
    bad_manifest = tmp / "bad_manifest"
    shutil.copytree(exported(TEXT_CKPT, "rerank"), bad_manifest)
    (bad_manifest / "vlrank.json").write_text("{")
    return out + [
        ("missing", tmp / "nope", ModelDirectoryError, "model"),
        ("a file", tmp / "a_file", ModelDirectoryError, "model"),  # regression: was NotADirectoryError
        ("empty dir", tmp / "empty", ModelDirectoryError, "model"),
        ("bad config.json", bad_cfg, ModelDirectoryError, "model"),
        ("garbage decoder.onnx", bad_onnx, ModelDirectoryError, "model"),
        ("bad vlrank.json", bad_manifest, ModelDirectoryError, "model"),
        ("None", None, InvalidInputError, "model"),
        ("int", 3, InvalidInputError, "model"),
        ("empty string", "", InvalidInputError, "model"),
    ]


def test_bad_model_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """regression: a truncated safetensors file raised numpy's ValueError (reshape), a file path
    NotADirectoryError."""
    monkeypatch.setenv("VLRANK_CACHE", str(tmp_path / "cache"))
    for name, path, cls, field in _bad_models(tmp_path):
        with pytest.raises(cls) as err:
            vlrank.Reranker(path)  # type: ignore[arg-type]
        assert type(err.value) is cls, (name, err.value)
        assert err.value.field == field, (name, err.value)
        assert not list((tmp_path / "cache").glob("*/vlrank.json")), name  # nothing half-exported is cached


def test_export_into_unwritable_path(tmp_path: Path) -> None:
    """regression: a parent that is a file raised a bare NotADirectoryError."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError) as err:
        vlrank.export(TEXT_CKPT, tmp_path / "file" / "out", task="rerank", progress=False)
    assert_error(err, InvalidInputError, "out_dir")


@pytest.mark.parametrize(("kwargs", "cls", "field"), [
    (dict(providers=3), InvalidInputError, "providers"),  # regression: was ModelDirectoryError("model")
    (dict(providers="tpu"), InvalidInputError, "providers"),
    (dict(providers=[]), InvalidInputError, "providers"),
    (dict(providers=[1]), InvalidInputError, "providers"),
    (dict(max_length=0), InvalidInputError, "max_length"),
    (dict(max_length=40_000), InvalidInputError, "max_length"),
    (dict(max_length=True), InvalidInputError, "max_length"),
    (dict(min_pixels=0), InvalidInputError, "min_pixels"),
    (dict(max_pixels=-5), InvalidInputError, "max_pixels"),
    (dict(min_pixels=10_000, max_pixels=5_000), InvalidInputError, "min_pixels"),
    (dict(batch_tokens=0), InvalidInputError, "batch_tokens"),
    (dict(fetch_policy="strict"), InvalidInputError, "fetch_policy"),
])
def test_bad_constructor_arguments(kwargs: dict, cls: type, field: str) -> None:
    with pytest.raises(cls) as err:
        vlrank.Reranker(exported(TEXT_CKPT, "rerank"), **kwargs)
    assert type(err.value) is cls and err.value.field == field, err.value
    assert "default 0" not in str(err.value)  # regression: the pre-load max_length check said "default 0"


def test_wrong_task_directory() -> None:
    with pytest.raises(ModelDirectoryError) as err:
        vlrank.Embedder(exported(TEXT_CKPT, "rerank"))
    assert err.value.field == "model" and "Reranker" in str(err.value)


def test_text_max_length_below_fixed_prompt() -> None:
    with pytest.raises(InvalidInputError) as err:
        vlrank.Reranker(exported(TEXT_CKPT, "rerank"), max_length=5).rerank("q", ["a"])
    assert_error(err, InvalidInputError, "max_length")


def test_context_too_long_names_the_document() -> None:
    big = data_url(encode(Image.new("RGB", (8, 8)), "PNG"))
    budget = 40_000 * 32 * 32  # one image alone is ~40k tokens: over the 32,768 context
    rr = vlrank.Reranker(exported(VL_CKPT, "rerank"), max_pixels=budget, min_pixels=budget)
    with pytest.raises(ContextTooLongError) as err:
        rr.rerank("q", ["ok", {"content": [{"type": "image_url", "image_url": {"url": big}}]}])
    assert_error(err, ContextTooLongError, "documents[1]")
    assert "max_pixels" in str(err.value)


# ---- properties ----------------------------------------------------------------------------------------------
_KEYS = st.sampled_from(["type", "text", "content", "image", "image_url", "url", "role", "x"])
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=8),
                  st.sampled_from(["text", "image_url", "image", "video", "data:image/png;base64,AAAA",
                                   "data:image/png;base64,", "file:///nonexistent.png", "ftp://x/y"]),
                  st.binary(max_size=8))
_JSONISH = st.recursive(_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(_KEYS, inner, max_size=3)), max_leaves=8)


@QUICK
@given(doc=_JSONISH)
def test_garbage_documents_only_raise_typed_errors(vl_rr: vlrank.Reranker, doc) -> None:
    """Arbitrary JSON-ish garbage as a document: a complete, finite result or an InvalidInputError (or
    subclass) whose field starts with documents[1]; never any other exception."""
    try:
        out = vl_rr.rerank("q", ["fine", doc])
    except InvalidInputError as exc:
        assert exc.field is not None and exc.field.startswith("documents[1]"), (exc.field, str(exc))
        assert exc.field in str(exc)
    else:
        assert_ranked(out, 2)


@QUICK
@given(inp=st.one_of(_JSONISH, st.lists(_JSONISH, max_size=3)))
def test_garbage_embedding_input_only_raises_typed_errors(vl_em: vlrank.Embedder, inp) -> None:
    try:
        out = vl_em.embed(inp)
    except InvalidInputError as exc:
        assert exc.field is not None and exc.field.startswith("input"), (exc.field, str(exc))
    else:
        assert all(math.isfinite(v) for d in out["data"] for v in d["embedding"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=60), docs=st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_arbitrary_unicode_scores_finite(text_rr: vlrank.Reranker, vl_em: vlrank.Embedder, query: str,
                                         docs: list[str]) -> None:
    out = text_rr.rerank(query, docs)
    assert_ranked(out, len(docs))
    assert [d["document"]["text"] for d in sorted(out["results"], key=lambda r: r["index"])] == docs
    data = vl_em.embed(docs)["data"]
    assert all(abs(np.linalg.norm(d["embedding"]) - 1) < 1e-5 for d in data)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), min_size=1, max_size=6))
def test_surrogates_are_refused_not_mangled(text_rr: vlrank.Reranker, text: str) -> None:
    has_surrogate = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    try:
        out = text_rr.rerank("q", ["ok", text])
    except InvalidInputError as exc:
        assert has_surrogate and exc.field == "documents[1]"
    else:
        assert not has_surrogate
        assert_ranked(out, 2)


def test_errors_are_json_serialisable_and_typed() -> None:
    """Every public error class is a VlrankError; input faults are ValueErrors (callers catch either)."""
    for cls in (InvalidInputError, ImageDecodeError, ImageTooLargeError, ImageFetchError, ContextTooLongError,
                ModelDirectoryError):
        err = cls("x: bad; pass y", field="x")
        assert isinstance(err, VlrankError) and isinstance(err, ValueError)
        assert json.loads(json.dumps({"field": err.field, "message": str(err)}))["field"] == "x"


# ---- caps and non-finite models ----------------------------------------------------------------------------------
def test_oversized_data_url_refused_before_decoding(vl_rr: vlrank.Reranker) -> None:
    """Over the 20 MiB byte cap: refused from the payload length (the base64 is not even decoded)."""
    url = "data:image/png;base64," + "A" * (28 * 1024 * 1024)
    with pytest.raises(ImageTooLargeError) as err:
        vl_rr.rerank("q", [image_doc(url)])
    assert_error(err, ImageTooLargeError, URL)
    raw = b"\x89PNG\r\n\x1a\n" + bytes(21 * 1024 * 1024)
    with pytest.raises(ImageTooLargeError) as err:
        vl_rr.rerank("q", [{"content": [{"type": "image", "image": raw}]}])
    assert_error(err, ImageTooLargeError, "documents[0].content[0].image")


def test_nan_weights_never_give_nan_scores(tmp_path: Path) -> None:
    """A checkpoint whose final norm is NaN: the facade raises a typed error instead of returning NaN."""
    ck = tmp_path / "nan-ckpt"
    shutil.copytree(TEXT_CKPT, ck)
    st_file = ck / "model.safetensors"
    raw = bytearray(st_file.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(raw[8 : 8 + n])["model.norm.weight"]
    begin, end = (8 + n + o for o in meta["data_offsets"])
    raw[begin:end] = b"\xc0\x7f" * ((end - begin) // 2)  # bf16 NaN
    st_file.write_bytes(bytes(raw))
    rr = vlrank.Reranker(vlrank.export(ck, tmp_path / "out", task="rerank", progress=False))
    with pytest.raises(VlrankError) as err:
        rr.rerank("q", ["a", "b"])
    assert "non-finite" in str(err.value) and err.value.field == "model"


def test_many_calls_container_checked(text_rr: vlrank.Reranker, vl_em: vlrank.Embedder) -> None:
    """regression: rerank_many(5) raised TypeError; a string ran one bad call per character."""
    for bad in (5, "ab", {"query": "q"}, None):
        with pytest.raises(InvalidInputError) as err:
            text_rr.rerank_many(bad)  # type: ignore[arg-type]
        assert_error(err, InvalidInputError, "calls")
        with pytest.raises(InvalidInputError) as err:
            vl_em.embed_many(bad)  # type: ignore[arg-type]
        assert_error(err, InvalidInputError, "calls")
    assert text_rr.rerank_many([]) == [] and vl_em.embed_many(()) == []


def test_numpy_integers_are_integers(text_rr: vlrank.Reranker, vl_em: vlrank.Embedder) -> None:
    """regression: top_n=np.int64(1) / dimensions=np.int32(4) were refused with "pass an integer"."""
    assert len(text_rr.rerank("q", ["a", "b"], top_n=np.int64(1))["results"]) == 1
    assert len(vl_em.embed("a", dimensions=np.int32(4))["data"][0]["embedding"]) == 4
    with pytest.raises(InvalidInputError) as err:
        text_rr.rerank("q", ["a"], top_n=np.int64(0))
    assert_error(err, InvalidInputError, "top_n")
    with pytest.raises(InvalidInputError) as err:
        vl_em.embed("a", dimensions=np.bool_(True))
    assert_error(err, InvalidInputError, "dimensions")


def test_embedding_max_length_that_cuts_an_image() -> None:
    """regression: an embedding max_length cutting an image's tokens was reported as over the 32,768 context,
    advising a max_pixels of 33 million."""
    png = encode(noise(64, 96), "PNG")
    em = vlrank.Embedder(exported(VL_CKPT, "embed"), max_length=20)
    with pytest.raises(ContextTooLongError) as err:
        em.embed(["fine", {"content": [{"type": "image", "image": png}]}])
    assert_error(err, ContextTooLongError, "input[1]")
    assert "max_length=20" in str(err.value) and "32768" not in str(err.value)
    needed = int(str(err.value).split("pass max_length=")[1].split()[0])
    ok = vlrank.Embedder(exported(VL_CKPT, "embed"), max_length=needed).embed([{"content": [{"type": "image", "image": png}]}])
    assert ok["usage"]["prompt_tokens"] == needed  # the advice is exact: that max_length fits the whole prompt
    with pytest.raises(ContextTooLongError) as err:
        vlrank.Embedder(exported(VL_CKPT, "embed"), max_length=3).embed([{"content": [{"type": "image", "image": png}]}])
    assert_error(err, ContextTooLongError, "input[0]")
    assert "larger max_length" in str(err.value)


def _seed_images() -> list[bytes]:
    base = noise(40, 56, seed=9)
    return [encode(base, "PNG"), encode(base, "JPEG"), encode(base, "JPEG", progressive=True),
            encode(base.convert("P"), "GIF"), encode(base, "BMP"), encode(base, "WEBP"),
            encode(base, "WEBP", lossless=True), encode(base, "TIFF"), encode(base, "TIFF", compression="tiff_lzw")]


_SEEDS = _seed_images()


@st.composite
def _mutated_image(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    how = draw(st.sampled_from(["flip", "truncate", "field"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif how == "truncate":
        data = data[: draw(st.integers(8, len(data) - 1))]
    else:  # overwrite a header field with an extreme value
        i = draw(st.integers(8, min(64, len(data) - 4)))
        data[i : i + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"]))
    return bytes(data)


@settings(max_examples=150, deadline=None)
@given(data=_mutated_image())
def test_fuzzed_image_bytes_never_crash(data: bytes) -> None:
    """Flipped / truncated / extreme-header images: a finite result or a vlrank error, never a native panic
    or another exception (90 s of this found none: ~490k cases)."""
    for call in (vlrank.count_image_tokens, vlrank.preprocess_image):
        try:
            out = call(data)
        except (ImageDecodeError, ImageTooLargeError, InvalidInputError):
            continue
        if hasattr(out, "pixel_values"):
            assert np.isfinite(out.pixel_values).all() and out.pixel_values.shape[0] == 4 * out.num_tokens


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_mutated_image())
def test_fuzzed_image_documents(vl_rr: vlrank.Reranker, data: bytes) -> None:
    try:
        out = vl_rr.rerank("q", ["text", {"content": [{"type": "image", "image": data}]}])
    except InvalidInputError as exc:  # decode / too large / aspect: all name the image
        assert exc.field == "documents[1].content[0].image", (exc.field, str(exc))
    else:
        assert_ranked(out, 2)


# ---- decompression bombs: budgets from headers, no abort on allocation failure ----


def test_webp_and_jpeg_bombs_refused_from_headers():
    from images_support import jpeg_size_bomb, webp_lossless_bomb  # noqa: PLC0415

    # A lossless 13000^2 WebP needs ~1.3 GiB to decode: over the call's decoded-bytes budget.
    with pytest.raises(ImageTooLargeError) as err:
        vlrank.preprocess_images([webp_lossless_bomb()])
    assert "max_decode_bytes_in_flight" in str(err.value)
    # A ~700-byte JPEG claiming 12000^2 cannot hold its scan data: refused before any pixel
    # buffer exists (Pillow calls it truncated too).
    bomb = jpeg_size_bomb()
    assert len(bomb) < 1000
    with pytest.raises(ImageDecodeError) as err:
        vlrank.preprocess_images([bomb])
    assert "truncated" in str(err.value)


def test_gif_screen_bomb_counts_its_logical_screen():
    from images_support import gif_screen_bomb  # noqa: PLC0415

    bomb = gif_screen_bomb()
    assert len(bomb) < 64  # a few dozen bytes
    # The logical screen (what Pillow allocates and resizes) is what is budgeted: a call budget
    # below it refuses the image with the parameter named; a batch of them is refused per image.
    with pytest.raises(ImageTooLargeError) as err:
        vlrank.preprocess_images([bomb] * 8, max_decode_bytes_in_flight=256 << 20)
    assert "max_decode_bytes_in_flight" in str(err.value)
    small = vlrank.preprocess_images([gif_screen_bomb(64, 40)])[0]
    assert (small.height, small.width) == (40, 64)


def test_bombs_under_an_address_space_cap_give_typed_errors_and_the_process_survives(tmp_path):
    # A 2 GiB address-space cap (a container limit): every bomb gets a typed vlrank error or a
    # correct result, never an abort, and the same process then preprocesses a normal image.
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        import numpy as np
        import vlrank
        from vlrank.errors import VlrankError
        from images_support import gif_screen_bomb, jpeg_size_bomb, webp_lossless_bomb
        for batch in ([gif_screen_bomb()] * 3, [webp_lossless_bomb()] * 4, [jpeg_size_bomb()] * 4,
                      [gif_screen_bomb(), webp_lossless_bomb(), jpeg_size_bomb()]):
            try:
                out = vlrank.preprocess_images(batch)
                print("ok", [o.pixel_values.shape for o in out])
            except VlrankError as e:
                print("typed", type(e).__name__)
        img = np.full((120, 90, 3), 77, np.uint8)
        p = vlrank.preprocess_images([img])[0]
        assert p.pixel_values.shape[1] == 1536
        print("SURVIVED")
        """
    )
    tests_dir = str(Path(__file__).parent)
    proc = subprocess.run(
        ["prlimit", f"--as={2 << 30}", sys.executable, "-c", script, tests_dir],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    lines = proc.stdout.split()
    assert "SURVIVED" in lines, proc.stdout
    assert "memory allocation" not in proc.stderr
    assert proc.stdout.count("typed") + proc.stdout.count("ok") == 4, proc.stdout
