"""What every task (``Reranker``, ``Embedder``) shares: argument checks, the loaded model, the per-call
media, ``prepare`` / ``run_prepared``, ``*_many`` and the error field names.

A call runs in two halves, so a server can do the first in the request's own thread and hand the model
thread nothing but rows ready to run:

  prepare   (request thread)  inputs -> parsed sides -> media probed and planned -> prompt ids per row ->
            memory budget -> media decoded into pixel rows; the exact cost is known     (``prepare``)
  run       (model thread)    the rows of one or many prepared calls through one token-budgeted batch
            plan (vision tower + decoder), then each call's IONOS / OpenAI result        (``run_prepared``)

A task writes only ``_prepare(images=..., **call)`` (parse + ids, nothing decoded) and ``_result``.
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from vlrank.engine.manifest import check_graph
from vlrank.engine.export_cache import ExportOptions, resolve_model_dir
from vlrank.engine.sessions import INTRA_OP_THREADS, check_ort_options, create_session
from vlrank.engine.runner import DEFAULT_BATCH_TOKENS, ModelRunner, Row
from vlrank.engine.vision import ImageBatch, VisionTower
from vlrank.errors import ImageTooLargeError, InvalidInputError, ModelDirectoryError, VlrankError
from vlrank.inputs import FetchPolicy, ParsedInput
from vlrank.preprocess.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    check_max_image_pixels,
)
from vlrank.preprocess.prompts import CONTEXT_TOKENS


def check_pixels(min_pixels: Any, max_pixels: Any) -> tuple[int, int]:
    for value, fld in ((min_pixels, "min_pixels"), (max_pixels, "max_pixels")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{fld}={value!r}; pass a positive number of pixels (e.g. 4096)", field=fld)
    if min_pixels > max_pixels:
        raise InvalidInputError(f"min_pixels={min_pixels} is larger than max_pixels={max_pixels}; pass "
                                "min_pixels <= max_pixels", field="min_pixels")
    return min_pixels, max_pixels


def check_max_length(max_length: Any, *, default: int, context: int) -> int:
    """``max_length`` within 1..context; None gives ``default`` (0 before the model is loaded: the
    message then speaks of the model's default)."""
    if max_length is None:
        return default
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= context:
        hint = f"the default {default}" if default > 0 else "the model's default"
        raise InvalidInputError(
            f"max_length={max_length!r}; pass an integer from 1 to the model's context of {context} tokens "
            f"(or None for {hint})",
            field="max_length",
        )
    return max_length


def as_int(value: Any) -> Any:
    """A plain int for any integral non-bool value (numpy integers such as np.int64(5) are integers too),
    else the value unchanged for the caller's check."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def check_positive(value: Any, *, field: str, what: str, upper: int | None = None) -> int | None:
    """None, or an integer >= 1 (and <= ``upper``); ``what`` ends the message (what None means)."""
    value = as_int(value)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1
                              or (upper is not None and value > upper)):
        span = "a positive integer" if upper is None else f"an integer from 1 to {upper}"
        raise InvalidInputError(f"{field}={value!r}; pass {span} ({what})", field=field)
    return value


def check_calls(calls: Any, *, method: str) -> Sequence[Any]:
    """A list of calls: a string, a mapping or a non-sequence is one bad argument, not many bad calls."""
    if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence):
        raise InvalidInputError(f"calls: expected a list of {method}() keyword-argument mappings, got "
                                f"{type(calls).__name__}; pass e.g. [{{...}}, {{...}}]", field="calls")
    return calls


def check_instruction(instruction: Any) -> str | None:
    if instruction is not None and not isinstance(instruction, str):
        raise InvalidInputError(f"instruction: expected a string or None, got {type(instruction).__name__}",
                                field="instruction")
    return instruction


@dataclass(kw_only=True)
class Prepared:
    """A call ready to run: its decoder rows (prompt ids + vision windows, pixel rows made) and what it costs.

    ``tokens`` is exact (every prompt token the model will see; what ``usage`` reports), ``media_bytes`` the
    pixel rows it holds until it has run. A task's own prepared call adds what its result needs."""

    rows: list[Row]
    media_bytes: int = 0

    @property
    def tokens(self) -> int:
        return sum(len(r.ids) for r in self.rows)


#: ``reserve(nbytes)`` is called with the bytes a call's pixel rows will hold, after its prompt ids and memory
#: budget passed and before anything is decoded; it may block (a server's media budget) or raise.
Reserve = Callable[[int], None]


class Task:
    """The shared floor of ``Reranker`` and ``Embedder``. A task sets ``task`` (the export task),
    ``method`` and ``call_args`` (its public call and keywords), ``inputs_field`` and ``image_verb``
    (for error messages), and writes ``_prepare(images=..., **call)`` and ``_result(prepared, outputs)``."""

    task: ClassVar[str] = ""
    method: ClassVar[str] = ""
    call_args: ClassVar[frozenset[str]] = frozenset()
    inputs_field: ClassVar[str] = ""
    image_verb: ClassVar[str] = ""
    #: whether rows sharing a prompt prefix run it once (engine/prefix.py); a task that wants it sets it
    share_prefix: bool | None = False

    def __init__(self, model: str | Path, *, max_length: int | None = None, min_pixels: int = DEFAULT_MIN_PIXELS,
                 max_pixels: int = DEFAULT_MAX_PIXELS, providers=None, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 name: str | None = None, fetch_policy: FetchPolicy | None = None,
                 ort_options: Mapping[str, str] | None = None, memory_budget: int | None = None,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, dtype: str | None = None,
                 precision: str = "float32", quantize: str | None = None, threads: int | None = None) -> None:
        # dtype / precision / quantize: how a checkpoint or hub id is exported on first use (cached per
        # options); an exported directory is used as it is. threads: ONNX Runtime's intra-op threads (None:
        # one per core), so several models or actors on one node need not oversubscribe it.
        export_options = ExportOptions(dtype=dtype, precision=precision, quantize=quantize)
        threads = check_positive(threads, field="threads", what="ONNX Runtime intra-op threads; None: one per core")
        if threads is not None:
            ort_options = {**check_ort_options(ort_options), INTRA_OP_THREADS: str(threads)}
        self.min_pixels, self.max_pixels = check_pixels(min_pixels, max_pixels)
        self.max_image_pixels = check_max_image_pixels(max_image_pixels)
        if fetch_policy is not None and not isinstance(fetch_policy, FetchPolicy):
            raise InvalidInputError("fetch_policy: pass a vlrank.FetchPolicy or None", field="fetch_policy")
        self.fetch_policy = fetch_policy
        if max_length is not None:  # fail before loading anything
            check_max_length(max_length, default=0, context=CONTEXT_TOKENS)
        model = resolve_model_dir(model, task=self.task, options=export_options)
        self.runner = ModelRunner(model, task=self.task, providers=providers, batch_tokens=batch_tokens,
                                  ort_options=ort_options, memory_budget=memory_budget)
        m = self.runner.manifest
        self.max_length = check_max_length(max_length, default=m.max_length, context=m.context_length)
        self.name = name or m.name
        self.family = m.family
        self._tower: VisionTower | None = None
        self._tower_lock = threading.Lock()  # prepare() runs in request threads: the tower loads once

    @property
    def max_batch_tokens(self) -> int:
        return self.runner.batch_tokens

    def tower(self) -> VisionTower:
        """The vision tower (loaded on first use)."""
        with self._tower_lock:
            if self._tower is None:
                self._tower = self._load_tower()
        return self._tower

    def _load_tower(self) -> VisionTower:
        manifest = self.runner.manifest
        if not manifest.has_vision:
            raise ModelDirectoryError(f"{manifest.root} has no vision graph; this model takes text only "
                                      "(re-export a Qwen3-VL checkpoint with this vlrank)", field="model")
        session = create_session(manifest.file("vision"), providers=self.runner.providers,
                                 ort_options=self.runner.ort_options)
        check_graph(manifest, session, graph="vision")
        return VisionTower(manifest.root, session=session, meta=manifest.vision)

    # ---- one call, many calls ------------------------------------------------------------------------
    def _image_batch(self) -> ImageBatch | None:
        """A per-call image cache (each distinct image probed, decoded and encoded once), or None for a
        text-only model."""
        if not self.runner.manifest.has_vision:
            return None
        return ImageBatch(self.tower(), min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                          max_image_pixels=self.max_image_pixels)

    def prepare(self, *, reserve: Reserve | None = None, **call: Any) -> Prepared:
        """One call of the task's public method (its keyword arguments) made ready to run: parsed, media
        probed and planned, prompt ids built, checked against the memory budget, then (after ``reserve``)
        every image and video decoded into pixel rows. Errors are the public call's typed errors. Safe to
        call from many threads at once; nothing here runs a model graph."""
        self._check_call(call, field="call")
        images = self._image_batch()
        return self._ready(self._prepare(images=images, **call), images, reserve)

    def run_prepared(self, prepared: Sequence[Prepared | VlrankError]) -> list[dict | VlrankError]:
        """The rows of all ``prepared`` calls through ONE batch plan (the vision tower runs each distinct
        image once across them); result i is call i's answer, or its error in place. The model-thread half
        of a call: nothing is parsed or decoded here."""
        return self.runner.run_calls(list(prepared), self._image_batch(), self._result,
                                     share_prefix=self.share_prefix)

    def _ready(self, p: Prepared, images: ImageBatch | None, reserve: Reserve | None) -> Prepared:
        """Budget-check ``p``'s rows, reserve its pixel rows, then decode them (``images``: the media that
        planned them)."""
        self.runner.check_rows(p.rows)
        windows = [w for r in p.rows for w in r.images]
        if windows and images is not None:
            p.media_bytes = images.pixel_bytes(windows)
            if reserve is not None:
                reserve(p.media_bytes)
            try:
                images.decode(windows)
            except MemoryError:  # a buffer the system refused (e.g. under an address-space cap): this call only
                raise ImageTooLargeError(
                    f"{self.inputs_field}: decoding this call's images and videos ran out of memory; pass fewer or "
                    "smaller images, or videos of fewer / smaller frames", field=self.inputs_field) from None
        return p

    def _check_call(self, call: Any, *, field: str) -> None:
        if not isinstance(call, Mapping) or not set(call) <= self.call_args:
            raise InvalidInputError(f"{field}: pass a mapping of {self.method}() keyword arguments "
                                    f"({', '.join(sorted(self.call_args))})", field=field)

    def _call(self, **call: Any) -> dict:
        images = self._image_batch()
        p = self._ready(self._prepare(images=images, **call), images, None)
        return self._result(p, self.runner.run(p.rows, images, share_prefix=self.share_prefix))

    def _call_many(self, calls: Sequence[Mapping[str, Any]]) -> list[dict | VlrankError]:
        """Many calls through one batch plan; result i equals the single call ``calls[i]`` (ids aside),
        a bad call yields its typed error in place. The calls share one media cache, so an image or video
        given in several calls is probed and decoded once."""
        calls = check_calls(calls, method=self.method)
        images = self._image_batch()
        prepared: list[Prepared | VlrankError] = []
        for i, call in enumerate(calls):
            try:
                self._check_call(call, field=f"calls[{i}]")
                prepared.append(self._ready(self._prepare(images=images, **call), images, None))
            except VlrankError as exc:
                prepared.append(exc)
        return self.run_prepared(prepared)

    def _prepare_images(self, sides: list[ParsedInput], images: ImageBatch | None) -> list[list]:
        """Each side's prepared images (header-probed, nothing decoded yet)."""
        if not any(s.images for s in sides):
            return [[] for _ in sides]
        if images is None:
            raise InvalidInputError(f"this model directory has no vision graph, so it cannot {self.image_verb} "
                                    "images; re-export the Qwen3-VL checkpoint with this vlrank",
                                    field=self.inputs_field)
        return images.prepare(sides)

    def _prepare_videos(self, sides: list[ParsedInput], images: ImageBatch | None, *, max_tokens: int,
                        fields: list[str]) -> list[list]:
        """Each side's planned videos (engine/videos.py: tokens from the headers, nothing decoded yet);
        refused for a model directory that cannot take video features."""
        if not any(s.videos for s in sides):
            return [[] for _ in sides]
        fld = next(f for f, s in zip(fields, sides) if s.videos)
        if images is None:
            raise InvalidInputError(f"{fld}: this model directory has no vision graph, so it cannot "
                                    f"{self.image_verb} videos; use a Qwen3-VL model", field=fld)
        if self.runner.manifest.video_pad_id is None:
            raise ModelDirectoryError(
                f"model: {self.runner.manifest.root} was exported before vlrank read videos ({fld} holds one; the "
                "manifest records no <|video_pad|> id, so its decoder does not fill video features); re-export the "
                "checkpoint with this vlrank (vlrank export SRC OUT)", field="model")
        return images.prepare_videos(sides, max_tokens=max_tokens)


def side_blocks(videos: list, images: list) -> list:
    """A side's vision windows in prompt order: every video's frame pairs, then the images."""
    return [pair for v in videos for pair in v.pairs] + list(images)


def usage(rows: Sequence[Any]) -> dict[str, int]:
    """The usage block of a result: every prompt token of the call's rows."""
    tokens = sum(len(r.ids) for r in rows)
    return {"prompt_tokens": tokens, "total_tokens": tokens}


__all__ = ["Task", "Prepared", "Reserve", "side_blocks", "check_pixels", "check_max_length", "check_positive", "check_calls", "check_instruction",
           "as_int", "usage"]
