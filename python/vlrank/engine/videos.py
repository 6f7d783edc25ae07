"""Videos of one call: header-probed plans, bounded decodes, and each frame pair as a vision window.

``prepare_video`` knows a video's tokens before any frame is decoded: a file from its container header
(``inputs/video.py`` ``probe``; a header without a frame count, e.g. WebM, is counted by one decode pass
that converts no pixel, after the header estimate passed the checks), a frame list from its length and its
frames' header sizes. Refused there, before decoding:

* tokens over ``max_tokens`` (the context for the reranker, whose truncation keeps every video token;
  ``max_length`` for the embedder, whose truncation may not cut one) -> ``ContextTooLongError`` naming the
  field and the ``max_frames`` / ``fps`` / ``total_pixels`` that would fit;
* decoded frames over ``max_decode_bytes`` (sampled frames x H x W x 3, the kept frames are the only ones
  held; the owner is the image decode budget, ``DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT``) or a frame over
  ``max_image_pixels`` -> ``ImageTooLargeError``;
* a stream over the decode-work bounds (``inputs/video.py``: every frame is decoded, so a 10-hour clip is
  refused from its header) -> ``VideoTooLongError``;
* a frame list whose frames do not all fetch to one size -> ``InvalidInputError`` (the official code
  stacks the fetched frames and fails there too).

The pixels are made when the features are first needed (``PreparedVideo.decode``), once per distinct
video of the call: the key is the content digest and the options.
"""

from __future__ import annotations

import hashlib
import weakref

import numpy as np

from vlrank import _native
from vlrank.engine.windows import PreparedImage, payload_key
from vlrank.errors import ContextTooLongError, ImageTooLargeError, InvalidInputError, named_field
from vlrank.inputs import video as video_io
from vlrank.inputs.video_sources import VideoInput
from vlrank.preprocess import video as pv
from vlrank.preprocess.images import check_image_pixels, probe_native_items


#: Peak bytes of a file video's decode per byte of its kept RGB frames: the frames array, PyAV's frame pool and
#: its to_ndarray copy (measured 2.12x on four 8192x8192 frames, docs/notes.md Round 4 — h2), rounded up.
DECODE_PEAK = 2.5


class VideoPair(PreparedImage):
    """One frame pair of a video: an image-like vision window whose pixels its video decodes.

    A pair refers to its video weakly. The video holds its pairs, so a strong reference back was a cycle: every
    pair's pixel rows (and the video's bytes) stayed alive after the call until Python's cyclic collector ran,
    and RSS grew ~190 MB per call of four images and a 24 s clip (docs/notes.md, Round 5 — h3). While a pair can
    still be decoded, the call's ImageBatch holds its video."""

    __slots__ = ("_video",)

    def __init__(self, *, video: PreparedVideo, **kw) -> None:
        super().__init__(**kw)
        self._video = weakref.ref(video)

    @property
    def video(self) -> PreparedVideo:
        video = self._video()
        if video is None:  # decoded by another call's ImageBatch than the one that planned it: a bug, not input
            raise RuntimeError(f"{self.origin}: its video plan is gone; decode a call's windows with its own ImageBatch")
        return video


def video_key(v: VideoInput) -> str:
    """Content digest + options: the same video given twice (any spelling of the same bytes / frames)
    is decoded and encoded once per call."""
    h = hashlib.sha256()
    if v.data is not None:
        h.update(b"file\0")
        h.update(v.data)
    else:
        h.update(b"frames\0")
        for f in v.frames:
            h.update(payload_key(f.payload).encode())
    h.update(repr(v.options).encode())
    return h.hexdigest()


class PreparedVideo:
    """A planned video (tokens known, nothing decoded) and its frame pairs in order."""

    def __init__(self, *, key: str, source: VideoInput, plan: pv.VideoPlan, merge: int, total_frames: int,
                 frame_bytes: int = 0) -> None:
        self.key = key
        # A file's kept frames as decoded RGB (T x H x W x 3), known from the header; 0 for a frame list, whose
        # native fetch reserves the process decode budget itself.
        self.frame_bytes = frame_bytes
        self.total_frames = total_frames  # a file's frame count the plan was made from (a list's length)
        self.source = source
        self.plan = plan
        self.origin = source.origin
        t, gh, gw = (int(x) for x in plan.grid_thw)
        self.pairs = [VideoPair(video=self, key=(f"video:{key}:{k}", 0, 0), grid_h=gh, grid_w=gw, merge=merge,
                                origin=f"{source.origin} (frame pair {k})") for k in range(t)]

    @property
    def tokens(self) -> tuple[int, list[str]]:
        """What the prompt builders take: (tokens_per_group, timestamp_text)."""
        return self.plan.tokens_per_group, list(self.plan.timestamp_text)

    @property
    def num_tokens(self) -> int:
        return int(self.plan.num_tokens)

    @property
    def decoded(self) -> bool:
        return all(p.has_pixels for p in self.pairs)

    def decode(self, *, max_image_pixels: int) -> None:
        """Decode the planned frames, resize, lay out the rows, and hand each pair its rows."""
        if self.decoded:
            return
        plan, src = self.plan, self.source
        with named_field(self.origin):
            if src.data is not None:
                # PyAV decodes outside the native decoders: hold the process decode budget for its peak, so
                # concurrent requests never decode more than VLRANK_DECODE_BYTES_IN_FLIGHT together.
                with _native.DecodeHold(int(self.frame_bytes * DECODE_PEAK)):
                    frames, _, total = video_io.decode_frames(src.data, plan.frames, name=self.origin)
                if total != self.total_frames:
                    raise video_io.VideoDecodeError(
                        f"{self.origin}: the header records {self.total_frames} frames but {total} decode (a truncated or "
                        "inconsistent file); re-mux it (e.g. ffmpeg -i in.mp4 -c copy out.mp4) or pass the frames")
            else:
                natives = [f.payload for f in src.frames]
                frames = _native.fetch_video_frames([natives[i] for i in plan.frames], min_pixels=src.min_pixels,
                                                    max_decode_pixels=max_image_pixels, field=self.origin)
            pixels, grid = _native.preprocess_video_frames(np.ascontiguousarray(frames),
                                                           resized_height=plan.resized_height,
                                                           resized_width=plan.resized_width)
        del frames
        if tuple(int(x) for x in grid) != tuple(int(x) for x in plan.grid_thw):
            raise video_io.VideoDecodeError(f"{self.origin}: decoded to a {tuple(grid)} grid, planned "
                                            f"{tuple(plan.grid_thw)}; re-encode the video", field=self.origin)
        n = self.pairs[0].grid_h * self.pairs[0].grid_w if self.pairs else 0
        for k, pair in enumerate(self.pairs):
            pair._pixels = np.asarray(pixels[k * n:(k + 1) * n], dtype=np.float32)


def _fit_advice(plan: pv.VideoPlan, max_tokens: int) -> str:
    pairs = max(int(plan.grid_thw[0]), 1)
    per_pair = plan.num_tokens / pairs
    fit_pairs = int(max_tokens // per_pair) if per_pair else 0
    if fit_pairs >= 1:
        return f"pass about {2 * fit_pairs} frames or fewer, or a lower total_pixels (it is {plan.total_pixels:.0f} now)"
    return "even one frame pair does not fit: pass a lower total_pixels or a larger max_length"


def _check_decode_bytes(frames: int, height: int, width: int, *, budget: int, field: str) -> None:
    need = frames * height * width * 3
    if need <= budget:
        return
    fit = (budget // max(height * width * 3, 1)) // 2 * 2
    fix = (f"pass max_frames={fit} or less (or a lower fps)" if fit >= 2 else
           "pass a downscaled video: even two of its frames are over the budget")
    raise ImageTooLargeError(
        f"{field}: decoding {frames} frames of {width}x{height} needs {need / 2**20:.0f} MiB, over the "
        f"{budget / 2**20:.0f} MiB decode budget; {fix}", field=field)


def _plan_file(v: VideoInput, *, max_tokens: int, max_decode_bytes: int,
               max_image_pixels: int) -> tuple[pv.VideoPlan, int, int]:
    field = v.origin
    with named_field(field):
        info = video_io.probe(v.data, name=field)
        if info.frames < 1 or info.fps <= 0 or info.width < 1 or info.height < 1:
            raise video_io.VideoDecodeError(
                f"{field}: the video stream records no frames or frame rate ({info.frames} frames, {info.fps} fps); "
                "pass a video with at least 2 frames", field=field)
        check_image_pixels(height=info.height, width=info.width, max_image_pixels=max_image_pixels,
                           max_pixels=info.height * info.width, name=field)
        video_io.check_decode_work(info.frames, info.height, info.width, name=field)
        opts = dict(fps=pv.DEFAULT_FPS if v.fps is None else v.fps,
                    max_frames=pv.DEFAULT_MAX_FRAMES if v.max_frames is None else v.max_frames,
                    min_pixels=v.min_pixels, total_pixels=v.total_pixels, max_tokens=max_tokens)
        plan = pv.plan_file(total_frames=info.frames, video_fps=info.fps, height=info.height, width=info.width, **opts)
        _check_decode_bytes(len(plan.frames), info.height, info.width, budget=max_decode_bytes, field=field)
        total = info.frames
        if not info.frames_exact:  # an estimate: the decoder's count is the truth (no pixel is converted)
            _, fps, total = video_io.decode_frames(v.data, [0], name=field)
            plan = pv.plan_file(total_frames=total, video_fps=fps, height=info.height, width=info.width, **opts)
            _check_decode_bytes(len(plan.frames), info.height, info.width, budget=max_decode_bytes, field=field)
    return plan, total, len(plan.frames) * info.height * info.width * 3


def _frame_sizes(v: VideoInput) -> list[tuple[int, int]]:
    encoded = [i for i, f in enumerate(v.frames) if f.data is not None]
    sizes: dict[int, tuple[int, int]] = {}
    if encoded:
        infos = probe_native_items([v.frames[i].data for i in encoded], names=[v.frames[i].origin for i in encoded])
        for i, (_, width, height) in zip(encoded, infos):
            sizes[i] = (int(height), int(width))
    for i, f in enumerate(v.frames):
        if f.array is not None:
            sizes[i] = (int(f.array.shape[0]), int(f.array.shape[1]))
    return [sizes[i] for i in range(len(v.frames))]


def _plan_frames(v: VideoInput, *, max_tokens: int, max_decode_bytes: int, max_image_pixels: int) -> pv.VideoPlan:
    field = v.origin
    sizes = _frame_sizes(v)
    for f, (h, w) in zip(v.frames, sizes):
        check_image_pixels(height=h, width=w, max_image_pixels=max_image_pixels, max_pixels=h * w, name=f.origin)
    def fetched_size(height: int, width: int) -> tuple[int, int]:
        with named_field(field):
            other = pv.plan_frame_list(num_frames=len(v.frames), height=height, width=width,
                                       min_pixels=v.min_pixels, total_pixels=v.total_pixels)
        return other.pre_height, other.pre_width

    with named_field(field):
        plan = pv.plan_frame_list(num_frames=len(v.frames), height=sizes[0][0], width=sizes[0][1],
                                  min_pixels=v.min_pixels, total_pixels=v.total_pixels)
    fetched: dict[tuple[int, int], tuple[int, int]] = {sizes[0]: (plan.pre_height, plan.pre_width)}
    for i in sorted(set(plan.frames)):
        size = sizes[i]
        if size not in fetched:
            fetched[size] = fetched_size(*size)
        if fetched[size] != fetched[sizes[0]]:
            fh, fw = fetched[sizes[0]]
            raise InvalidInputError(
                f"{v.frames[i].origin}: this frame is {size[1]}x{size[0]} (resized to {fetched[size][1]}x"
                f"{fetched[size][0]}) but the first frame is {sizes[0][1]}x{sizes[0][0]} (resized to {fw}x{fh}); "
                "the frames of a video must share one size (the official code cannot stack them either); "
                "pass frames of one size", field=v.frames[i].origin)
    kept = [sizes[i] for i in plan.frames]
    raw = sum(h * w * 3 for h, w in kept)
    need = raw + len(kept) * plan.pre_height * plan.pre_width * 3
    if need > max_decode_bytes:
        raise ImageTooLargeError(
            f"{field}: decoding the {len(kept)} kept frames needs {need / 2**20:.0f} MiB, over the "
            f"{max_decode_bytes / 2**20:.0f} MiB decode budget; pass fewer or smaller frames", field=field)
    if plan.num_tokens > max_tokens:
        raise ContextTooLongError(f"{field}: the video needs {plan.num_tokens} tokens but {max_tokens} fit; "
                                  f"{_fit_advice(plan, max_tokens)}", field=field)
    return plan


def prepare_video(v: VideoInput, *, key: str, merge: int, max_tokens: int, max_decode_bytes: int,
                  max_image_pixels: int) -> PreparedVideo:
    """Plan one video from its header(s) under the limits of the module docstring."""
    if v.data is not None:
        plan, total, frame_bytes = _plan_file(v, max_tokens=max_tokens, max_decode_bytes=max_decode_bytes,
                                              max_image_pixels=max_image_pixels)
    else:
        plan, total, frame_bytes = _plan_frames(v, max_tokens=max_tokens, max_decode_bytes=max_decode_bytes,
                                                max_image_pixels=max_image_pixels), len(v.frames), 0
    return PreparedVideo(key=key, source=v, plan=plan, merge=merge, total_frames=total, frame_bytes=frame_bytes)


__all__ = ["VideoPair", "PreparedVideo", "video_key", "prepare_video"]
