"""Video decoding with PyAV (the FFmpeg binding torchvision's reader uses), as the reference does it.

Rules (golden README, Video): all frames of the first video stream, decoded from the start and
ordered by pts; ``video_fps = float(stream.average_rate)``; RGB by ``frame.to_rgb()`` (swscale,
rgb24). ``probe`` reads only the container header so that token counts and budgets are known
before any frame is decoded; ``decode_frames`` keeps only the frames that sampling asked for and
never holds more than ``max_frames_held`` decoded frames.

PyAV is the optional extra ``vlrank[video]``; without it every function raises
``MissingExtraError`` (a ``RuntimeUnavailableError``) with the one line to install it.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from vlrank.errors import InvalidInputError
from vlrank.extras import MissingExtraError

__all__ = ["VideoDecodeError", "VideoInfo", "probe", "decode_frames", "decode_all"]

VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview]


class VideoDecodeError(InvalidInputError):
    """A video container could not be read: corrupt, truncated, no video stream, or no frames."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says about its first video stream."""

    frames: int  # the stream's recorded frame count, else round(duration * fps) (see frames_exact)
    fps: float  # float(stream.average_rate)
    width: int
    height: int
    duration: float  # seconds; 0.0 when unknown
    codec: str
    frames_exact: bool  # False when the container (e.g. WebM) records no frame count: an estimate


def _av():
    try:
        import av  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError('video input needs the video extra: pip install "vlrank[video]" (PyAV)',
                                field="video") from e
    return av


def _open(av, source: VideoSource, name: str):
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise VideoDecodeError(f"{name}: the video is empty (0 bytes); pass a complete video file")
        f = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.startswith("file://"):
            path = path[len("file://"):]
        if not os.path.isfile(path):
            raise InvalidInputError(f"{name}: no video file at {path!r}; pass an existing path, a URL or the bytes")
        f = path
    else:
        raise InvalidInputError(f"{name}: cannot read a video from {type(source).__name__}; pass a path, file:// URL or bytes")
    try:
        return av.open(f, metadata_errors="ignore")
    except av.FFmpegError as e:
        raise VideoDecodeError(f"{name}: not a readable video container ({e}); pass a complete MP4, WebM, MKV or AVI file") from e


def _stream(container, name: str):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoDecodeError(f"{name}: the container has no video stream (streams: {', '.join(kinds)}); pass a file with video")
    return container.streams.video[0]


def _info(st, container) -> VideoInfo:
    rate = st.average_rate
    fps = float(rate) if rate is not None else 0.0
    if st.duration is not None and st.time_base is not None:
        duration = float(st.duration * st.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = 0.0
    cc = st.codec_context
    recorded = int(st.frames or 0)
    frames = recorded if recorded > 0 else int(round(duration * fps))
    return VideoInfo(frames=frames, fps=fps, width=int(cc.width), height=int(cc.height),
                     duration=duration, codec=str(cc.name), frames_exact=recorded > 0)


def probe(source: VideoSource, *, name: str = "video") -> VideoInfo:
    """Header-only facts of the first video stream; no frame is decoded."""
    av = _av()
    with _open(av, source, name) as c:
        return _info(_stream(c, name), c)


def _decoded(av, c, st, name: str):
    """Yield decoded frames of the stream from the start; decoding errors past the first frame end
    the stream (as torchvision's reader), before it they are a corrupt file."""
    st.thread_type = "AUTO"
    got = False
    try:
        for frame in c.decode(st):
            got = True
            yield frame
    except av.FFmpegError as e:
        if not got:
            raise VideoDecodeError(f"{name}: cannot decode the video stream ({e}); pass a complete, uncorrupted file") from e


def decode_frames(source: VideoSource, indices: Sequence[int] | None = None, *, name: str = "video",
                  max_frames_held: int = 768) -> tuple[np.ndarray, float, int]:
    """Decode the first video stream; returns (frames uint8 (T, H, W, 3), video_fps, total_frames).

    Frames are ordered by pts. With ``indices`` (positions in that order, as sampling computes
    them from ``total_frames``), only those frames are converted to RGB and kept, in the order
    given; otherwise every frame is kept. More than ``max_frames_held`` kept frames is refused.
    Streams whose pts are not increasing are reordered, which needs every frame's pts first, so
    the stream is decoded once to count and order and a second time to keep.
    """
    av = _av()
    if indices is not None:
        idx = [int(i) for i in indices]
        if len(idx) > max_frames_held:
            raise InvalidInputError(f"{name}: {len(idx)} frames requested, more than the {max_frames_held} allowed; pass a smaller max_frames or fps")
    with _open(av, source, name) as c:
        st = _stream(c, name)
        fps = float(st.average_rate) if st.average_rate is not None else 0.0
        pts = [f.pts if f.pts is not None else k for k, f in enumerate(_decoded(av, c, st, name))]
    if not pts:
        raise VideoDecodeError(f"{name}: the video stream has no decodable frames; pass a video with at least 2 frames")
    order = sorted(range(len(pts)), key=lambda k: pts[k])  # decode position of the k-th frame in pts order
    total = len(order)
    if indices is None:
        if total > max_frames_held:
            raise InvalidInputError(f"{name}: {total} frames exceed the {max_frames_held} frames allowed in memory; pass frame indices")
        idx = list(range(total))
    bad = [i for i in idx if not 0 <= i < total]
    if bad:
        raise VideoDecodeError(f"{name}: frame index {bad[0]} is out of range: only {total} frames decode (a truncated "
                               "or corrupt file, or a header that says more); pass a complete file")
    want: dict[int, list[int]] = {}
    for out_pos, i in enumerate(idx):
        want.setdefault(order[i], []).append(out_pos)
    # One (T, H, W, 3) array filled in place: the kept frames are held once, never as a list plus a stack.
    out: np.ndarray | None = None
    filled = 0
    with _open(av, source, name) as c:
        st = _stream(c, name)
        for k, frame in enumerate(_decoded(av, c, st, name)):
            if k in want:
                arr = frame.to_rgb().to_ndarray()
                if out is None:
                    out = np.empty((len(idx),) + arr.shape, np.uint8)
                if arr.shape != out.shape[1:]:
                    raise VideoDecodeError(f"{name}: frame {k} is {arr.shape[1]}x{arr.shape[0]} but the first kept "
                                           f"frame is {out.shape[2]}x{out.shape[1]}; pass a video of one frame size")
                for p in want[k]:
                    out[p] = arr
                    filled += 1
            if k >= max(want):
                break
    if out is None or filled != len(idx):
        raise VideoDecodeError(f"{name}: the video changed between reads; pass the bytes of a stable file")
    return out, fps, total


def decode_all(source: VideoSource, *, name: str = "video", max_frames_held: int = 768) -> tuple[np.ndarray, float]:
    """Every frame in pts order and the stream's average rate (torchvision ``read_video`` semantics)."""
    frames, fps, _ = decode_frames(source, None, name=name, max_frames_held=max_frames_held)
    return frames, fps
