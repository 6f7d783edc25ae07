"""`vlrank embed --image/--text` and `vlrank rerank --document-image` with real image files (the samples
shipped in the package): each prints exactly what the library returns for the same content parts; a
missing file is a usage error (exit 2) naming the flag; `--raw-scores` carries the logit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from export_support import TEXT_CKPT, VL_CKPT, exported
from test_cli import assert_fails, cli, ok_json

SAMPLES = Path(__file__).resolve().parents[1] / "python" / "vlrank" / "samples"
PHOTO, CHART, RECEIPT = SAMPLES / "landscape_640x427.jpg", SAMPLES / "chart_800x500.webp", SAMPLES / "receipt_300x900.gif"


def image_part(path: Path) -> dict:
    return {"type": "image_url", "image_url": {"url": path.resolve().as_uri()}}


@pytest.fixture(scope="module")
def vl_model() -> Path:
    return exported(VL_CKPT, "rerank")


@pytest.fixture(scope="module")
def embed_model() -> Path:
    return exported(VL_CKPT, "embed")


def test_embed_image_and_text_parts_form_one_input(embed_model: Path, tmp_path: Path) -> None:
    import vlrank

    out = ok_json(cli("embed", "--model", embed_model, "a plain text", "--image", PHOTO, "--text", "a landscape",
                      "--image", CHART))
    expected = vlrank.Embedder(embed_model).embed(
        ["a plain text", {"content": [image_part(PHOTO), {"type": "text", "text": "a landscape"}, image_part(CHART)]}])
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert out["data"] == expected["data"] and out["usage"] == expected["usage"]
    lines = tmp_path / "inputs.jsonl"
    lines.write_text(json.dumps({"content": [image_part(RECEIPT)]}) + "\n", encoding="utf-8")
    both = ok_json(cli("embed", "--model", embed_model, "--image", PHOTO, "--inputs", lines))
    lib = vlrank.Embedder(embed_model).embed([{"content": [image_part(PHOTO)]}, {"content": [image_part(RECEIPT)]}])
    assert both["data"] == lib["data"]


def test_rerank_document_images_in_command_line_order(vl_model: Path) -> None:
    import vlrank

    out = ok_json(cli("rerank", "--model", vl_model, "--query", "a chart", "--document-image", PHOTO,
                      "--document", "a bar chart of sales", "--document-image", CHART, "--raw-scores"))
    docs = [{"content": [image_part(PHOTO)]}, "a bar chart of sales", {"content": [image_part(CHART)]}]
    expected = vlrank.Reranker(vl_model).rerank("a chart", docs, raw_scores=True)
    assert out["results"] == expected["results"] and out["usage"] == expected["usage"]
    by_index = {r["index"]: r for r in out["results"]}
    assert by_index[0]["document"] == {"text": None, "multi_modal": [image_part(PHOTO)]}
    for r in out["results"]:
        assert abs(1 / (1 + math.exp(-r["raw_score"])) - r["relevance_score"]) < 1e-12
    plain = ok_json(cli("rerank", "--model", vl_model, "--query", "a chart", "--document-image", CHART))
    assert "raw_score" not in plain["results"][0]


def test_missing_image_file_is_a_usage_error(vl_model: Path, embed_model: Path, tmp_path: Path) -> None:
    gone = tmp_path / "nope.jpg"
    assert_fails(cli("embed", "--model", embed_model, "--image", gone), "--image", "not a file", rc=2)
    assert_fails(cli("rerank", "--model", vl_model, "--query", "q", "--document-image", gone),
                 "--document-image", "not a file", rc=2)
    text_model = exported(TEXT_CKPT, "rerank")
    assert_fails(cli("rerank", "--model", text_model, "--query", "q", "--document-image", PHOTO),
                 "documents[0]", "text reranker")
