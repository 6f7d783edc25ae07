"""PDF pages as documents (issue 20): ``vlrank.pdf_pages`` renders real PDFs (made here with pypdfium2, and by
hand where pypdfium2 cannot: an encrypted one) into inputs that rerank and embed exactly as the same rendered
pages given as PNG files do; ``vlrank rerank --document-pdf`` / ``vlrank embed --pdf`` name file and page;
``vlrank tokens FILE.pdf`` counts each page's tokens from its size alone; every bad PDF is a typed error
naming the file and page, refused before anything is rendered."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from export_support import VL_CKPT, exported
from PIL import Image
from test_cli import assert_fails, cli, ok_json

import vlrank
from vlrank.inputs.pdf import DEFAULT_MAX_IMAGE_PIXELS, pdf_page_sizes
from vlrank.preprocess import images as pimages

# (width, height) in points, the colour of the block drawn on it, and the page's /Rotate.
PAGES = [((300, 200), (200, 30, 30), 0), ((250.5, 333.3), (20, 160, 40), 0), ((200, 280), (30, 40, 220), 90)]
DPI = 60.0


def save(doc: pdfium.PdfDocument) -> bytes:
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def make_pdf(pages: list = PAGES) -> bytes:
    """A PDF whose pages each hold one coloured block (an image object), so that pages score differently."""
    doc = pdfium.PdfDocument.new()
    for (w, h), colour, rotation in pages:
        page = doc.new_page(w, h)
        img = pdfium.PdfImage.new(doc)
        img.set_bitmap(pdfium.PdfBitmap.from_pil(Image.new("RGB", (8, 8), colour)))
        img.set_matrix(pdfium.PdfMatrix().scale(w / 2, h / 3).translate(w / 5, h / 4))
        page.insert_obj(img)
        page.gen_content()
        if rotation:
            page.set_rotation(rotation)
    return save(doc)


def rendered_pngs(data: bytes, *, dpi: float) -> list[bytes]:
    """Each page rendered by pypdfium2 directly (not through vlrank) and saved as PNG."""
    doc = pdfium.PdfDocument(data)
    out = []
    for i in range(len(doc)):
        buf = io.BytesIO()
        doc[i].render(scale=dpi / 72).to_pil().save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def hand_pdf(objects: list[bytes], trailer: bytes) -> bytes:
    """A PDF written byte by byte: the objects, a correct cross-reference table and ``trailer``'s entries."""
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return out + b"trailer\n<< /Size %d %s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer, xref)


def encrypted_pdf() -> bytes:
    """Standard security handler, RC4 40-bit: the /U entry does not match the empty user password, so the file
    opens only with a password."""
    return hand_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                     b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
                     b"<< /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32 + b"> /P -4 >>"],
                    b"/Root 1 0 R /Encrypt 4 0 R /ID [<" + b"33" * 16 + b"> <" + b"33" * 16 + b">]")


@pytest.fixture(scope="module")
def pdf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pdf") / "report.pdf"
    path.write_bytes(make_pdf())
    return path


@pytest.fixture(scope="module")
def rr_model() -> Path:
    return exported(VL_CKPT, "rerank")


@pytest.fixture(scope="module")
def embed_model() -> Path:
    return exported(VL_CKPT, "embed")


# ---- rendering ----

def test_pages_render_as_pdfium_renders_them(pdf_file: Path) -> None:
    pages = vlrank.pdf_pages(pdf_file, dpi=DPI)
    assert len(pages) == len(PAGES)
    for page, png in zip(pages, rendered_pngs(pdf_file.read_bytes(), dpi=DPI)):
        (part,) = page["content"]
        assert part["type"] == "image" and part["image"].dtype == np.uint8
        assert np.array_equal(part["image"], np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
    # ceil(points x dpi / 72), the rotated page (200 x 280 points, /Rotate 90) lying on its side.
    assert [p["content"][0]["image"].shape[:2] for p in pages] == [(167, 250), (278, 209), (167, 234)]
    assert [(s.page, s.width, s.height) for s in pdf_page_sizes(pdf_file, dpi=DPI)] == \
        [(1, 250, 167), (2, 209, 278), (3, 234, 167)]


def test_bytes_and_a_page_selection_give_the_same_pages(pdf_file: Path) -> None:
    whole = vlrank.pdf_pages(pdf_file, dpi=DPI)
    picked = vlrank.pdf_pages(pdf_file.read_bytes(), dpi=DPI, pages=[3, 1])
    assert np.array_equal(picked[0]["content"][0]["image"], whole[2]["content"][0]["image"])
    assert np.array_equal(picked[1]["content"][0]["image"], whole[0]["content"][0]["image"])


def test_the_pixel_default_is_the_librarys_decode_limit() -> None:
    assert DEFAULT_MAX_IMAGE_PIXELS == pimages.DEFAULT_MAX_IMAGE_PIXELS


# ---- as documents and embedding inputs ----

def test_rerank_pages_equals_reranking_the_rendered_images(pdf_file: Path, rr_model: Path) -> None:
    rr = vlrank.Reranker(rr_model)
    pngs = rendered_pngs(pdf_file.read_bytes(), dpi=DPI)
    got = rr.rerank("a red block", vlrank.pdf_pages(pdf_file, dpi=DPI), raw_scores=True, return_documents=False)
    want = rr.rerank("a red block", pngs, raw_scores=True, return_documents=False)
    assert got["results"] == want["results"] and got["usage"] == want["usage"]
    assert len({r["raw_score"] for r in got["results"]}) == len(PAGES)  # the pages differ, so do their scores


def test_cli_rerank_document_pdf_names_file_and_page(pdf_file: Path, rr_model: Path) -> None:
    out = ok_json(cli("rerank", "--model", rr_model, "--query", "a blue block", "--document", "a text",
                      "--document-pdf", pdf_file, "--dpi", DPI, "--raw-scores"))
    docs = ["a text", *rendered_pngs(pdf_file.read_bytes(), dpi=DPI)]
    want = vlrank.Reranker(rr_model).rerank("a blue block", docs, raw_scores=True)
    assert [(r["index"], r["raw_score"]) for r in out["results"]] == \
        [(r["index"], r["raw_score"]) for r in want["results"]]
    by_index = {r["index"]: r for r in out["results"]}
    assert "file" not in by_index[0] and by_index[0]["document"] == {"text": "a text", "multi_modal": None}
    for n in (1, 2, 3):
        assert (by_index[n]["file"], by_index[n]["page"]) == (str(pdf_file), n)
        url = f"{pdf_file.resolve().as_uri()}#page={n}"
        assert by_index[n]["document"] == {"text": None,
                                           "multi_modal": [{"type": "image_url", "image_url": {"url": url}}]}


def test_cli_embed_pdf_gives_a_vector_per_page(pdf_file: Path, embed_model: Path) -> None:
    out = ok_json(cli("embed", "--model", embed_model, "a text", "--pdf", pdf_file, "--dpi", DPI))
    want = vlrank.Embedder(embed_model).embed(["a text", *rendered_pngs(pdf_file.read_bytes(), dpi=DPI)])
    assert [d["embedding"] for d in out["data"]] == [d["embedding"] for d in want["data"]]
    assert [(d.get("file"), d.get("page")) for d in out["data"]] == [(None, None)] + [(str(pdf_file), n)
                                                                                      for n in (1, 2, 3)]
    lib = vlrank.Embedder(embed_model).embed(vlrank.pdf_pages(pdf_file, dpi=DPI))
    assert [d["embedding"] for d in lib["data"]] == [d["embedding"] for d in want["data"][1:]]


# ---- tokens from the page sizes ----

def test_cli_tokens_counts_each_page_from_its_size(pdf_file: Path) -> None:
    out = ok_json(cli("tokens", pdf_file, "--dpi", DPI, "--json"))
    shapes = [p["content"][0]["image"].shape for p in vlrank.pdf_pages(pdf_file, dpi=DPI)]
    assert [(r["page"], r["width"], r["height"], r["format"]) for r in out["images"]] == \
        [(n, w, h, "pdf") for n, (h, w, _) in enumerate(shapes, 1)]
    assert [r["tokens"] for r in out["images"]] == [vlrank.image_tokens(width=w, height=h) for h, w, _ in shapes]
    assert out["total_tokens"] == sum(r["tokens"] for r in out["images"])
    table = cli("tokens", pdf_file, "--dpi", DPI)
    assert table.returncode == 0 and f"{pdf_file}#page=3" in table.stdout.decode()


# ---- bad PDFs: typed errors naming file and page, before rendering ----

def test_encrypted_pdf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.pdf"
    path.write_bytes(encrypted_pdf())
    with pytest.raises(vlrank.InvalidInputError, match="encrypted") as exc:
        vlrank.pdf_pages(path)
    assert exc.value.field == str(path)
    assert_fails(cli("tokens", path), f"{path}: the PDF is encrypted")


def test_corrupt_and_truncated_pdfs_are_refused(tmp_path: Path) -> None:
    data = make_pdf()
    with pytest.raises(vlrank.ImageDecodeError, match="not a readable PDF") as exc:
        vlrank.pdf_pages(b"%PDF-1.7\n" + bytes(range(256)) * 4, name="scan.pdf")
    assert exc.value.field == "scan.pdf"
    with pytest.raises(vlrank.ImageDecodeError, match="truncated"):
        vlrank.pdf_pages(data[:-12])  # PDFium would repair this one: the missing %%EOF finds it
    with pytest.raises(vlrank.ImageDecodeError, match="not a readable PDF|truncated"):
        vlrank.pdf_pages(data[: len(data) // 2])
    with pytest.raises(vlrank.ImageDecodeError, match="empty"):
        vlrank.pdf_pages(b"")
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(data[:-12])
    assert_fails(cli("embed", "--model", "unused", "--pdf", cut), f"{cut}: the PDF is truncated")


def test_ten_thousand_pages_are_refused_before_rendering(tmp_path: Path) -> None:
    doc = pdfium.PdfDocument.new()
    for _ in range(10_000):
        doc.new_page(100, 100)
    path = tmp_path / "many.pdf"
    path.write_bytes(save(doc))
    with pytest.raises(vlrank.ImageTooLargeError, match="10000 pages are over max_pages = 1000") as exc:
        vlrank.pdf_pages(path)
    assert exc.value.field == str(path)
    assert len(vlrank.pdf_pages(path, pages=[1, 10_000], dpi=10)) == 2  # a selection within the cap renders
    assert_fails(cli("tokens", path), "10000 pages are over max_pages = 1000")


def test_a_page_over_the_pixel_budget_is_refused_naming_it(pdf_file: Path) -> None:
    # 200 x 280 points at 2,400 dpi: 9334 x 6667 pixels (page 3 lies on its side) = 62.2 M < 64 Mi, so page 3
    # passes while page 2 (250.5 x 333.3 points: 8350 x 11110 = 92.8 M) does not.
    with pytest.raises(vlrank.ImageTooLargeError, match=r"#page=2: a 250.5 x 333.3 point page renders to "
                                                        r"8350 x 11110 pixels at 2400 dpi") as exc:
        vlrank.pdf_pages(pdf_file, dpi=2400, pages=[3, 2])
    assert exc.value.field == f"{pdf_file}#page=2"
    with pytest.raises(vlrank.ImageTooLargeError, match="max_total_pixels"):
        vlrank.pdf_pages(pdf_file, dpi=DPI, max_total_pixels=60_000)
    assert_fails(cli("tokens", pdf_file, "--dpi", "2400"), f"{pdf_file}#page=2", "over max_image_pixels")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"pages": [0]}, "pages[0]"), ({"pages": [4]}, "pages[0]"), ({"pages": []}, "pages"), ({"pages": "1"}, "pages"),
    ({"dpi": 0}, "dpi"), ({"dpi": float("nan")}, "dpi"), ({"max_pages": 0}, "max_pages"),
])
def test_bad_arguments_name_their_field(pdf_file: Path, kwargs: dict, field: str) -> None:
    with pytest.raises(vlrank.InvalidInputError) as exc:
        vlrank.pdf_pages(pdf_file, **kwargs)
    assert exc.value.field == field


def test_missing_pypdfium2_is_the_one_line_extra_error(pdf_file: Path) -> None:
    code = ("import sys; sys.modules['pypdfium2'] = None\nimport vlrank\ntry:\n    vlrank.pdf_pages(sys.argv[1])\n"
            "except vlrank.RuntimeUnavailableError as e:\n    print(type(e).__name__, e.field, e)")
    run = subprocess.run([sys.executable, "-c", code, str(pdf_file)], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == ('MissingExtraError pdf PDF input needs the pdf extra: pip install "vlrank[pdf]" '
                                  "(module 'pypdfium2' is not installed)"), run.stderr
    cli_code = ("import sys; sys.modules['pypdfium2'] = None\nfrom vlrank.cli import main\n"
                "sys.exit(main(['tokens', sys.argv[1]]))")
    run = subprocess.run([sys.executable, "-c", cli_code, str(pdf_file)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert 'pip install "vlrank[pdf]"' in run.stderr and len(run.stderr.strip().splitlines()) == 1
