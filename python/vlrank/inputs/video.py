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

__all__ = ["VideoDecodeError", "VideoTooLongError", "VideoInfo", "probe", "decode_frames", "decode_all",
           "check_decode_work", "MAX_DECODED_FRAMES", "MAX_DECODED_PIXELS"]

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


#: Decode work one video may ask for: every frame of the stream is decoded (the reference reads them all, in
#: pts order), so the bound is on the whole stream, checked from the header before decoding and again while
#: decoding (a header can lie). 18,000 frames is 10 minutes at 30 fps; 18,000 frames of 1920x1080 is the pixel
#: bound (PyAV decodes a few hundred 1080p frames/s on two cores: minutes, not hours).
MAX_DECODED_FRAMES = 18_000
MAX_DECODED_PIXELS = 18_000 * 1920 * 1080


class VideoTooLongError(VideoDecodeError):
    """A video whose stream holds more frames or pixels than one call may decode."""


def check_decode_work(frames: int, height: int, width: int, *, name: str) -> None:
    """Refuse a stream of ``frames`` frames of ``width`` x ``height`` over the decode-work bounds."""
    if frames <= MAX_DECODED_FRAMES and frames * height * width <= MAX_DECODED_PIXELS:
        return
    raise VideoTooLongError(
        f"{name}: the stream holds {frames} frames of {width}x{height}; decoding is bounded at "
        f"{MAX_DECODED_FRAMES} frames and {MAX_DECODED_PIXELS / 1e9:.1f} G pixels (10 minutes of 1080p at 30 fps) "
        'per video; pass a shorter clip, or its sampled frames as a frame list ({"type": "video", "video": [...]})',
        field=name)


def decode_frames(source: VideoSource, indices: Sequence[int] | None = None, *, name: str = "video",
                  max_frames_held: int = 768) -> tuple[np.ndarray, float, int]:
    """Decode the first video stream; returns (frames uint8 (T, H, W, 3), video_fps, total_frames).

    Frames are ordered by pts. With ``indices`` (positions in that order, as sampling computes
    them from ``total_frames``), only those frames are converted to RGB and kept, in the order
    given; otherwise every frame is kept. More than ``max_frames_held`` kept frames is refused, and
    a stream past ``MAX_DECODED_FRAMES`` / ``MAX_DECODED_PIXELS`` is a ``VideoTooLongError``.
    One pass when the decoder hands frames out in pts order (what decoders do for well-formed
    files): the frames at the asked positions are kept as they come. A stream whose pts go back
    needs every frame's pts before its order is known, so it is decoded a second time to keep.
    """
    av = _av()
    if indices is not None:
        idx = [int(i) for i in indices]
        if len(idx) > max_frames_held:
            raise InvalidInputError(f"{name}: {len(idx)} frames requested, more than the {max_frames_held} allowed; pass a smaller max_frames or fps")
    else:
        idx = None
    want: dict[int, list[int]] = {}
    for out_pos, i in enumerate(idx or []):
        want.setdefault(i, []).append(out_pos)
    out: np.ndarray | None = None
    in_order = True
    pts: list[int] = []
    with _open(av, source, name) as c:
        st = _stream(c, name)
        fps = float(st.average_rate) if st.average_rate is not None else 0.0
        for k, frame in enumerate(_decoded(av, c, st, name)):
            p = frame.pts if frame.pts is not None else k
            in_order = in_order and (not pts or p > pts[-1])
            pts.append(p)
            if k >= MAX_DECODED_FRAMES or k * frame.width * frame.height > MAX_DECODED_PIXELS:
                check_decode_work(k + 1, frame.height, frame.width, name=name)
            if in_order and k in want:  # kept at once; dropped again below if the order turns out otherwise
                out = _keep(out, frame, want[k], len(idx), k, name)
    if not pts:
        raise VideoDecodeError(f"{name}: the video stream has no decodable frames; pass a video with at least 2 frames")
    total = len(pts)
    if idx is None:
        if total > max_frames_held:
            raise InvalidInputError(f"{name}: {total} frames exceed the {max_frames_held} frames allowed in memory; pass frame indices")
        idx = list(range(total))
        want = {i: [i] for i in idx}
        in_order, out = False, None  # nothing was kept: the second pass keeps them all
    bad = [i for i in idx if not 0 <= i < total]
    if bad:
        raise VideoDecodeError(f"{name}: frame index {bad[0]} is out of range: only {total} frames decode (a truncated "
                               "or corrupt file, or a header that says more); pass a complete file")
    if in_order:
        return out, fps, total
    out = None
    order = sorted(range(total), key=lambda k: pts[k])  # decode position of the k-th frame in pts order
    by_decode = {}
    for i, positions in want.items():
        by_decode.setdefault(order[i], []).extend(positions)
    last, k = max(by_decode), -1
    with _open(av, source, name) as c:
        st = _stream(c, name)
        for k, frame in enumerate(_decoded(av, c, st, name)):
            if k in by_decode:
                out = _keep(out, frame, by_decode[k], len(idx), k, name)
            if k >= last:
                break
    if out is None or k < last:
        raise VideoDecodeError(f"{name}: the video changed between reads; pass the bytes of a stable file")
    return out, fps, total


def _keep(out: np.ndarray | None, frame, positions: list[int], n: int, k: int, name: str) -> np.ndarray:
    """Frame ``k`` as RGB into ``positions`` of one (n, H, W, 3) array, allocated at the first kept frame: the
    kept frames are held once, never as a list plus a stack."""
    arr = frame.to_rgb().to_ndarray()
    if out is None:
        out = np.empty((n,) + arr.shape, np.uint8)
    if arr.shape != out.shape[1:]:
        raise VideoDecodeError(f"{name}: frame {k} is {arr.shape[1]}x{arr.shape[0]} but the first kept "
                               f"frame is {out.shape[2]}x{out.shape[1]}; pass a video of one frame size")
    for p in positions:
        out[p] = arr
    return out


def decode_all(source: VideoSource, *, name: str = "video", max_frames_held: int = 768) -> tuple[np.ndarray, float]:
    """Every frame in pts order and the stream's average rate (torchvision ``read_video`` semantics)."""
    frames, fps, _ = decode_frames(source, None, name=name, max_frames_held=max_frames_held)
    return frames, fps
