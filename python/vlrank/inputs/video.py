"""Video decoding with PyAV (the FFmpeg binding torchvision's reader uses), as the reference does it.

Rules (golden README, Video): all frames of the first video stream, decoded from the start and
ordered by pts; ``video_fps = float(stream.average_rate)``; RGB by ``frame.to_rgb()`` (swscale,
rgb24). ``probe`` reads only the container header so that token counts and budgets are known
before any frame is decoded; ``decode_frames`` keeps only the frames that sampling asked for and
never holds more than ``max_frames_held`` decoded frames.

Only real video containers reach FFmpeg: the container is sniffed from the first bytes
(``ACCEPTED_CONTAINERS``) and opened with that demuxer named, from bytes or an open file (never by name),
with no protocol allowed for nested opens; each probe and each decode runs under a wall-clock bound
(``MAX_DECODE_SECONDS``, keyword ``max_seconds``).

PyAV is the optional extra ``vlrank[video]``; without it every function raises
``MissingExtraError`` (a ``RuntimeUnavailableError``) with the one line to install it.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np

from vlrank.errors import InvalidInputError, VlrankError
from vlrank.extras import MissingExtraError

__all__ = ["VideoDecodeError", "VideoTooLongError", "VideoInfo", "probe", "decode_frames", "decode_all",
           "check_decode_work", "sniff_container", "check_container", "ACCEPTED_CONTAINERS", "MAX_DECODED_FRAMES",
           "MAX_DECODED_PIXELS", "MAX_DECODE_SECONDS"]

VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview]


class VideoDecodeError(InvalidInputError):
    """A video container could not be read: not an accepted container, corrupt, truncated, no video stream,
    or no frames."""


class VideoTooLongError(VideoDecodeError):
    """A video whose stream holds more frames or pixels than one call may decode, or that takes longer than
    the per-video time bound to read."""


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


#: The containers a video may be. Its first bytes name the container and FFmpeg is handed that demuxer by
#: name, never left to probe: FFmpeg's probing also takes SDP (it binds the UDP ports the text names and
#: waits), ffconcat / HLS / DASH playlists (they open other files and URLs), image sequences and raw streams.
ACCEPTED_CONTAINERS = "MP4/MOV, Matroska/WebM (MKV), AVI, MPEG-TS or GIF"
#: Bytes the sniff looks at: MPEG-TS is recognised by the sync byte of its first three 188-byte packets.
SNIFF_BYTES = 512
_BMFF_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
_TS_PACKET = 188
# Nothing but the bytes vlrank hands FFmpeg may be read: an empty protocol whitelist refuses every nested
# open (file, http, udp, ...) a demuxer attempts, and MOV's external data references stay off.
_NO_PROTOCOLS = {"protocol_whitelist": ""}
_DEMUXER_OPTIONS = {"mov": {"enable_drefs": "0", "use_absolute_path": "0"}}


def sniff_container(head: bytes | bytearray | memoryview) -> str | None:
    """The FFmpeg demuxer of a video container from its first bytes (``SNIFF_BYTES`` of them; fewer for a
    short file), or None when they are no container vlrank reads."""
    head = bytes(head[:SNIFF_BYTES])
    if head[4:8] in _BMFF_BOXES:  # ISO BMFF / QuickTime: a box type after the first box's 32-bit size
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska and WebM
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(head) > 2 * _TS_PACKET and head[0] == head[_TS_PACKET] == head[2 * _TS_PACKET] == 0x47:
        return "mpegts"
    return None


_LABELS = {"mov": "MP4/MOV", "matroska": "Matroska/WebM", "avi": "AVI", "mpegts": "MPEG-TS", "gif": "GIF"}


def _audio_kind(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "WAV"
    if head.startswith((b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")):
        return "MP3"
    if head.startswith(b"fLaC"):
        return "FLAC"
    return None


def check_container(head: bytes | bytearray | memoryview, *, name: str) -> str:
    """The demuxer of a video whose first bytes are ``head``; anything else is a VideoDecodeError naming ``name``."""
    fmt = sniff_container(head)
    if fmt is not None:
        return fmt
    head = bytes(head[:16])
    audio = _audio_kind(head)
    if audio is not None:
        raise VideoDecodeError(f"{name}: not a readable video: a {audio} audio file has no video stream; pass an "
                               f"{ACCEPTED_CONTAINERS} file with a video stream", field=name)
    raise VideoDecodeError(f"{name}: not a readable video: its first bytes {head[:8]!r} are none of the accepted "
                           f"containers; pass an {ACCEPTED_CONTAINERS} file (playlists, SDP, concat lists and image "
                           "sequences are refused)", field=name)


#: Wall-clock seconds one video may take to open and probe, and separately to decode (each call of ``probe`` /
#: ``decode_frames``; both decode passes of one call share it), so that no input holds its thread longer.
#: Measured on the 2-core dev machine under load (load average ~8): 18,000 black 1080p H.264 frames (the frame
#: and pixel bounds below) decode in 57 s (20.6 s on a quiet one, issue 23), VP8 WebM ~34 s; the default is
#: twice the loaded figure, room for real content without letting one video hold a thread for minutes.
MAX_DECODE_SECONDS = 120.0


class _Clock:
    """The deadline of one probe or decode call."""

    def __init__(self, max_seconds: float, name: str) -> None:
        if (isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float))
                or (isinstance(max_seconds, float) and not math.isfinite(max_seconds))
                or not 0 < max_seconds <= 86_400):
            raise InvalidInputError(f"max_seconds: got {max_seconds!r}; pass a number of seconds from 0 (exclusive) "
                                    "to 86400", field="max_seconds")
        self.limit, self.name = float(max_seconds), name
        self.deadline = time.monotonic() + self.limit

    def left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def error(self) -> VideoDecodeError:
        return VideoTooLongError(
            f"{self.name}: reading the video took more than {self.limit:g} s, the per-video time bound "
            "(MAX_DECODE_SECONDS; library: max_seconds=); pass a shorter or smaller clip, or its sampled frames as "
            'a frame list ({"type": "video", "video": [...]})', field=self.name)

    def check(self) -> None:
        if self.expired():
            raise self.error()


def _refuse_nested(url: str, flags: int, options: dict) -> None:
    # FFmpeg's io_open hook: a demuxer asking to open another file or URL gets nothing (the URL is not echoed:
    # whether some other path exists is none of the sender's business).
    raise PermissionError("a nested open was refused")


def _failed(exc: BaseException, clock: _Clock, name: str, fmt: str) -> VideoDecodeError:
    if clock.expired():
        return clock.error()
    why = getattr(exc, "strerror", None) or type(exc).__name__
    return VideoDecodeError(f"{name}: not a readable video ({_LABELS[fmt]}: {why}); pass a complete, uncorrupted "
                            f"{ACCEPTED_CONTAINERS} file", field=name)


@contextlib.contextmanager
def _opened(av, source: VideoSource, name: str, clock: _Clock) -> Iterator[Any]:
    """The container of ``source`` opened with its sniffed demuxer (see ``ACCEPTED_CONTAINERS``), closed after."""
    fh = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise VideoDecodeError(f"{name}: the video is empty (0 bytes); pass a complete video file", field=name)
        fmt = check_container(source, name=name)
        f: Any = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.startswith("file://"):
            path = path[len("file://"):]
        if not os.path.isfile(path):
            raise InvalidInputError(f"{name}: no video file at {path!r}; pass an existing path, a URL or the bytes",
                                    field=name)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below; FFmpeg reads it through Python, never by name
            head = fh.read(SNIFF_BYTES)
            fh.seek(0)
        except OSError as e:
            if fh is not None:
                fh.close()
            raise InvalidInputError(f"{name}: cannot read {path!r} ({e.strerror or e}); pass a readable video file",
                                    field=name) from e
        try:
            fmt = check_container(head, name=name)
        except VideoDecodeError:
            fh.close()
            raise
        f = fh
    else:
        raise InvalidInputError(f"{name}: cannot read a video from {type(source).__name__}; pass a path, file:// URL "
                                "or bytes", field=name)
    try:
        left = clock.left()
        container = av.open(f, format=fmt, container_options={**_NO_PROTOCOLS, **_DEMUXER_OPTIONS.get(fmt, {})},
                            timeout=(left, left), io_open=_refuse_nested, metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError, EOFError, RuntimeError) as e:
        if fh is not None:
            fh.close()
        raise _failed(e, clock, name, fmt) from e
    try:
        clock.check()  # FFmpeg's interrupt callback cuts a slow open; one that ended past the bound counts too
        yield container
    finally:
        container.close()
        if fh is not None:
            fh.close()


def _stream(container, name: str):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoDecodeError(f"{name}: the container has no video stream (streams: {', '.join(kinds)}); pass a "
                               "file with video", field=name)
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


def probe(source: VideoSource, *, name: str = "video", max_seconds: float = MAX_DECODE_SECONDS) -> VideoInfo:
    """Header-only facts of the first video stream; no frame is decoded. Opening and probing take at most
    ``max_seconds`` (else a ``VideoTooLongError``)."""
    av = _av()
    clock = _Clock(max_seconds, name)
    with _opened(av, source, name, clock) as c:
        return _info(_stream(c, name), c)


def _decoded(av, c, st, name: str, clock: _Clock):
    """Yield decoded frames of the stream from the start; decoding errors past the first frame end
    the stream (as torchvision's reader), before it they are a corrupt file. The clock is checked at every
    packet read, of any stream, so a file of packets that decode to nothing cannot run past it either."""
    st.thread_type = "AUTO"
    got = False
    try:
        for packet in c.demux():
            clock.check()
            if packet.stream.index != st.index:
                continue
            for frame in packet.decode():
                got = True
                yield frame
    except (av.FFmpegError, OSError, ValueError, EOFError, RuntimeError) as e:
        if isinstance(e, VlrankError):
            raise
        if clock.expired():
            raise clock.error() from e
        if not got:
            raise VideoDecodeError(f"{name}: cannot decode the video stream "
                                   f"({getattr(e, 'strerror', None) or type(e).__name__}); pass a complete, "
                                   "uncorrupted file", field=name) from e


#: Decode work one video may ask for: every frame of the stream is decoded (the reference reads them all, in
#: pts order), so the bound is on the whole stream, checked from the header before decoding and again while
#: decoding (a header can lie). 18,000 frames is 10 minutes at 30 fps; 18,000 frames of 1920x1080 is the pixel
#: bound (PyAV decodes a few hundred 1080p frames/s on two cores: minutes, not hours).
MAX_DECODED_FRAMES = 18_000
MAX_DECODED_PIXELS = 18_000 * 1920 * 1080


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
                  max_frames_held: int = 768, max_seconds: float = MAX_DECODE_SECONDS) -> tuple[np.ndarray, float, int]:
    """Decode the first video stream; returns (frames uint8 (T, H, W, 3), video_fps, total_frames).

    Frames are ordered by pts. With ``indices`` (positions in that order, as sampling computes
    them from ``total_frames``), only those frames are converted to RGB and kept, in the order
    given; otherwise every frame is kept. More than ``max_frames_held`` kept frames is refused, and
    a stream past ``MAX_DECODED_FRAMES`` / ``MAX_DECODED_PIXELS`` is a ``VideoTooLongError``.
    One pass when the decoder hands frames out in pts order (what decoders do for well-formed
    files): the frames at the asked positions are kept as they come. A stream whose pts go back
    needs every frame's pts before its order is known, so it is decoded a second time to keep.
    Both passes together take at most ``max_seconds`` (else a ``VideoTooLongError``).
    """
    av = _av()
    clock = _Clock(max_seconds, name)
    if indices is not None:
        idx = [int(i) for i in indices]
        if len(idx) > max_frames_held:
            raise InvalidInputError(f"{name}: {len(idx)} frames requested, more than the {max_frames_held} allowed; "
                                    "pass a smaller max_frames or fps", field=name)
    else:
        idx = None
    want: dict[int, list[int]] = {}
    for out_pos, i in enumerate(idx or []):
        want.setdefault(i, []).append(out_pos)
    out: np.ndarray | None = None
    in_order = True
    pts: list[int] = []
    with _opened(av, source, name, clock) as c:
        st = _stream(c, name)
        fps = float(st.average_rate) if st.average_rate is not None else 0.0
        for k, frame in enumerate(_decoded(av, c, st, name, clock)):
            p = frame.pts if frame.pts is not None else k
            in_order = in_order and (not pts or p > pts[-1])
            pts.append(p)
            if k >= MAX_DECODED_FRAMES or k * frame.width * frame.height > MAX_DECODED_PIXELS:
                check_decode_work(k + 1, frame.height, frame.width, name=name)
            if in_order and k in want:  # kept at once; dropped again below if the order turns out otherwise
                out = _keep(out, frame, want[k], len(idx), k, name)
    if not pts:
        raise VideoDecodeError(f"{name}: the video stream has no decodable frames; pass a video with at least 2 frames",
                               field=name)
    total = len(pts)
    if idx is None:
        if total > max_frames_held:
            raise InvalidInputError(f"{name}: {total} frames exceed the {max_frames_held} frames allowed in memory; "
                                    "pass frame indices", field=name)
        idx = list(range(total))
        want = {i: [i] for i in idx}
        in_order, out = False, None  # nothing was kept: the second pass keeps them all
    bad = [i for i in idx if not 0 <= i < total]
    if bad:
        raise VideoDecodeError(f"{name}: frame index {bad[0]} is out of range: only {total} frames decode (a truncated "
                               "or corrupt file, or a header that says more); pass a complete file", field=name)
    if in_order:
        return out, fps, total
    out = None
    order = sorted(range(total), key=lambda k: pts[k])  # decode position of the k-th frame in pts order
    by_decode = {}
    for i, positions in want.items():
        by_decode.setdefault(order[i], []).extend(positions)
    last, k = max(by_decode), -1
    with _opened(av, source, name, clock) as c:
        st = _stream(c, name)
        for k, frame in enumerate(_decoded(av, c, st, name, clock)):
            if k in by_decode:
                out = _keep(out, frame, by_decode[k], len(idx), k, name)
            if k >= last:
                break
    if out is None or k < last:
        raise VideoDecodeError(f"{name}: the video changed between reads; pass the bytes of a stable file", field=name)
    return out, fps, total


def _keep(out: np.ndarray | None, frame, positions: list[int], n: int, k: int, name: str) -> np.ndarray:
    """Frame ``k`` as RGB into ``positions`` of one (n, H, W, 3) array, allocated at the first kept frame: the
    kept frames are held once, never as a list plus a stack."""
    try:
        arr = frame.to_rgb().to_ndarray()
    except (_av().FFmpegError, ValueError, RuntimeError, OSError) as e:
        raise VideoDecodeError(f"{name}: frame {k} cannot be converted to RGB ({getattr(e, 'strerror', None) or e}); "
                               "pass a video in a common pixel format (e.g. yuv420p)", field=name) from e
    if out is None:
        out = np.empty((n,) + arr.shape, np.uint8)
    if arr.shape != out.shape[1:]:
        raise VideoDecodeError(f"{name}: frame {k} is {arr.shape[1]}x{arr.shape[0]} but the first kept "
                               f"frame is {out.shape[2]}x{out.shape[1]}; pass a video of one frame size")
    for p in positions:
        out[p] = arr
    return out


def decode_all(source: VideoSource, *, name: str = "video", max_frames_held: int = 768,
               max_seconds: float = MAX_DECODE_SECONDS) -> tuple[np.ndarray, float]:
    """Every frame in pts order and the stream's average rate (torchvision ``read_video`` semantics)."""
    frames, fps, _ = decode_frames(source, None, name=name, max_frames_held=max_frames_held, max_seconds=max_seconds)
    return frames, fps
