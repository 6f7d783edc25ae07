"""The tiny golden VL model on videos (golden README, Video): each frame pair runs through the vision
graph as its own window (grid (1, H/16, W/16), the same graph as an image), its features fill the
pair's <|video_pad|> positions (the exported decoder treats them like <|image_pad|>, DeepStack too).
Scores within 1e-3 and embeddings at cosine >= 0.9999 of the golden video_rerank / video_embed."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from vlrank import _native
from vlrank.engine.sessions import create_session
from vlrank.engine.vision import ImageBatch, PreparedImage, VisionTower, video_pair_images
from vlrank.export import export as export_model
from vlrank.preprocess import video as pv
from vlrank.preprocess.prompts import Side

GOLDEN = Path(__file__).resolve().parent / "golden"
VL_CKPT = GOLDEN / "models" / "tiny-qwen3-vl"
IMAGE_PAD, VIDEO_PAD, PAD_ID = 151655, 151656, 151643
MIN_PIXELS, MAX_PIXELS = 4096, 1843200  # the official budget the golden video cases' images use
RERANK = json.loads((GOLDEN / "cases" / "video_rerank.json").read_text())
EMBED = json.loads((GOLDEN / "cases" / "video_embed.json").read_text())


def _model(tmp_path_factory, task):
    out = export_model(VL_CKPT, tmp_path_factory.mktemp("vid") / task, task=task, progress=False)
    return VisionTower(out, providers="cpu"), create_session(out / "decoder.onnx", providers="cpu")


@pytest.fixture(scope="module")
def rerank_model(tmp_path_factory):
    return _model(tmp_path_factory, "rerank")


@pytest.fixture(scope="module")
def embed_model(tmp_path_factory):
    return _model(tmp_path_factory, "embed")


@pytest.fixture(scope="module")
def tokenizer():
    return _native.Tokenizer.from_file(str(VL_CKPT / "tokenizer.json"))


_VIDEOS: dict[str, pv.PreprocessedVideo] = {}


def _video(v) -> pv.PreprocessedVideo:
    key = json.dumps(v)
    if key not in _VIDEOS:
        _VIDEOS[key] = (pv.preprocess_video_file(GOLDEN / v) if isinstance(v, str)
                        else pv.preprocess_frame_list([str(GOLDEN / f) for f in v]))
    return _VIDEOS[key]


def _pairs(video: pv.PreprocessedVideo, merge: int) -> list[PreparedImage]:
    digest = hashlib.sha256(video.pixel_values.tobytes()).hexdigest()
    return video_pair_images(video.pixel_values, video.grid_thw, merge=merge, key=digest)


def _side(side: dict, images: ImageBatch, merge: int):
    """(blocks in prompt order: video pairs then images, image token counts, video tokens)."""
    vids = [_video(v) for v in side.get("videos", [])]
    imgs = images.prepare([[(GOLDEN / p).read_bytes() for p in side.get("images", [])]])[0]
    blocks = [p for v in vids for p in _pairs(v, merge)] + list(imgs)
    return blocks, ImageBatch.token_counts(imgs), [(v.plan.tokens_per_group, v.plan.timestamp_text) for v in vids]


def _run(sess, output, images: ImageBatch, rows: list[list[int]], blocks: list[list[PreparedImage]]):
    positions = [images.positions(ids, bl, image_pad_id=IMAGE_PAD, video_pad_id=VIDEO_PAD)
                 for ids, bl in zip(rows, blocks)]
    input_ids, mask, pos = _native.pad_batch(rows, pad_id=PAD_ID, positions=positions)
    embeds, deepstack = images.features([b for bl in blocks for b in bl])
    return sess.run([output], dict(input_ids=input_ids, attention_mask=mask, position_ids=pos,
                                   image_embeds=embeds, deepstack_embeds=deepstack))[0], positions


@pytest.mark.parametrize("case", RERANK, ids=[f"rerank{i}" for i in range(len(RERANK))])
def test_golden_video_rerank_scores(case, rerank_model, tokenizer):
    tower, sess = rerank_model
    images = ImageBatch(tower, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    q = case["query"]
    q_blocks, q_imgs, q_vids = _side(q, images, tower.merge)
    rows, blocks = [], []
    for doc, res in zip(case["documents"], case["results"]):
        d_blocks, d_imgs, d_vids = _side(doc, images, tower.merge)
        (ids,) = _native.build_vl_rerank_ids(
            tokenizer, query=Side(texts=q.get("texts", []), images=q_imgs, videos=q_vids),
            documents=[Side(texts=doc.get("texts", []), images=d_imgs, videos=d_vids)],
            instruction=case["instruction"], max_length=case["max_length"])
        assert list(ids) == res["input_ids"] and len(ids) == res["prompt_tokens"]
        rows.append(list(ids))
        blocks.append(q_blocks + d_blocks)
    logits, positions = _run(sess, "logit", images, rows, blocks)
    for p, res in zip(positions, case["results"]):
        assert p.tolist() == res["position_ids"]
    scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    expected = np.array([r["score"] for r in case["results"]])
    assert np.abs(scores - expected).max() <= 1e-3, (scores, expected)


def test_pair_windows_check_the_row_count():
    from vlrank.errors import InvalidInputError

    with pytest.raises(InvalidInputError) as e:
        video_pair_images(np.zeros((10, 1536), np.float32), (2, 2, 2), merge=2, key="x")
    assert e.value.field == "pixel_values"
    pairs = video_pair_images(np.arange(8 * 1536, dtype=np.float32).reshape(8, 1536), (2, 2, 2), merge=2, key="x")
    assert [p.merged_grid for p in pairs] == [(1, 1), (1, 1)]
    assert pairs[1].pixel_values[0, 0] == 4 * 1536 and len({p.key for p in pairs}) == 2


def test_golden_video_embeddings(embed_model, tokenizer):
    tower, sess = embed_model
    images = ImageBatch(tower, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    for case in EMBED:  # one decoder run each: the longest prompts hold ~8k tokens
        x = case["input"]
        bl, imgs, vids = _side(x, images, tower.merge)
        (ids,) = _native.build_vl_embed_ids(tokenizer, inputs=[Side(texts=x.get("texts", []), images=imgs, videos=vids)],
                                            instruction=case["instruction"], max_length=case["max_length"])
        assert list(ids) == case["input_ids"]
        (vec,), _ = _run(sess, "embedding", images, [list(ids)], [bl])
        ref = np.asarray(case["embedding"], dtype=np.float64)
        v = vec.astype(np.float64)
        cos = float(v @ ref / (np.linalg.norm(v) * np.linalg.norm(ref)))
        assert cos >= 0.9999, (case["input"], cos)
