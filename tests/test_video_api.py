"""Video through the public API: every golden video_rerank / video_embed case through ``Reranker.rerank`` /
``Embedder.embed`` on the tiny golden models (|Δscore| <= 1e-3, cosine >= 0.9999, usage.prompt_tokens and
the row ids exact), plus the properties: a frame list as paths / bytes / PIL / arrays scores the same,
rerank_many = rerank one at a time, document order does not change a score, work once per call."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import vlrank
from export_support import GOLDEN, VL_CKPT, cases, exported

RERANK = cases("video_rerank.json")
EMBED = cases("video_embed.json")
MIN_PIXELS, MAX_PIXELS = 4096, 1843200  # the official budget the golden video cases' images use
FL8 = [GOLDEN / "videos" / "fl8_160x120" / f"{i:03d}.png" for i in range(8)]
CLIP = GOLDEN / "videos" / "clip_3s_10fps_128x96.mp4"


@pytest.fixture(scope="module")
def rr() -> vlrank.Reranker:
    return vlrank.Reranker(exported(VL_CKPT, "rerank"), min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, providers="cpu")


@pytest.fixture(scope="module")
def em() -> vlrank.Embedder:
    return vlrank.Embedder(exported(VL_CKPT, "embed"), min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, providers="cpu")


def _video_part(v) -> dict:
    """A golden ``videos`` item as a content part: a file path -> video_url (file://), a list -> a frame list."""
    if isinstance(v, str):
        return {"type": "video_url", "video_url": {"url": (GOLDEN / v).as_uri()}}
    return {"type": "video", "video": [str(GOLDEN / f) for f in v]}


def _side(side: dict) -> dict:
    parts = [_video_part(v) for v in side.get("videos", [])]
    parts += [{"type": "image_url", "image_url": {"url": (GOLDEN / p).as_uri()}} for p in side.get("images", [])]
    parts += [{"type": "text", "text": t} for t in side.get("texts", [])]
    return {"content": parts}


def _row_ids(task, prepared) -> list[list[int]]:
    return [list(r.ids) for r in prepared.rows]


@pytest.mark.parametrize("i", range(len(RERANK)), ids=[f"rerank{i}" for i in range(len(RERANK))])
def test_golden_video_rerank_through_the_api(rr: vlrank.Reranker, i: int) -> None:
    case = RERANK[i]
    saved, rr.max_length = rr.max_length, case["max_length"]
    try:
        call = dict(query=_side(case["query"]), documents=[_side(d) for d in case["documents"]],
                    instruction=case["instruction"])
        prepared = rr._prepare(images=rr._image_batch(), **call)  # the row ids the public call runs
        out = rr.rerank(**call, top_n=None)
    finally:
        rr.max_length = saved
    for ids, res in zip(_row_ids(rr, prepared), case["results"]):
        assert ids == res["input_ids"]
    by_index = {r["index"]: r["relevance_score"] for r in out["results"]}
    for j, res in enumerate(case["results"]):
        assert abs(by_index[j] - res["score"]) <= 1e-3, (j, by_index[j], res["score"])
    assert out["usage"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in case["results"])
    assert out["results"][0]["document"]["multi_modal"] is not None or case["documents"][out["results"][0]["index"]] \
        .get("videos") is None


def test_golden_video_embeddings_through_the_api(em: vlrank.Embedder) -> None:
    batch = [(c, _side(c["input"])) for c in EMBED]
    by_instruction: dict = {}
    for c, side in batch:
        by_instruction.setdefault(c["instruction"], []).append((c, side))
    for instruction, items in by_instruction.items():
        call = dict(input=[s for _, s in items], instruction=instruction)
        prepared = em._prepare(images=em._image_batch(), **call)
        out = em.embed(**call)
        for (c, _), ids, d in zip(items, _row_ids(em, prepared), out["data"]):
            assert ids == c["input_ids"]
            v, ref = np.asarray(d["embedding"], np.float64), np.asarray(c["embedding"], np.float64)
            cos = float(v @ ref / (np.linalg.norm(v) * np.linalg.norm(ref)))
            assert cos >= 0.9999, (c["input"], cos)
        assert out["usage"]["prompt_tokens"] == sum(c["prompt_tokens"] for c, _ in items)


def test_official_embedding_dict_and_messages_spell_the_same_input(em: vlrank.Embedder) -> None:
    case = next(c for c in EMBED if c["input"].get("images") and c["input"].get("videos"))
    x = case["input"]
    official = {"video": [str(GOLDEN / f) for f in x["videos"][0]],
                "image": [str(GOLDEN / p) for p in x["images"]], "text": x["texts"][0]}
    msgs = [{"role": "user", "content": _side(x)["content"]}]
    a = em.embed([official], instruction=case["instruction"])
    b = em.embed(messages=msgs, instruction=case["instruction"])
    assert a["usage"] == b["usage"] == {"prompt_tokens": case["prompt_tokens"], "total_tokens": case["prompt_tokens"]}
    ref = np.asarray(case["embedding"])
    for out in (a, b):
        v = np.asarray(out["data"][0]["embedding"])
        assert float(v @ ref / (np.linalg.norm(v) * np.linalg.norm(ref))) >= 0.9999


def test_echo_keeps_the_parts_as_given(rr: vlrank.Reranker) -> None:
    part = {"type": "video_url", "video_url": {"url": CLIP.as_uri()}, "fps": 1}
    out = rr.rerank("a ball", [{"content": [part, {"type": "text", "text": "clip"}]}, "text doc"])
    echoed = next(r for r in out["results"] if r["index"] == 0)["document"]
    assert echoed == {"text": None, "multi_modal": [part, {"type": "text", "text": "clip"}]}


def test_the_same_video_is_decoded_and_encoded_once_per_call(rr: vlrank.Reranker) -> None:
    data_url = "data:video/mp4;base64," + base64.b64encode(CLIP.read_bytes()).decode()
    docs = [{"content": [{"type": "video_url", "video_url": {"url": u}}]}
            for u in (CLIP.as_uri(), data_url, str(CLIP))]
    images = rr._image_batch()
    prepared = rr._prepare(images=images, query="ball", documents=docs)
    outs = rr.runner.run(prepared.rows, images)
    assert images.tower_runs == 2  # one video of two frame pairs, however it was spelled
    assert len(images._videos) == 1
    assert np.ptp(outs) == 0.0
    # other options are another video
    docs.append({"content": [{"type": "video_url", "video_url": {"url": str(CLIP)}, "fps": 2}]})
    assert len(rr._image_batch().prepare_videos(
        vlrank.parse_documents(docs), max_tokens=32768)[3][0].pairs) > 2


def _frames_as(kind: str) -> list:
    if kind == "path":
        return [str(p) for p in FL8]
    if kind == "bytes":
        return [p.read_bytes() for p in FL8]
    if kind == "pil":
        return [Image.open(p) for p in FL8]
    return [np.asarray(Image.open(p).convert("RGB")) for p in FL8]


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(["path", "bytes", "pil", "array"]), min_size=2, max_size=2, unique=True))
def test_a_frame_list_scores_the_same_in_every_spelling(rr: vlrank.Reranker, kinds) -> None:
    scores = [rr.rerank("A red ball rolls", [{"content": [{"type": "video", "video": _frames_as(k)}]}])
              ["results"][0]["relevance_score"] for k in kinds]
    assert abs(scores[0] - scores[1]) <= 1e-6, (kinds, scores)


def test_batched_equals_one_at_a_time_and_order_does_not_matter(rr: vlrank.Reranker) -> None:
    docs = [{"content": [{"type": "video", "video": [str(p) for p in FL8]}]},
            {"content": [{"type": "video_url", "video_url": {"url": str(CLIP)}}, {"type": "text", "text": "x"}]},
            "A ball moves across the screen"]
    one = {r["index"]: r["relevance_score"] for r in rr.rerank("A red ball", docs)["results"]}
    many = rr.rerank_many([{"query": "A red ball", "documents": docs},
                           {"query": "A red ball", "documents": list(reversed(docs))}])
    first = {r["index"]: r["relevance_score"] for r in many[0]["results"]}
    rev = {len(docs) - 1 - r["index"]: r["relevance_score"] for r in many[1]["results"]}
    for i in range(len(docs)):
        assert abs(first[i] - one[i]) <= 1e-5 and abs(rev[i] - one[i]) <= 1e-5, (i, one, first, rev)


def test_a_text_reranker_refuses_videos() -> None:
    from export_support import TEXT_CKPT

    text = vlrank.Reranker(exported(TEXT_CKPT, "rerank"), providers="cpu")
    with pytest.raises(vlrank.errors.InvalidInputError) as err:
        text.rerank("q", ["d", {"content": [{"type": "video", "video": [str(FL8[0])]}]}])
    assert err.value.field == "documents[1]" and "video" in str(err.value)


def test_an_export_without_video_pad_is_told_to_re_export(tmp_path: Path) -> None:
    import json
    import shutil

    src = exported(VL_CKPT, "rerank")
    old = tmp_path / "old"
    shutil.copytree(src, old)
    manifest = json.loads((old / "vlrank.json").read_text())
    del manifest["special_tokens"]["video_pad"]
    (old / "vlrank.json").write_text(json.dumps(manifest))
    model = vlrank.Reranker(old, providers="cpu")
    assert model.rerank("q", ["text still works"])["results"][0]["index"] == 0
    with pytest.raises(vlrank.errors.ModelDirectoryError) as err:
        model.rerank("q", [{"content": [{"type": "video", "video": [str(FL8[0])]}]}])
    assert err.value.field == "model" and "re-export" in str(err.value)
