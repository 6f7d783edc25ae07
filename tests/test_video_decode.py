"""PyAV decoding against the golden videos (golden README, Video): decoded frames within a few
levels of the reference's (other FFmpeg builds may differ slightly in swscale), header fields
exact, and typed errors for bad containers."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

import av  # the test extra installs PyAV (vlrank[video])

from PIL import Image  # noqa: E402

from vlrank.errors import InvalidInputError  # noqa: E402
from vlrank.inputs.video import VideoDecodeError, decode_all, decode_frames, probe  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = [c for c in json.loads((GOLDEN / "cases" / "video_pixels.json").read_text()) if c["source"] == "file"]


def _stacked(rel: str, h: int) -> np.ndarray:
    a = np.asarray(Image.open(GOLDEN / rel).convert("RGB"))
    return a.reshape(-1, h, a.shape[1], 3)


@pytest.mark.parametrize("case", CASES, ids=[c["video"] for c in CASES])
def test_header_probe_is_exact(case):
    info = probe(GOLDEN / case["video"])
    assert (info.frames, info.fps) == (case["decoded_frames"], case["video_fps"])
    # WebM records no frame count: the probe estimates it from duration x fps and says so.
    assert info.frames_exact == (not case["video"].endswith(".webm"))
    assert (info.height, info.width) == (case["decoded_height"], case["decoded_width"])
    assert info.duration > 0


@pytest.mark.parametrize("case", CASES, ids=[c["video"] for c in CASES])
def test_sampled_frames_match_reference_decode(case):
    frames, fps, total = decode_frames(GOLDEN / case["video"], case["frames_indices"])
    assert (total, fps) == (case["decoded_frames"], case["video_fps"])
    want = _stacked(case["decoded_frames_png"], case["decoded_height"])
    assert frames.dtype == np.uint8 and frames.shape == want.shape
    diff = np.abs(frames.astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= 3, diff.max()
    assert diff.mean() < 0.05


def test_bytes_and_path_decode_the_same_and_all_frames_are_in_pts_order():
    case = CASES[0]
    path = GOLDEN / case["video"]
    a, fps_a = decode_all(path)
    b, fps_b = decode_all(path.read_bytes())
    assert a.shape[0] == case["decoded_frames"] and fps_a == fps_b == case["video_fps"]
    assert np.array_equal(a, b)
    sub, _, _ = decode_frames(path, [3, 0, 3])
    assert np.array_equal(sub, a[[3, 0, 3]])


def test_corrupt_and_truncated_containers_are_typed_errors():
    with pytest.raises(VideoDecodeError, match="not a readable video"):
        probe(b"this is not a video at all" * 10)
    with pytest.raises(VideoDecodeError, match="empty"):
        probe(b"")
    data = (GOLDEN / CASES[0]["video"]).read_bytes()
    with pytest.raises(VideoDecodeError):
        decode_all(data[:300])
    with pytest.raises(InvalidInputError, match="no video file"):
        probe("/nonexistent/clip.mp4")


def test_audio_only_and_zero_frame_files_are_typed_errors(tmp_path):
    wav = tmp_path / "tone.wav"
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(VideoDecodeError, match="no video stream"):
        probe(wav)
    empty = tmp_path / "empty.mkv"
    c = av.open(str(empty), "w")
    s = c.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    c.start_encoding()  # writes the header of a stream that gets no frames
    for p in s.encode():
        c.mux(p)
    c.close()
    # FFmpeg cannot even open a container whose only stream never got a packet: still typed.
    with pytest.raises(VideoDecodeError):
        decode_all(empty)


def test_frame_budget_is_enforced_before_keeping_frames():
    path = GOLDEN / CASES[0]["video"]
    with pytest.raises(InvalidInputError, match="allowed"):
        decode_frames(path, list(range(10)), max_frames_held=4)
    with pytest.raises(InvalidInputError, match="allowed"):
        decode_all(path, max_frames_held=4)
    with pytest.raises(InvalidInputError, match="out of range"):
        decode_frames(path, [10_000])
