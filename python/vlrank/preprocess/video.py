"""Video preprocessing, exact to the Qwen3-VL reference (golden README, Video).

A file video is probed (header only), planned (sampled frames, sizes, grid, tokens, timestamps),
decoded keeping only the sampled frames (PyAV, ``inputs/video.py``) and turned into the video
processor's rows natively. A frame list is planned from its length and first frame's size, each
kept frame goes through the image decoder and the factor-64 first resize, then the same second
resize and rows. Pixel work runs in Rust with the GIL released.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from vlrank import _native
from vlrank.errors import InvalidInputError
from vlrank.inputs import video as video_io
from vlrank.preprocess.images import _native_source

__all__ = ["VideoPlan", "PreprocessedVideo", "plan_file", "plan_frame_list", "preprocess_video_file",
           "preprocess_frame_list", "DEFAULT_FPS", "DEFAULT_MAX_FRAMES"]

DEFAULT_FPS = 1.0
DEFAULT_MAX_FRAMES = 64


@dataclass(frozen=True)
class VideoPlan:
    """Everything known about a video before its pixels (the golden ``video_pixels.json`` fields)."""

    frames: list[int]  # positions into the decoded frames / the frame list, padded to even
    frames_indices: list[int]  # metadata indices behind the timestamps
    metadata_fps: float
    sample_fps: float
    pre_height: int  # size before the second resize: decoded (files) or fetched (frame lists)
    pre_width: int
    resized_height: int
    resized_width: int
    min_pixels: int
    total_pixels: float
    max_pixels: float
    grid_thw: tuple[int, int, int]
    tokens_per_group: int  # <|video_pad|> tokens per frame pair
    num_pads: int
    num_tokens: int  # the whole video in the transformers 5.24 layout
    timestamps: list[float]
    timestamp_text: list[str]


@dataclass(frozen=True)
class PreprocessedVideo:
    pixel_values: np.ndarray  # (N, 1536) float32, pairs in order
    grid_thw: tuple[int, int, int]
    plan: VideoPlan


def _plan(d: dict) -> VideoPlan:
    return VideoPlan(**{k: d[k] for k in VideoPlan.__dataclass_fields__})


def _check_options(fps: float, max_frames: int, min_pixels: int | None, total_pixels: float | None) -> None:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)):
        raise InvalidInputError(f"fps: got {type(fps).__name__}; pass a number of frames per second > 0", field="fps")
    if isinstance(max_frames, bool) or not isinstance(max_frames, int):
        raise InvalidInputError(f"max_frames: got {type(max_frames).__name__}; pass an int >= 2", field="max_frames")
    if max_frames < 2:
        raise InvalidInputError(f"max_frames: got {max_frames}; pass an int >= 2 (frames go in pairs)", field="max_frames")
    if min_pixels is not None and (isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or min_pixels < 1):
        raise InvalidInputError(f"min_pixels: got {min_pixels!r}; pass an int >= 1 or None", field="min_pixels")
    if total_pixels is not None and (isinstance(total_pixels, bool) or not isinstance(total_pixels, (int, float))):
        raise InvalidInputError(f"total_pixels: got {total_pixels!r}; pass a number > 0 or None", field="total_pixels")


def plan_file(*, total_frames: int, video_fps: float, height: int, width: int, fps: float = DEFAULT_FPS,
              max_frames: int = DEFAULT_MAX_FRAMES, min_pixels: int | None = None,
              total_pixels: float | None = None, max_tokens: int | None = None) -> VideoPlan:
    """Plan of a file video from its header facts; over ``max_tokens`` raises ContextTooLongError."""
    _check_options(fps, max_frames, min_pixels, total_pixels)
    return _plan(_native.video_plan_file(
        total_frames=total_frames, video_fps=video_fps, height=height, width=width, fps=float(fps),
        max_frames=max_frames, min_pixels=min_pixels,
        total_pixels=None if total_pixels is None else float(total_pixels), max_tokens=max_tokens))


def plan_frame_list(*, num_frames: int, height: int, width: int, min_pixels: int | None = None,
                    total_pixels: float | None = None) -> VideoPlan:
    """Plan of a frame list of ``num_frames`` frames whose first frame is ``height`` x ``width``."""
    _check_options(DEFAULT_FPS, DEFAULT_MAX_FRAMES, min_pixels, total_pixels)
    return _plan(_native.video_plan_frames(
        num_frames=num_frames, height=height, width=width, min_pixels=min_pixels,
        total_pixels=None if total_pixels is None else float(total_pixels)))


def _rows(frames: np.ndarray, plan: VideoPlan) -> PreprocessedVideo:
    pv, grid = _native.preprocess_video_frames(
        np.ascontiguousarray(frames), resized_height=plan.resized_height, resized_width=plan.resized_width)
    return PreprocessedVideo(pixel_values=pv, grid_thw=tuple(grid), plan=plan)


def preprocess_video_file(source: video_io.VideoSource, *, fps: float = DEFAULT_FPS,
                          max_frames: int = DEFAULT_MAX_FRAMES, min_pixels: int | None = None,
                          total_pixels: float | None = None, max_tokens: int | None = None,
                          name: str = "video") -> PreprocessedVideo:
    """Probe, plan (refusing from the header a video over ``max_tokens``), decode only the sampled
    frames, second resize and rows. Where the header's frame count is an estimate (WebM) or wrong,
    the decoder's count is the truth: the plan is redone with it and the frames decoded again."""
    info = video_io.probe(source, name=name)
    video_io.check_decode_work(info.frames, info.height, info.width, name=name)
    opts = dict(fps=fps, max_frames=max_frames, min_pixels=min_pixels, total_pixels=total_pixels, max_tokens=max_tokens)
    plan = plan_file(total_frames=info.frames, video_fps=info.fps, height=info.height, width=info.width, **opts)
    frames, video_fps, total = video_io.decode_frames(source, _clamped(plan.frames, info.frames), name=name)
    if total != info.frames or video_fps != info.fps:
        plan = plan_file(total_frames=total, video_fps=video_fps, height=info.height, width=info.width, **opts)
        frames, _, _ = video_io.decode_frames(source, plan.frames, name=name)
    return _rows(frames, plan)


def _clamped(indices: Sequence[int], total: int) -> list[int]:
    # A header count above the real one would ask for frames past the end: ask for the last one
    # instead; the decoder's count then differs and the plan is redone.
    return [min(i, max(total - 1, 0)) for i in indices]


def _frame_size(src: Any, field: str) -> tuple[int, int]:
    if isinstance(src, np.ndarray):
        if src.ndim not in (2, 3):
            raise InvalidInputError(f"{field}: image array of shape {src.shape}; pass (H, W) or (H, W, C)", field=field)
        return int(src.shape[0]), int(src.shape[1])
    _, width, height = _native.probe_images([src], field=field)[0]
    return int(height), int(width)


def preprocess_frame_list(frames: Sequence[Any], *, min_pixels: int | None = None,
                          total_pixels: float | None = None, name: str = "video") -> PreprocessedVideo:
    """A video given as its frames (paths, bytes, PIL images or uint8 arrays), as the official
    ``video`` list: subsampled to 64, each frame fetched at factor 64, padded to even, resized."""
    if isinstance(frames, (str, bytes, bytearray)) or not isinstance(frames, Sequence) or len(frames) == 0:
        raise InvalidInputError(f"{name}: pass a non-empty list of frames (paths, bytes, PIL images or arrays)", field=name)
    natives = [_native_source(f, f"{name}[{i}]") for i, f in enumerate(frames)]
    height, width = _frame_size(natives[0], f"{name}[0]")
    plan = plan_frame_list(num_frames=len(natives), height=height, width=width, min_pixels=min_pixels,
                           total_pixels=total_pixels)
    fetched = _native.fetch_video_frames([natives[i] for i in plan.frames], min_pixels=min_pixels, field=name)
    return _rows(fetched, plan)
