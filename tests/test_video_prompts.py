"""Prompt ids and M-RoPE positions with videos, exact to the golden video cases (golden README,
Video: transformers 5.24 layout, videos then images then texts per side, truncation keeping every
video token, each frame pair's pad run one (H/32, W/32) grid). Videos are planned by our planner
from headers (file) or the first frame (frame list); the plans must equal the golden per-video facts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import vlrank
from vlrank import _native
from vlrank.inputs import video as video_io
from vlrank.preprocess.prompts import Side
from vlrank.preprocess import video as pv

GOLDEN = Path(__file__).resolve().parent / "golden"
IMAGE_PAD, VIDEO_PAD = 151655, 151656
RERANK = json.loads((GOLDEN / "cases" / "video_rerank.json").read_text())
EMBED = json.loads((GOLDEN / "cases" / "video_embed.json").read_text())


@pytest.fixture(scope="module")
def tok() -> vlrank.Tokenizer:
    return vlrank.Tokenizer.from_file(GOLDEN / "models" / "tokenizer.json")


def _plan(video) -> pv.VideoPlan:
    if isinstance(video, str):
        info = video_io.probe(GOLDEN / video)
        return pv.plan_file(total_frames=info.frames, video_fps=info.fps, height=info.height, width=info.width)
    h, w = pv._frame_size(str(GOLDEN / video[0]), "video[0]")
    return pv.plan_frame_list(num_frames=len(video), height=h, width=w)


def _videos(side: dict, golden_videos: list[dict]) -> list[tuple[int, list[str]]]:
    out = []
    for v in side.get("videos", []):
        p = _plan(v)
        g = golden_videos[len(out)]
        assert (p.tokens_per_group, p.timestamp_text, list(p.grid_thw)) == (
            g["tokens_per_group"], g["timestamp_text"], g["video_grid_thw"])
        out.append((p.tokens_per_group, p.timestamp_text))
    return out


def _image_counts(grids: list[list[int]]) -> list[int]:
    return [t * h * w // 4 for t, h, w in grids]


def _positions(ids: list[int], videos: list[dict], image_grids: list[list[int]], order: list[str]) -> np.ndarray:
    """Grids of every pad block in prompt order: per side, its videos' pairs, then its images."""
    blocks: list[tuple[int, int]] = []
    vi = ii = 0
    for kind, n in order:
        for _ in range(n):
            if kind == "video":
                _, h, w = videos[vi]["video_grid_thw"]
                blocks += [(h // 2, w // 2)] * videos[vi]["video_grid_thw"][0]
                vi += 1
            else:
                _, h, w = image_grids[ii]
                blocks.append((h // 2, w // 2))
                ii += 1
    return _native.mrope_position_ids(ids, image_pad_id=IMAGE_PAD, video_pad_id=VIDEO_PAD, image_grids=blocks)


def _order(*sides: dict) -> list[tuple[str, int]]:
    return [x for s in sides for x in (("video", len(s.get("videos", []))), ("image", len(s.get("images", []))))]


@pytest.mark.parametrize("case", RERANK, ids=[f"rerank{i}" for i in range(len(RERANK))])
def test_video_rerank_ids_and_positions_exact(tok, case):
    q = case["query"]
    for doc, res in zip(case["documents"], case["results"]):
        vids = res["videos"]
        nq = len(q.get("videos", []))
        qv, dv = _videos(q, vids[:nq]), _videos(doc, vids[nq:])
        grids = res["image_grid_thw"]
        nqi = len(q.get("images", []))
        query = Side(texts=q.get("texts", []), images=_image_counts(grids[:nqi]), videos=qv)
        doc_side = Side(texts=doc.get("texts", []), images=_image_counts(grids[nqi:]), videos=dv)
        (ids,) = _native.build_vl_rerank_ids(tok, query=query, documents=[doc_side], instruction=case["instruction"],
                                             max_length=case["max_length"])
        assert ids == res["input_ids"]
        assert len(ids) == res["prompt_tokens"]
        pos = _positions(ids, vids, grids, _order(q, doc))
        assert pos.tolist() == res["position_ids"]
        batch = _native.build_vl_rerank_ids(tok, query=query, documents=[Side(), doc_side],
                                            instruction=case["instruction"], max_length=case["max_length"])[1:]
        assert batch == [ids]


def test_some_case_truncates_and_keeps_every_video_token():
    cut = [r for c in RERANK for r in c["results"] if r["prompt_tokens"] < r["prompt_tokens_before_truncation"]]
    assert cut, "the golden set has truncated video cases"
    for r in cut:
        assert r["input_ids"].count(VIDEO_PAD) == sum(v["tokens_per_group"] * v["video_grid_thw"][0] for v in r["videos"])


@pytest.mark.parametrize("case", EMBED, ids=[f"embed{i}" for i in range(len(EMBED))])
def test_video_embed_ids_and_positions_exact(tok, case):
    x = case["input"]
    vids = _videos(x, case["videos"])
    x_side = Side(texts=x.get("texts", []), images=_image_counts(case["image_grid_thw"]), videos=vids)
    (ids,) = _native.build_vl_embed_ids(tok, inputs=[x_side], instruction=case["instruction"],
                                        max_length=case["max_length"])
    assert ids == case["input_ids"] and len(ids) == case["prompt_tokens"]
    pos = _positions(ids, case["videos"], case["image_grid_thw"], _order(x))
    assert pos.tolist() == case["position_ids"]
    batch = _native.build_vl_embed_ids(tok, inputs=[Side(texts=["x"]), x_side], instruction=case["instruction"],
                                       max_length=case["max_length"])[1:]
    assert batch == [ids]


def test_video_token_arguments_are_checked(tok):
    from vlrank.errors import InvalidInputError

    with pytest.raises(InvalidInputError) as e:
        _native.build_vl_embed_ids(tok, inputs=[Side(videos=[(0, ["<0.5 seconds>"])])])
    assert e.value.field == "inputs[0].videos[0]"
    with pytest.raises(InvalidInputError) as e:
        _native.build_vl_embed_ids(tok, inputs=[Side(videos=[(4, [])])])
    assert e.value.field == "inputs[0].videos[0]"
    with pytest.raises(InvalidInputError) as e:
        _native.build_vl_embed_ids(tok, inputs=[Side(videos=[("x", ["t"])])])
    assert e.value.field == "inputs[0].videos[0]"
    with pytest.raises(InvalidInputError):
        _native.mrope_position_ids([VIDEO_PAD, IMAGE_PAD], image_pad_id=IMAGE_PAD, video_pad_id=VIDEO_PAD,
                                   image_grids=[(1, 2)])
