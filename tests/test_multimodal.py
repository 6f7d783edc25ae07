"""The image path end to end: golden image files -> native preprocess -> vision graph -> decoder graph,
against every image case of golden vl_rerank.json / vl_embed.json; plus the per-call image cache, the
decoder feeds' order and the context error. (The public-API tests are in test_multimodal_api.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlrank import _native
from vlrank.errors import ContextTooLongError
from vlrank.export import export as export_model
from vlrank.inputs import ParsedInput
from vlrank.preprocess.prompts import Side
from vlrank.engine.prompt_ids import vl_embed_ids, vl_rerank_ids
from vlrank.engine.vision import ImageBatch, PreparedImage, VisionTower
from vlrank.engine.sessions import create_session

GOLDEN = Path(__file__).resolve().parent / "golden"
VL_CKPT = GOLDEN / "models" / "tiny-qwen3-vl"
IMAGE_PAD = 151655
PAD_ID = 151643
MIN_PIXELS, MAX_PIXELS = 4096, 1310720


def _cases(name: str) -> list[dict]:
    return json.loads((GOLDEN / "cases" / name).read_text())


def _image_bytes(rel: str) -> bytes:
    return (GOLDEN / rel).read_bytes()


@pytest.fixture(scope="module")
def rerank_model(tmp_path_factory):
    out = export_model(VL_CKPT, tmp_path_factory.mktemp("mm") / "rerank", task="rerank", progress=False)
    return out, VisionTower(out, providers="cpu"), create_session(out / "decoder.onnx", providers="cpu")


@pytest.fixture(scope="module")
def embed_model(tmp_path_factory):
    out = export_model(VL_CKPT, tmp_path_factory.mktemp("mm") / "embed", task="embed", progress=False)
    return out, VisionTower(out, providers="cpu"), create_session(out / "decoder.onnx", providers="cpu")


@pytest.fixture(scope="module")
def tokenizer():
    return _native.Tokenizer.from_file(str(VL_CKPT / "tokenizer.json"))


def _run_decoder(sess, output: str, rows: list[list[int]], row_images: list[list[PreparedImage]],
                 images: ImageBatch) -> np.ndarray:
    """All rows in ONE right-padded batch (rows of different lengths and image sizes)."""
    positions = [images.positions(ids, imgs, image_pad_id=IMAGE_PAD) for ids, imgs in zip(rows, row_images)]
    input_ids, mask, pos = _native.pad_batch([list(r) for r in rows], pad_id=PAD_ID, positions=positions)
    embeds, deepstack = images.features([img for imgs in row_images for img in imgs])
    feeds = dict(input_ids=input_ids, attention_mask=mask, position_ids=pos, image_embeds=embeds,
                 deepstack_embeds=deepstack)
    return sess.run([output], feeds)[0]


def _image_rerank_cases():
    return [c for c in _cases("vl_rerank.json")
            if any(d.get("images") for d in c["documents"]) or c["query"].get("images")]


@pytest.mark.parametrize("case", _image_rerank_cases(), ids=lambda c: f"instr={c['instruction']!s:.8}-max{c['max_length']}")
def test_golden_rerank_cases_in_one_mixed_batch(case, rerank_model, tokenizer):
    _, tower, sess = rerank_model
    images = ImageBatch(tower, min_pixels=case["min_pixels"], max_pixels=case["max_pixels"])
    q = case["query"]
    docs = case["documents"]
    q_imgs, *d_imgs = images.prepare([[_image_bytes(p) for p in q.get("images", [])]]
                                     + [[_image_bytes(p) for p in d.get("images", [])] for d in docs])
    rows, row_images = [], []
    for doc, imgs, res in zip(docs, d_imgs, case["results"]):
        (ids,) = _native.build_vl_rerank_ids(
            tokenizer, query=Side(texts=q.get("texts", []), images=ImageBatch.token_counts(q_imgs)),
            documents=[Side(texts=doc.get("texts", []), images=ImageBatch.token_counts(imgs))],
            instruction=case["instruction"], max_length=case["max_length"])
        assert list(ids) == res["input_ids"]
        np.testing.assert_array_equal(images.positions(ids, q_imgs + imgs, image_pad_id=IMAGE_PAD),
                                      np.asarray(res["position_ids"]))
        rows.append(list(ids))
        row_images.append(q_imgs + imgs)
    logits = _run_decoder(sess, "logit", rows, row_images, images)
    scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    expected = np.array([r["score"] for r in case["results"]])
    assert np.abs(scores - expected).max() <= 1e-3
    # measured: ~2e-7; a drift well above float32 noise means a real bug even inside the bar
    assert np.abs(scores - expected).max() <= 1e-5


def test_golden_embed_cases(embed_model, tokenizer):
    _, tower, sess = embed_model
    cases = [c for c in _cases("vl_embed.json") if c["input"].get("images")]
    assert cases
    images = ImageBatch(tower, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    per_case = images.prepare([[_image_bytes(p) for p in c["input"]["images"]] for c in cases])
    rows = []
    for case, imgs in zip(cases, per_case):
        (ids,) = _native.build_vl_embed_ids(
            tokenizer, inputs=[Side(texts=case["input"].get("texts", []), images=ImageBatch.token_counts(imgs))],
            instruction=case["instruction"])
        assert len(ids) == case["prompt_tokens"]
        rows.append(list(ids))
    vectors = _run_decoder(sess, "embedding", rows, per_case, images)
    for vec, case in zip(vectors, cases):
        ref = np.asarray(case["embedding"])
        cos = float(vec @ ref / (np.linalg.norm(vec) * np.linalg.norm(ref)))
        assert cos >= 0.9999
        assert cos >= 0.999999  # measured ~1 - 1e-7
    # 3 instructions x 2 image inputs, but only 2 distinct images: the tower ran twice
    assert images.tower_runs == 2


def test_one_tower_run_per_distinct_image(rerank_model):
    _, tower, _ = rerank_model
    images = ImageBatch(tower, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    a = _image_bytes("images/rgb_noise_70x50.png")
    b = _image_bytes("images/gradient_130x97.png")
    sides = images.prepare([[a]] + [[b, a]] * 100)
    assert len({img.key for side in sides for img in side}) == 2
    assert sides[1][1] is sides[0][0]
    embeds, deepstack = images.features([img for side in sides for img in side])
    assert images.tower_runs == 2
    assert embeds.shape == (4 + 100 * (12 + 4), 32)
    assert deepstack.shape == (2, embeds.shape[0], 32)
    # row-major: side 1 = image b (12 tokens) then a (4 tokens), same rows as a's own features
    np.testing.assert_array_equal(embeds[4:16], images.encode(sides[1][0])[0])
    np.testing.assert_array_equal(embeds[16:20], embeds[:4])


def test_same_bytes_other_budget_is_another_image(rerank_model):
    _, tower, _ = rerank_model
    a = _image_bytes("images/gradient_130x97.png")
    small = ImageBatch(tower, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS).prepare([[a]])[0][0]
    big = ImageBatch(tower, min_pixels=262144, max_pixels=1843200).prepare([[a]])[0][0]
    assert small.key != big.key
    assert (small.num_tokens, big.num_tokens) == (12, 266)  # golden pixels.json


def test_arrays_and_bytes_of_one_picture_score_the_same(rerank_model):
    from PIL import Image

    _, tower, _ = rerank_model
    path = GOLDEN / "images" / "rgb_noise_70x50.png"
    images = ImageBatch(tower, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    from_bytes, from_array = images.prepare([[path.read_bytes()], [np.asarray(Image.open(path).convert("RGB"))]])
    assert from_bytes[0].key != from_array[0].key  # different payloads, so two entries ...
    images.features([from_bytes[0], from_array[0]])
    np.testing.assert_array_equal(from_bytes[0].pixel_values, from_array[0].pixel_values)  # ... same pixels


def test_no_images_gives_empty_feeds(rerank_model):
    _, tower, _ = rerank_model
    embeds, deepstack = ImageBatch(tower, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS).features([])
    assert embeds.shape == (0, 32) and deepstack.shape == (2, 0, 32)


def test_context_error_names_tokens_and_a_max_pixels_that_fits(tokenizer):
    # A 40,000-token image (never decoded: the error comes first, so no pixels are allocated).
    huge = PreparedImage(key=("x", 4096, 50_000_000), grid_h=400, grid_w=400, merge=2, origin="huge.png")
    assert huge.num_tokens == 40_000 and not huge.has_pixels
    query = ParsedInput(images=(), texts=("q",), echo={})
    docs = [ParsedInput(images=(), texts=("text only",), echo={}), ParsedInput(images=(), texts=("a caption",), echo={})]
    with pytest.raises(ContextTooLongError) as info:
        vl_rerank_ids(tokenizer, query=query, documents=docs, query_images=[], doc_images=[[], [huge]],
                      instruction=None, max_length=10240, min_pixels=4096, max_pixels=50_000_000)
    err = info.value
    assert err.field == "documents[1]"
    (one_token_image,) = _native.build_vl_rerank_ids(tokenizer, query=Side(texts=["q"]),
                                                     documents=[Side(texts=["a caption"], images=[1])])
    text_tokens = len(one_token_image) - 1
    msg = str(err)
    assert f"needs {40_000 + text_tokens} tokens" in msg
    fit = (32_768 - text_tokens) * 1024
    assert f"max_pixels={fit}" in msg
    # and that max_pixels really fits: the image then takes at most the tokens left over
    h, w = _native_smart_resize(12_800, 12_800, fit)
    assert (h // 32) * (w // 32) + text_tokens <= 32_768


def test_pair_over_context_through_many_images_names_the_document(tokenizer):
    # 30 images of 1,200 tokens: each fine, together over the context.
    imgs = [PreparedImage(key=(str(i), 4096, 1310720), grid_h=60, grid_w=80, merge=2) for i in range(30)]
    assert imgs[0].num_tokens == 1200
    query = ParsedInput(images=(), texts=("q",), echo={})
    with pytest.raises(ContextTooLongError) as info:
        vl_embed_ids(tokenizer, inputs=[query], images=[imgs], instruction=None, max_length=8192,
                     min_pixels=4096, max_pixels=1310720)
    assert info.value.field == "input[0]"
    assert "needs 36" in str(info.value) and "max_pixels=" in str(info.value)


def _native_smart_resize(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    import vlrank

    size = vlrank.smart_resize(height=height, width=width, min_pixels=4096, max_pixels=max_pixels)
    return int(size[0]), int(size[1])
