"""The image path of the Qwen3-VL facade: images -> vision features and M-RoPE positions.

What the facade (reranker.py / embedder.py) does with it, per call::

    images = ImageBatch(tower, min_pixels=..., max_pixels=...)
    per_side = images.prepare(parsed_inputs)        # header-only probe: token counts, nothing decoded
    ids = vl_rerank_ids(tok, query=..., documents=..., query_images=..., doc_images=..., ...)  # or vl_embed_ids
    pos = images.positions(ids[i], row_images[i], image_pad_id=...)     # (3, L) per row, rope.rs
    image_embeds, deepstack = images.features(images_of_the_batch_rows)  # decodes, runs the tower

Within one ``ImageBatch`` every distinct image (same bytes or pixels, same pixel budget) is decoded once
and run through the vision tower once, however many rows use it: a query image reranked against 100
documents costs one tower run. Decoding waits until features are needed (all pending images of a batch in
one parallel native call), so a prompt over the context fails, with advice, before any pixel is decoded.
The tower runs one image per session call (its graph has no cross-image mask), so images of different
sizes never need padding.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from vlrank import _native
from vlrank.errors import ContextTooLongError, ImageDecodeError, InvalidInputError, VlrankError
from vlrank.export.vision import VISION_FILE, read_vision_metadata

CONTEXT_TOKENS = 32_768
# Tokens one image costs in a prompt besides its pads: <|vision_start|> and <|vision_end|>.
IMAGE_WRAPPER_TOKENS = 2


def payload_key(payload: bytes | np.ndarray) -> str:
    """A content hash of an image as given (encoded bytes, or a decoded uint8 array with its shape)."""
    h = hashlib.sha256()
    if isinstance(payload, (bytes, bytearray, memoryview)):
        h.update(b"bytes\0")
        h.update(payload)
    else:
        arr = np.ascontiguousarray(payload)
        h.update(f"array\0{arr.dtype.str}\0{arr.shape}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def _named(origin: str) -> Iterator[None]:
    """(QA fix) Re-raise a native image error so that it names ``origin`` (the caller's field path, e.g.
    ``documents[2].content[0].image_url.url``) in ``.field`` and in the message, keeping its class."""
    try:
        yield
    except VlrankError as exc:
        if exc.field == origin:
            raise
        message = str(exc)
        if exc.field and message.startswith(f"{exc.field}: "):  # e.g. "image: aspect ratio ..."
            message = message[len(exc.field) + 2 :]
        message = message if origin in message else f"{origin}: {message}"
        raise type(exc)(message, field=origin) from exc


class PreparedImage:
    """One image of a call: its size (known from a header-only probe) and, once needed, its pixel rows
    (merge-block order). Pixels are decoded lazily, all pending images of a batch together, so a prompt
    that cannot fit the context fails before any image is decoded."""

    __slots__ = ("key", "payload", "origin", "grid_h", "grid_w", "merge", "_pixels")

    def __init__(self, *, key: tuple[str, int, int], grid_h: int, grid_w: int, merge: int,
                 payload: bytes | np.ndarray | None = None, origin: str = "",
                 pixel_values: np.ndarray | None = None) -> None:
        self.key = key  # (content hash, min_pixels, max_pixels)
        self.payload = payload
        self.origin = origin
        self.grid_h = grid_h  # patch rows (H / patch)
        self.grid_w = grid_w  # patch columns
        self.merge = merge
        self._pixels = pixel_values

    @property
    def merged_grid(self) -> tuple[int, int]:
        """(rows, cols) in merged tokens: the image's block of <|image_pad|> tokens."""
        return self.grid_h // self.merge, self.grid_w // self.merge

    @property
    def num_tokens(self) -> int:
        rows, cols = self.merged_grid
        return rows * cols

    @property
    def has_pixels(self) -> bool:
        return self._pixels is not None

    @property
    def pixel_values(self) -> np.ndarray:
        """(N, C·T·P·P) float32; only after ``ImageBatch`` decoded it (``features`` / ``encode``)."""
        if self._pixels is None:
            raise RuntimeError("pixel_values are decoded by ImageBatch.features()/encode() on first use")
        return self._pixels


class VisionTower:
    """The exported vision graph (one image per run) plus the rope tables it takes."""

    def __init__(self, model_dir: str | Path, *, providers=None, session=None, ort_options=None) -> None:
        if session is None:
            from vlrank.runtime import create_session

            session = create_session(Path(model_dir) / VISION_FILE, providers=providers, ort_options=ort_options)
        self.session = session
        meta = read_vision_metadata(session.get_modelmeta().custom_metadata_map)
        self.head_dim = int(meta["head_dim"])
        self.theta = float(meta["rope_theta"])
        self.side = int(meta["num_grid_per_side"])
        self.merge = int(meta["spatial_merge_size"])
        self.patch_dim = int(meta["patch_dim"])
        # patch_dim = channels (3) x temporal (2) x patch x patch
        self.patch = int(round((self.patch_dim / 6) ** 0.5))
        self.out_hidden = int(meta["out_hidden_size"])
        self.deepstack_layers = int(meta["deepstack_layers"])

    def run(self, image: PreparedImage) -> tuple[np.ndarray, np.ndarray]:
        """(image_embeds (T, H), deepstack_embeds (K, T, H)) of one image."""
        if image.pixel_values.shape != (image.grid_h * image.grid_w, self.patch_dim):
            raise InvalidInputError(
                f"pixel_values has shape {image.pixel_values.shape}; the vision graph takes "
                f"({image.grid_h * image.grid_w}, {self.patch_dim}) for a {image.grid_h} x {image.grid_w} patch grid",
                field="pixel_values",
            )
        idx, wts = _native.pos_embed_interpolation(image.grid_h, image.grid_w, num_grid_per_side=self.side,
                                                   merge_size=self.merge)
        cos, sin = _native.vision_rotary(image.grid_h, image.grid_w, head_dim=self.head_dim,
                                         merge_size=self.merge, theta=self.theta)
        embeds, deepstack = self.session.run(
            ["image_embeds", "deepstack_embeds"],
            {
                "pixel_values": np.ascontiguousarray(image.pixel_values, dtype=np.float32),
                "pos_interp_indices": idx,
                "pos_interp_weights": wts,
                "rotary_cos": cos,
                "rotary_sin": sin,
            },
        )
        return embeds, deepstack


class ImageBatch:
    """Images of one call: preprocess and encode each distinct image once, hand out decoder feeds."""

    def __init__(self, tower: VisionTower, *, min_pixels: int, max_pixels: int) -> None:
        self.tower = tower
        self.min_pixels = int(min_pixels)
        self.max_pixels = int(max_pixels)
        self._prepared: dict[tuple[str, int, int], PreparedImage] = {}
        self._encoded: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = {}

    # ---- preprocessing -------------------------------------------------------------------------------
    def prepare(self, sides: Sequence) -> list[list[PreparedImage]]:
        """For each side (a ``ParsedInput``, or a plain list of image payloads) its images, in order, with
        their token counts from a header-only probe (nothing decoded yet). Equal images share one entry."""
        per_side_keys: list[list[tuple[str, int, int]]] = []
        todo: dict[tuple[str, int, int], tuple[bytes | np.ndarray, str]] = {}
        for s_i, side in enumerate(sides):
            if hasattr(side, "images"):
                items = [(img.payload, img.origin or f"images[{i}]") for i, img in enumerate(side.images)]
            else:
                items = [(payload, f"sides[{s_i}][{i}]") for i, payload in enumerate(side)]
            keys = []
            for payload, origin in items:
                key = (payload_key(payload), self.min_pixels, self.max_pixels)
                if key not in self._prepared and key not in todo:
                    todo[key] = (payload, origin)
                keys.append(key)
            per_side_keys.append(keys)
        if todo:
            self._probe(todo)
        return [[self._prepared[k] for k in keys] for keys in per_side_keys]

    def _probe(self, todo: dict[tuple[str, int, int], tuple[bytes | np.ndarray, str]]) -> None:
        encoded = [(k, p, o) for k, (p, o) in todo.items() if not isinstance(p, np.ndarray)]
        sizes: dict[tuple[str, int, int], tuple[int, int]] = {}
        if encoded:
            try:
                infos = _native.probe_images([p for _, p, _ in encoded], field="images")
            except VlrankError:
                # (QA fix) the native probe names images by their position in this list ("images[0]") and
                # leaves .field unset; re-probe one by one so the error names the caller's field path.
                for _, payload, origin in encoded:
                    with _named(origin):
                        _native.probe_image(payload, name=origin)
                raise
            for (key, _, _), (_, width, height) in zip(encoded, infos):
                sizes[key] = (int(height), int(width))
        for key, (payload, origin) in todo.items():
            if isinstance(payload, np.ndarray):
                if payload.ndim not in (2, 3):
                    raise InvalidInputError(f"{origin}: an image array has shape {payload.shape}; pass (H, W), "
                                            "(H, W, 3) or (H, W, 4) uint8", field=origin)
                sizes[key] = (int(payload.shape[0]), int(payload.shape[1]))
            height, width = sizes[key]
            with _named(origin):  # (QA fix) aspect-ratio errors said field="image", not which image
                rh, rw = _native.smart_resize(height, width, self.min_pixels, self.max_pixels)
            patch = self.tower.patch
            self._prepared[key] = PreparedImage(key=key, payload=payload, origin=origin, grid_h=int(rh) // patch,
                                                grid_w=int(rw) // patch, merge=self.tower.merge)

    def _decode(self, images: Sequence[PreparedImage]) -> None:
        """Preprocess every not-yet-decoded image among ``images`` in one native call (parallel, GIL free)."""
        pending = list({id(img): img for img in images if not img.has_pixels}.values())
        if not pending:
            return
        try:
            results = _native.preprocess_images([img.payload for img in pending], min_pixels=self.min_pixels,
                                                max_pixels=self.max_pixels, names=[img.origin for img in pending])
        except VlrankError as exc:
            # (QA fix) native decode errors name the image in the message only (.field is None): set the
            # field to the origin the message names (the longest one: "documents[1]" is a prefix of others).
            if exc.field not in {img.origin for img in pending}:  # native names it by list position
                named = [img.origin for img in pending if img.origin and img.origin in str(exc)]
                exc.field = max(named, key=len) if named else None
            raise
        for img, result in zip(pending, results):
            pixels, (_, gh, gw) = result[0], result[1]
            if (int(gh), int(gw)) != (img.grid_h, img.grid_w):
                raise ImageDecodeError(
                    f"{img.origin}: its header says a {img.grid_h} x {img.grid_w} patch grid but the decoded image "
                    f"gives {gh} x {gw}; the file is inconsistent — re-encode it (e.g. as PNG)", field=img.origin)
            img._pixels = np.asarray(pixels, dtype=np.float32)
            img.payload = None  # the pixels replace the encoded bytes

    @staticmethod
    def token_counts(images: Sequence[PreparedImage]) -> list[int]:
        """Image token counts in order: what the prompt builders take per side."""
        return [img.num_tokens for img in images]

    # ---- decoder feeds -------------------------------------------------------------------------------
    def encode(self, image: PreparedImage) -> tuple[np.ndarray, np.ndarray]:
        """The tower's output for one image, computed at most once per batch."""
        out = self._encoded.get(image.key)
        if out is None:
            self._decode([image])
            out = self.tower.run(image)
            self._encoded[image.key] = out
        return out

    @property
    def tower_runs(self) -> int:
        """How many images went through the vision tower so far (distinct images)."""
        return len(self._encoded)

    def features(self, images: Sequence[PreparedImage]) -> tuple[np.ndarray, np.ndarray]:
        """Decoder feeds for a batch: ``images`` = every row's images, rows in batch order, each row's
        images in prompt order (the row-major order of its <|image_pad|> tokens). Returns
        image_embeds (M, H) and deepstack_embeds (K, M, H); M = 0 gives empty arrays."""
        t = self.tower
        if not images:
            return (np.zeros((0, t.out_hidden), np.float32),
                    np.zeros((t.deepstack_layers, 0, t.out_hidden), np.float32))
        self._decode([img for img in images if img.key not in self._encoded])
        parts = [self.encode(img) for img in images]
        embeds = np.concatenate([p[0] for p in parts], axis=0)
        deepstack = np.concatenate([p[1] for p in parts], axis=1)
        return embeds, deepstack

    def positions(self, input_ids: Sequence[int] | np.ndarray, images: Sequence[PreparedImage], *,
                  image_pad_id: int) -> np.ndarray:
        """M-RoPE position ids (3, L) of one row whose image blocks are ``images`` in order."""
        return _native.mrope_position_ids(input_ids, image_pad_id=image_pad_id,
                                          image_grids=[img.merged_grid for img in images])


# ---- context errors ------------------------------------------------------------------------------------
def context_too_long(*, needed: int, text_tokens: int, images: Sequence[PreparedImage], min_pixels: int,
                     max_pixels: int, field: str, context: int = CONTEXT_TOKENS,
                     max_length: int | None = None) -> ContextTooLongError:
    """A ContextTooLongError that says how many tokens the prompt needs and which max_pixels would fit.

    ``text_tokens``: the prompt's tokens besides the image pads. smart_resize never gives an image more
    than max_pixels / (32·32) tokens, so spreading what the context has left over the images gives a
    max_pixels that is guaranteed to fit (unless min_pixels forces more)."""
    image_tokens = sum(img.num_tokens for img in images)
    # (QA fix) embeddings truncate to the first max_length ids and refuse a cut image: when the prompt fits
    # the context, max_length is the limit, and the message used to blame the 32,768 context instead.
    cut_by_max_length = max_length is not None and needed <= context
    if cut_by_max_length:
        context = max_length
    n = max(len(images), 1)
    per_image = (context - text_tokens) // n
    unit = 32 * 32
    if per_image * unit >= max(min_pixels, unit):
        hint = (f"pass max_pixels={per_image * unit} or less (at most {per_image} tokens per image; "
                f"it is {max_pixels} now)")
    elif per_image >= 1:
        # (QA fix) min_pixels above what fits used to get "even the smallest images do not fit", though
        # lowering min_pixels (with max_pixels) does fix it.
        hint = (f"pass min_pixels and max_pixels of {per_image * unit} or less (at most {per_image} tokens per "
                f"image; min_pixels={min_pixels} forces more)")
    else:
        hint = "pass fewer images or shorter texts: even the smallest images do not fit"
    if cut_by_max_length:
        return ContextTooLongError(
            f"{field}: the prompt needs {needed} tokens ({image_tokens} of them for {len(images)} image(s)) but "
            f"max_length={max_length} would cut its image tokens (an image is never truncated); pass "
            f"max_length={needed} or more, or {hint.removeprefix('pass ')}",
            field=field,
        )
    return ContextTooLongError(
        f"{field}: the prompt needs {needed} tokens ({image_tokens} of them for {len(images)} image(s)) but the "
        f"model's context holds {context}; {hint}",
        field=field,
    )


def context_error_for_row(build_ids: Callable[[list[int]], Sequence[int]], images: Sequence[PreparedImage], *,
                          min_pixels: int, max_pixels: int, field: str,
                          max_length: int | None = None) -> ContextTooLongError:
    """``context_too_long`` for a row whose prompt builder refused it: ``build_ids(counts)`` rebuilds the
    row's ids with the given per-image token counts; building it with 1-token images measures the text.
    ``max_length``: set for embeddings, whose truncation to max_length refuses to cut an image."""
    try:
        ones = build_ids([1] * len(images))
    except ContextTooLongError:
        if max_length is None:
            raise
        # (QA fix) even 1-token images are cut: only a larger max_length helps (was the bare native error).
        return ContextTooLongError(
            f"{field}: max_length={max_length} cuts into the image tokens even at one token per image; pass a "
            "larger max_length (or None for the model's default)", field=field)
    text_tokens = len(ones) - len(images)
    needed = text_tokens + sum(img.num_tokens for img in images)
    return context_too_long(needed=needed, text_tokens=text_tokens, images=images, min_pixels=min_pixels,
                            max_pixels=max_pixels, field=field, max_length=max_length)


# ---- prompt ids with image-aware context errors --------------------------------------------------------
def vl_rerank_ids(tokenizer, *, query, documents: Sequence, query_images: Sequence[PreparedImage],
                  doc_images: Sequence[Sequence[PreparedImage]], instruction: str | None, max_length: int,
                  min_pixels: int, max_pixels: int) -> list[list[int]]:
    """``_native.build_vl_rerank_ids_batch`` for a parsed query and documents; a pair over the context
    raises a ContextTooLongError naming that document, the tokens it needs and a max_pixels that fits."""
    q_counts = ImageBatch.token_counts(query_images)

    def row(i: int, counts: list[int]) -> Sequence[int]:
        return _native.build_vl_rerank_ids(
            tokenizer, query_images=counts[: len(q_counts)], query_texts=list(query.texts),
            doc_images=counts[len(q_counts):], doc_texts=list(documents[i].texts), instruction=instruction,
            max_length=max_length)

    rows = [list(query_images) + list(imgs) for imgs in doc_images]
    fields = [f"documents[{i}]" for i in range(len(rows))]
    _check_image_tokens(row, rows, min_pixels=min_pixels, max_pixels=max_pixels, fields=fields)
    try:
        return [list(r) for r in _native.build_vl_rerank_ids_batch(
            tokenizer, query_images=q_counts, query_texts=list(query.texts),
            documents=[(ImageBatch.token_counts(imgs), list(d.texts)) for imgs, d in zip(doc_images, documents)],
            instruction=instruction, max_length=max_length)]
    except ContextTooLongError as exc:
        raise _first_context_error(row, rows, min_pixels=min_pixels, max_pixels=max_pixels,
                                   fields=fields) or exc from None


def vl_embed_ids(tokenizer, *, inputs: Sequence, images: Sequence[Sequence[PreparedImage]],
                 instruction: str | None, max_length: int, min_pixels: int, max_pixels: int) -> list[list[int]]:
    """``_native.build_vl_embed_ids_batch`` for parsed inputs, with image-aware context errors."""

    def row(i: int, counts: list[int]) -> Sequence[int]:
        return _native.build_vl_embed_ids(tokenizer, images=counts, texts=list(inputs[i].texts),
                                          instruction=instruction, max_length=max_length)

    rows = [list(imgs) for imgs in images]
    fields = [f"input[{i}]" for i in range(len(rows))]
    _check_image_tokens(row, rows, min_pixels=min_pixels, max_pixels=max_pixels, fields=fields)
    try:
        return [list(r) for r in _native.build_vl_embed_ids_batch(
            tokenizer, inputs=[(ImageBatch.token_counts(imgs), list(x.texts)) for imgs, x in zip(images, inputs)],
            instruction=instruction, max_length=max_length)]
    except ContextTooLongError as exc:
        raise _first_context_error(row, rows, min_pixels=min_pixels, max_pixels=max_pixels,
                                   fields=fields, max_length=max_length) or exc from None


def _first_context_error(build_row: Callable[[int, list[int]], Sequence[int]],
                         rows: Sequence[Sequence[PreparedImage]], *, min_pixels: int, max_pixels: int,
                         fields: Sequence[str], max_length: int | None = None) -> ContextTooLongError | None:
    for i, imgs in enumerate(rows):
        if not imgs:
            continue
        try:
            build_row(i, ImageBatch.token_counts(imgs))
        except ContextTooLongError:
            return context_error_for_row(lambda counts, i=i: build_row(i, counts), imgs, min_pixels=min_pixels,
                                         max_pixels=max_pixels, field=fields[i], max_length=max_length)
    return None


def _check_image_tokens(build_row: Callable[[int, list[int]], Sequence[int]],
                        rows: Sequence[Sequence[PreparedImage]], *, min_pixels: int, max_pixels: int,
                        fields: Sequence[str]) -> None:
    """Rows whose images alone overflow the context fail here, before the prompt builder (which refuses a
    single image count over the context as a plain invalid count, without the max_pixels advice)."""
    for i, imgs in enumerate(rows):
        if sum(img.num_tokens + IMAGE_WRAPPER_TOKENS for img in imgs) > CONTEXT_TOKENS:
            raise context_error_for_row(lambda counts, i=i: build_row(i, counts), imgs, min_pixels=min_pixels,
                                        max_pixels=max_pixels, field=fields[i])
