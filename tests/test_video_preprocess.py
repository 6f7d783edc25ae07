"""The video preprocessing face against the golden videos (golden README, Video): plans (sampled
frames, sizes, budget, grid, tokens, timestamps) exact for both kinds; frame-list pixel rows exact
(same decoder as the reference's Pillow); file-video rows within the decoder's few-level spread."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlrank import _native
from vlrank.errors import ContextTooLongError, InvalidInputError
from vlrank.preprocess import video as pv

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = json.loads((GOLDEN / "cases" / "video_pixels.json").read_text())
IDS = [c["video"] or c["frames"][0].split("/")[1] for c in CASES]


def _run(case):
    if case["source"] == "file":
        return pv.preprocess_video_file(GOLDEN / case["video"])
    return pv.preprocess_frame_list([str(GOLDEN / f) for f in case["frames"]])


def _padded(case):
    idx = list(case["sample_frames_indices"])
    return idx + idx[-1:] if len(idx) % 2 else idx


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_plan_and_pixel_values_match_golden(case):
    out = _run(case)
    p = out.plan
    if case["source"] == "file":
        assert p.frames == case["frames_indices"]
        assert (p.pre_height, p.pre_width) == (case["decoded_height"], case["decoded_width"])
    else:
        assert p.frames == _padded(case)
        assert (p.pre_height, p.pre_width) == (case["fetched_height"], case["fetched_width"])
    assert p.frames_indices == case["frames_indices"]
    assert (p.metadata_fps, p.sample_fps) == (case["metadata_fps"], case["sample_fps"])
    assert (p.min_pixels, p.total_pixels, p.max_pixels) == (
        case["resize_min_pixels"], case["resize_total_pixels"], case["resize_max_pixels"])
    assert (p.resized_height, p.resized_width) == (case["resized_height"], case["resized_width"])
    assert list(p.grid_thw) == list(out.grid_thw) == case["video_grid_thw"]
    assert p.tokens_per_group == case["tokens_per_group"]
    assert p.num_pads == case["tokens_per_group"] * case["groups"]
    assert p.timestamps == case["timestamps"] and p.timestamp_text == case["timestamp_text"]
    assert out.pixel_values.dtype == np.float32 and list(out.pixel_values.shape) == case["pixel_values_shape"]
    rows = np.load(GOLDEN / case["pixel_values_rows"])
    got = np.concatenate([out.pixel_values[:8], out.pixel_values[-8:]])
    if case["source"] == "frames":
        assert np.array_equal(got, rows)
        assert abs(float(out.pixel_values.mean(dtype=np.float64)) - case["mean"]) <= 1e-6
        assert abs(float(np.abs(out.pixel_values).sum(dtype=np.float64)) - case["abs_sum"]) <= 1e-6 * case["abs_sum"]
    else:
        # Decoded frames differ from the reference's FFmpeg build by <= 3 levels (test_video_decode);
        # the resize spreads that over at most a few levels of the (x - 127.5) / 127.5 scale.
        diff = np.abs(got - rows)
        assert diff.max() <= 6 / 127.5, diff.max()
        assert diff.mean() <= 0.5 / 127.5, diff.mean()
        assert abs(float(out.pixel_values.mean(dtype=np.float64)) - case["mean"]) <= 2e-3


def test_plan_frames_binding_counts_tokens_of_the_transformers_5_24_layout():
    c = next(c for c in CASES if c["source"] == "frames")
    d = _native.video_plan_frames(num_frames=c["input_frames"], height=c["original_height"], width=c["original_width"])
    tokens = sum(d["tokens_per_group"] + len(t) - len(" seconds") + 1 + 2 for t in d["timestamp_text"]) + 2
    # `<`, each digit, `.`, ` seconds`, `>`: the text's length minus " seconds" plus one token for it.
    assert d["num_tokens"] == tokens


def test_header_budget_refuses_with_advice():
    c = next(c for c in CASES if c["video"] and c["video"].endswith("9s_25fps_320x180.mp4"))
    kw = dict(total_frames=c["decoded_frames"], video_fps=c["video_fps"], height=c["decoded_height"], width=c["decoded_width"])
    plan = pv.plan_file(**kw)
    assert pv.plan_file(**kw, max_tokens=plan.num_tokens) == plan
    with pytest.raises(ContextTooLongError, match="max_frames"):
        pv.plan_file(**kw, max_tokens=plan.num_tokens - 1)


def test_bad_arguments_are_typed_errors_naming_the_field():
    with pytest.raises(InvalidInputError) as e:
        pv.plan_file(total_frames=30, video_fps=10.0, height=96, width=128, fps=0.0)
    assert e.value.field == "fps"
    with pytest.raises(InvalidInputError) as e:
        pv.plan_file(total_frames=30, video_fps=10.0, height=96, width=128, max_frames=1)
    assert e.value.field == "max_frames"
    with pytest.raises(InvalidInputError) as e:
        _native.preprocess_video_frames(np.zeros((3, 32, 32, 3), np.uint8), resized_height=32, resized_width=32)
    assert e.value.field == "frames"
    with pytest.raises(InvalidInputError) as e:
        _native.preprocess_video_frames(np.zeros((2, 32, 32), np.uint8), resized_height=32, resized_width=32)
    assert e.value.field == "frames"
    with pytest.raises(InvalidInputError):
        pv.preprocess_frame_list([])
    with pytest.raises(InvalidInputError):
        pv.preprocess_frame_list([np.zeros((64, 64, 3), np.uint8), np.zeros((64, 200, 3), np.uint8)])


def test_frame_list_of_arrays_equals_frame_list_of_paths():
    c = next(c for c in CASES if c["frames"] and "fl8" in c["frames"][0])
    from PIL import Image

    arrays = [np.asarray(Image.open(GOLDEN / f).convert("RGB")) for f in c["frames"]]
    a = pv.preprocess_frame_list(arrays)
    b = pv.preprocess_frame_list([str(GOLDEN / f) for f in c["frames"]])
    assert a.plan == b.plan and np.array_equal(a.pixel_values, b.pixel_values)
