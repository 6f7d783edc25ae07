"""Vision windows: what the vision tower runs one at a time (an image, or one frame pair of a video).

A leaf of ``vlrank.engine``: ``videos.py`` (frame pairs) and ``vision.py`` (the tower and the per-call media)
both build on it, so imports run one way (windows <- videos <- vision). A window knows its patch grid from a
header-only probe and gets its pixel rows when the request is prepared; ``pixel_bytes`` is what those rows
hold, the figure every memory budget counts before anything is decoded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from vlrank.errors import InvalidInputError


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


def video_pair_images(pixel_values: np.ndarray, grid_thw: Sequence[int], *, merge: int, key: str) -> list[PreparedImage]:
    """A video's frame pairs as vision windows, in order. Each pair's rows (H/16 x W/16 of the video
    processor's (N, 1536) rows) are exactly an image of grid (1, H/16, W/16): the same graph, the same
    position embeddings and rotary; its features fill the pair's <|video_pad|> run (the decoder treats
    those like <|image_pad|>). ``key`` identifies the video (content hash) for the per-call cache."""
    t, gh, gw = (int(x) for x in grid_thw)
    n = gh * gw
    if pixel_values.shape[0] != t * n:
        raise InvalidInputError(f"pixel_values has {pixel_values.shape[0]} rows; a ({t}, {gh}, {gw}) video grid "
                                f"needs {t * n}", field="pixel_values")
    return [PreparedImage(key=(f"video:{key}:{k}", 0, 0), grid_h=gh, grid_w=gw, merge=merge,
                          pixel_values=pixel_values[k * n:(k + 1) * n]) for k in range(t)]


def pixel_bytes(windows: Sequence[PreparedImage], *, patch_dim: int) -> int:
    """Bytes the pixel rows of the distinct ``windows`` hold once decoded: float32 rows of ``patch_dim``
    (the tower's channels x temporal patch x patch x patch), one row per patch."""
    distinct = {w.key: w.grid_h * w.grid_w for w in windows}
    return sum(distinct.values()) * patch_dim * 4


__all__ = ["payload_key", "PreparedImage", "video_pair_images", "pixel_bytes"]
