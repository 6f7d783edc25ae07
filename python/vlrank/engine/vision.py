"""The vision tower and the per-call media: images and videos -> pixel rows -> vision features.

What a task (tasks/rerank.py, tasks/embed.py) does with it, per call::

    media = ImageBatch(tower, min_pixels=..., max_pixels=...)
    per_side = media.prepare(parsed_inputs)          # header-only probe: token counts, nothing decoded
    videos = media.prepare_videos(parsed_inputs, max_tokens=...)   # header plans (engine/videos.py)
    ids = prompt_ids.vl_rerank_ids(tok, query=..., documents=..., ...)     # or vl_embed_ids
    media.decode(windows_of_the_rows)                 # request thread: every pixel row made here
    ...                                               # model thread, with a fresh ImageBatch as the feed:
    pos = feed.positions(ids[i], row_windows[i], image_pad_id=...)     # (3, L) per row, rope.rs
    image_embeds, deepstack = feed.features(windows_of_the_batch_rows)  # runs the tower

Within one ``ImageBatch`` every distinct image (same bytes or pixels, same pixel budget) is decoded once
and run through the vision tower once, however many rows use it: a query image reranked against 100
documents costs one tower run. A prompt over the context fails, with advice, before any pixel is decoded:
``decode`` comes after the prompt ids. ``features`` decodes what is still pending (a caller that skipped
``decode``), so the model thread of a server, which only gets prepared rows, never decodes.
The tower runs one image per session call (its graph has no cross-image mask), so images of different
sizes never need padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vlrank import _native
from vlrank.engine.sessions import create_session
from vlrank.engine.videos import VideoPair, prepare_video, video_key
from vlrank.engine.windows import PreparedImage, payload_key, pixel_bytes, video_pair_images
from vlrank.errors import ImageDecodeError, InvalidInputError
from vlrank.modeldir import VISION_FILE, VisionMeta
from vlrank.preprocess.images import (
    DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT,
    DEFAULT_MAX_IMAGE_PIXELS,
    check_image_pixels,
    preprocess_native_items,
    probe_native_items,
    resized_size,
)


class VisionTower:
    """The exported vision graph (one image per run) plus the rope tables it takes."""

    def __init__(self, model_dir: str | Path, *, providers=None, session=None, ort_options=None,
                 meta: VisionMeta | None = None) -> None:
        if session is None:
            session = create_session(Path(model_dir) / VISION_FILE, providers=providers, ort_options=ort_options)
        self.session = session
        # The manifest's ``vision`` (Manifest.vision); an export made before it carried one: the graph's metadata.
        meta = meta or VisionMeta.from_props(session.get_modelmeta().custom_metadata_map)
        self.head_dim = meta.head_dim
        self.theta = meta.rope_theta
        self.side = meta.num_grid_per_side
        self.merge = meta.spatial_merge_size
        self.patch_dim = meta.patch_dim
        self.patch = meta.patch_size  # patch_dim = channels (3) x temporal (2) x patch x patch
        self.out_hidden = meta.out_hidden_size
        self.deepstack_layers = meta.deepstack_layers

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

    def __init__(self, tower: VisionTower, *, min_pixels: int, max_pixels: int,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT) -> None:
        self.tower = tower
        self.min_pixels = int(min_pixels)
        self.max_pixels = int(max_pixels)
        # Source pixels per image (and per video frame), refused from the header (and the native decode limit).
        self.max_image_pixels = int(max_image_pixels)
        # Decoded frames one video may hold at once (engine/videos.py), the images' per-call decode budget.
        self.max_decode_bytes = int(max_decode_bytes)
        self._prepared: dict[tuple[str, int, int], PreparedImage] = {}
        self._encoded: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._videos: dict[str, object] = {}

    def prepare_videos(self, sides: Sequence, *, max_tokens: int) -> list[list]:
        """For each side (a ``ParsedInput``) its ``PreparedVideo``s in order, planned from the headers with
        nothing decoded (engine/videos.py); the same video (content + options) is planned once."""
        out = []
        for side in sides:
            row = []
            for v in getattr(side, "videos", ()):
                key = video_key(v)
                if key not in self._videos:
                    self._videos[key] = prepare_video(v, key=key, merge=self.tower.merge,
                                                      max_tokens=max_tokens, max_decode_bytes=self.max_decode_bytes,
                                                      max_image_pixels=self.max_image_pixels)
                row.append(self._videos[key])
            out.append(row)
        return out

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
            infos = probe_native_items([p for _, p, _ in encoded], names=[o for _, _, o in encoded])
            for (key, _, _), (_, width, height) in zip(encoded, infos):
                sizes[key] = (int(height), int(width))
        for key, (payload, origin) in todo.items():
            if isinstance(payload, np.ndarray):
                if payload.ndim not in (2, 3):
                    raise InvalidInputError(f"{origin}: an image array has shape {payload.shape}; pass (H, W), "
                                            "(H, W, 3) or (H, W, 4) uint8", field=origin)
                sizes[key] = (int(payload.shape[0]), int(payload.shape[1]))
            height, width = sizes[key]
            check_image_pixels(height=height, width=width, max_image_pixels=self.max_image_pixels,
                               max_pixels=self.max_pixels, name=origin)
            rh, rw = resized_size(height=height, width=width, min_pixels=self.min_pixels,
                                  max_pixels=self.max_pixels, name=origin)
            patch = self.tower.patch
            self._prepared[key] = PreparedImage(key=key, payload=payload, origin=origin, grid_h=int(rh) // patch,
                                                grid_w=int(rw) // patch, merge=self.tower.merge)

    def decode(self, images: Sequence[PreparedImage]) -> None:
        """Make the pixel rows of every not-yet-decoded window among ``images``: each video once (its frame
        pairs), the images in one native call (parallel, GIL free, within the decode budgets)."""
        pending = list({id(img): img for img in images if not img.has_pixels}.values())
        videos = {id(w.video): w.video for w in pending if isinstance(w, VideoPair)}
        for video in videos.values():
            video.decode(max_image_pixels=self.max_image_pixels)
        pending = [img for img in pending if not isinstance(img, VideoPair)]
        if not pending:
            return
        results = preprocess_native_items([img.payload for img in pending], min_pixels=self.min_pixels,
                                          max_pixels=self.max_pixels, max_decode_pixels=self.max_image_pixels,
                                          names=[img.origin for img in pending])
        for img, result in zip(pending, results):
            pixels, (_, gh, gw) = result.pixel_values, (int(v) for v in result.grid_thw[0])
            if (int(gh), int(gw)) != (img.grid_h, img.grid_w):
                raise ImageDecodeError(
                    f"{img.origin}: its header says a {img.grid_h} x {img.grid_w} patch grid but the decoded image "
                    f"gives {gh} x {gw}; the file is inconsistent — re-encode it (e.g. as PNG)", field=img.origin)
            img._pixels = np.asarray(pixels, dtype=np.float32)
            img.payload = None  # the pixels replace the encoded bytes

    def pixel_bytes(self, images: Sequence[PreparedImage]) -> int:
        """Bytes the pixel rows of the distinct windows among ``images`` hold once decoded."""
        return pixel_bytes(images, patch_dim=self.tower.patch_dim)

    @staticmethod
    def token_counts(images: Sequence[PreparedImage]) -> list[int]:
        """Image token counts in order: what the prompt builders take per side."""
        return [img.num_tokens for img in images]

    # ---- decoder feeds -------------------------------------------------------------------------------
    def encode(self, image: PreparedImage) -> tuple[np.ndarray, np.ndarray]:
        """The tower's output for one image, computed at most once per batch."""
        out = self._encoded.get(image.key)
        if out is None:
            self.decode([image])
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
        self.decode([img for img in images if img.key not in self._encoded])
        parts = [self.encode(img) for img in images]
        embeds = np.concatenate([p[0] for p in parts], axis=0)
        deepstack = np.concatenate([p[1] for p in parts], axis=1)
        return embeds, deepstack

    def positions(self, input_ids: Sequence[int] | np.ndarray, images: Sequence[PreparedImage], *,
                  image_pad_id: int, video_pad_id: int | None = None) -> np.ndarray:
        """M-RoPE position ids (3, L) of one row whose pad blocks are ``images`` in prompt order
        (with ``video_pad_id``, video frame pairs from :func:`video_pair_images` among them)."""
        return _native.mrope_position_ids(input_ids, image_pad_id=image_pad_id, video_pad_id=video_pad_id,
                                          image_grids=[img.merged_grid for img in images])


__all__ = ["payload_key", "PreparedImage", "video_pair_images", "VisionTower", "ImageBatch"]  # windows re-exported
