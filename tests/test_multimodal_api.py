"""Images through the public API (vlrank.Reranker / vlrank.Embedder): every image case of golden
vl_rerank.json / vl_embed.json, every way of passing an image, mixed batches, the per-call image cache and
the context limit."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vlrank
from vlrank.errors import ContextTooLongError

GOLDEN = Path(__file__).resolve().parent / "golden"
VL_CKPT = GOLDEN / "models" / "tiny-qwen3-vl"


def _cases(name: str) -> list[dict]:
    return json.loads((GOLDEN / "cases" / name).read_text())


def _url(rel: str) -> str:
    return str(GOLDEN / rel)


def _side(spec: dict) -> dict:
    """A golden side in the OpenAI parts shape: images first, then texts (the official order)."""
    parts = [{"type": "image_url", "image_url": {"url": _url(p)}} for p in spec.get("images", [])]
    parts += [{"type": "text", "text": t} for t in spec.get("texts", [])]
    return {"content": parts}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mm-api")
    return {task: vlrank.export(VL_CKPT, root / task, task=task, progress=False) for task in ("rerank", "embed")}


@pytest.fixture(scope="module")
def reranker(model_dirs) -> vlrank.Reranker:
    return vlrank.Reranker(model_dirs["rerank"], providers="cpu")


@pytest.fixture(scope="module")
def embedder(model_dirs) -> vlrank.Embedder:
    return vlrank.Embedder(model_dirs["embed"], providers="cpu")


def _has_images(case: dict) -> bool:
    return bool(case["query"].get("images")) or any(d.get("images") for d in case["documents"])


@pytest.mark.parametrize("case", [c for c in _cases("vl_rerank.json") if _has_images(c)],
                         ids=lambda c: f"instr={c['instruction']!s:.8}-max{c['max_length']}")
def test_golden_rerank_image_cases(case, model_dirs):
    rr = vlrank.Reranker(model_dirs["rerank"], max_length=case["max_length"], min_pixels=case["min_pixels"],
                         max_pixels=case["max_pixels"], providers="cpu")
    out = rr.rerank(_side(case["query"]), [_side(d) for d in case["documents"]], instruction=case["instruction"])
    scores = {r["index"]: r["relevance_score"] for r in out["results"]}
    for i, ref in enumerate(case["results"]):
        assert abs(scores[i] - ref["score"]) <= 1e-3
        assert abs(scores[i] - ref["score"]) <= 1e-5  # measured ~2e-7
    assert out["usage"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in case["results"])
    # results are best first and echo the parts as given
    ordered = [r["relevance_score"] for r in out["results"]]
    assert ordered == sorted(ordered, reverse=True)
    assert out["results"][0]["document"]["multi_modal"] is not None or out["results"][0]["document"]["text"]


@pytest.mark.parametrize("case", [c for c in _cases("vl_embed.json") if c["input"].get("images")],
                         ids=lambda c: f"instr={c['instruction']!s:.8}-{len(c['input'].get('texts', []))}texts")
def test_golden_embed_image_cases(case, embedder):
    out = embedder.embed(_side(case["input"]), instruction=case["instruction"])
    vec = np.asarray(out["data"][0]["embedding"])
    ref = np.asarray(case["embedding"])
    assert float(vec @ ref / (np.linalg.norm(vec) * np.linalg.norm(ref))) >= 0.9999
    assert out["usage"]["prompt_tokens"] == case["prompt_tokens"]
    dim8 = embedder.embed(_side(case["input"]), instruction=case["instruction"], dimensions=8)
    np.testing.assert_allclose(dim8["data"][0]["embedding"], case["embedding_dim8"], atol=1e-4)


def test_every_image_form_scores_the_same(reranker):
    path = GOLDEN / "images" / "gradient_130x97.png"
    raw = path.read_bytes()
    forms = {
        "path": str(path),
        "file_url": path.resolve().as_uri(),
        "data_url": "data:image/png;base64," + base64.b64encode(raw).decode(),
    }
    docs = [{"content": [{"type": "image_url", "image_url": {"url": u}}, {"type": "text", "text": "a caption"}]}
            for u in forms.values()]
    objects = [raw, Image.open(path), np.asarray(Image.open(path).convert("RGB")), path]
    docs += [{"content": [{"type": "image", "image": o}, {"type": "text", "text": "a caption"}]} for o in objects]
    out = reranker.rerank("Show me a red logo", docs)
    scores = {r["index"]: r["relevance_score"] for r in out["results"]}
    ref = _cases("vl_rerank.json")[4]["results"][1]["score"]  # golden: this image + "a caption"
    for i in range(len(docs)):
        assert abs(scores[i] - ref) <= 1e-5, i


def test_mixed_batch_equals_one_at_a_time(reranker, embedder):
    docs = [_side({"images": ["images/gray_40x300.png"], "texts": ["tall"]}),
            "text only",
            _side({"images": ["images/rgb_noise_70x50.png", "images/photo_like_200x150.jpg"]}),
            _side({"images": ["images/palette_64x64.png"]}),
            _side({"images": ["images/rgba_60x90.png"], "texts": ["x" * 50]})]
    query = _side({"images": ["images/gradient_130x97.png"], "texts": ["which one?"]})
    together = {r["index"]: r["relevance_score"] for r in reranker.rerank(query, docs)["results"]}
    for i, d in enumerate(docs):
        alone = reranker.rerank(query, [d])["results"][0]["relevance_score"]
        assert abs(alone - together[i]) <= 1e-6
    batch = embedder.embed(docs)["data"]
    for i, d in enumerate(docs):
        alone = np.asarray(embedder.embed(d)["data"][0]["embedding"])
        assert float(alone @ np.asarray(batch[i]["embedding"])) >= 0.999999


def test_query_image_runs_the_tower_once(reranker, monkeypatch):
    from vlrank.engine.vision import VisionTower

    runs = []
    original = VisionTower.run
    monkeypatch.setattr(VisionTower, "run", lambda self, image: runs.append(image.key) or original(self, image))
    query = _side({"images": ["images/rgb_noise_70x50.png"]})
    docs = [f"document {i}" for i in range(60)] + [_side({"images": ["images/rgb_noise_70x50.png"]})]
    out = reranker.rerank(query, docs)
    assert len(out["results"]) == 61
    assert len(runs) == 1  # one distinct image, however many pairs hold it


def test_image_over_the_context_says_tokens_and_max_pixels(tmp_path, model_dirs):
    # 6,400 x 6,400 at an unbounded budget is 40,000 tokens: more than the 32,768 context on its own.
    big = tmp_path / "big.png"
    Image.new("RGB", (6400, 6400), (200, 30, 30)).save(big)
    rr = vlrank.Reranker(model_dirs["rerank"], max_pixels=6400 * 6400, providers="cpu")
    with pytest.raises(ContextTooLongError) as info:
        rr.rerank("red?", ["text", {"content": [{"type": "image_url", "image_url": {"url": str(big)}}]}])
    err = info.value
    assert err.field == "documents[1]"
    msg = str(err)
    assert "needs 400" in msg and "40000 of them" in msg
    fit = int(msg.split("max_pixels=")[1].split()[0])
    assert 0 < fit < 32_768 * 1024
    # ... and that max_pixels does fit: the image then leaves room for the pair's text. (Not scored here: a
    # ~32k-token image is 130k patches, whose full vision attention does not fit a test machine.)
    needed = int(msg.split("needs ")[1].split()[0])
    text_tokens = needed - 40_000
    assert vlrank.image_tokens(height=6400, width=6400, max_pixels=fit) + text_tokens <= 32_768


def test_embed_over_the_context_names_the_input(tmp_path, embedder, model_dirs):
    big = tmp_path / "big.png"
    Image.new("RGB", (6400, 6400), (10, 200, 30)).save(big)
    em = vlrank.Embedder(model_dirs["embed"], max_pixels=6400 * 6400, providers="cpu")
    with pytest.raises(ContextTooLongError) as info:
        em.embed(["fine", {"content": [{"type": "image_url", "image_url": {"url": str(big)}}]}])
    assert info.value.field == "input[1]"
    assert "max_pixels=" in str(info.value)
