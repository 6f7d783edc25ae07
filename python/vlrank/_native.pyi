# Type stubs for the native extension vlrank._native (rust/src/py.rs). Keep in sync by hand.
from __future__ import annotations

__version__: str

# ---- geometry / probe / image (owner: native-image) ----

# ---- tokenizer / prompt / batch (owner: native-text) ----

# ---- rope (owner: vision) ----
import numpy as _np
import numpy.typing as _npt
from collections.abc import Sequence as _Sequence

def mrope_position_ids(
    input_ids: _Sequence[int] | _npt.NDArray[_np.int64],
    *,
    image_pad_id: int,
    image_grids: _Sequence[tuple[int, int]],
) -> _npt.NDArray[_np.int64]:
    """M-RoPE position ids (3, L) of one sequence; image_grids = merged (rows, cols) per image, in order."""

def mrope_position_ids_batch(
    input_ids: _npt.NDArray[_np.int64],
    *,
    lengths: _Sequence[int],
    image_pad_id: int,
    image_grids: _Sequence[_Sequence[tuple[int, int]]],
) -> _npt.NDArray[_np.int64]:
    """M-RoPE position ids (3, B, L) of a right-padded (B, L) batch; padding positions are 1."""

def vision_position_ids(grid_h: int, grid_w: int, *, merge_size: int = 2) -> _npt.NDArray[_np.int64]:
    """(row, col) of each patch, (N, 2), in merge-block order."""

def vision_rotary(
    grid_h: int, grid_w: int, *, head_dim: int, merge_size: int = 2, theta: float = 10000.0
) -> tuple[_npt.NDArray[_np.float32], _npt.NDArray[_np.float32]]:
    """Vision rotary (cos, sin), each (N, head_dim) float32, rows in merge-block order."""

def pos_embed_interpolation(
    grid_h: int, grid_w: int, *, num_grid_per_side: int, merge_size: int = 2
) -> tuple[_npt.NDArray[_np.int64], _npt.NDArray[_np.float32]]:
    """Bilinear corners (align_corners) into the learned position table: indices (N, 4), weights (N, 4)."""
