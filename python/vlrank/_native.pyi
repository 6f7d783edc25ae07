# Type stubs for the native extension vlrank._native (rust/src/py/, one file per concept).
# Kept in sync by hand; tests/test_native_stubs.py checks names and keyword-only parameters.
# A default written `...` is a constant of the Rust core, exported here under its own name
# (DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS, DEFAULT_MAX_DECODE_PIXELS, *_MAX_LENGTH).
from __future__ import annotations

import os as _os
from collections.abc import Sequence as _Seq

import numpy as _np
import numpy.typing as _npt

# Any object with .texts, .images (token counts), .videos ((tokens_per_group, timestamp_text) pairs).
from vlrank.preprocess.prompts import Side as _PromptSide

__version__: str

# ---- geometry / probe / image ----

DEFAULT_MAX_DECODE_PIXELS: int
DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT: int
DEFAULT_MIN_PIXELS: int
DEFAULT_MAX_PIXELS: int
IMAGE_FACTOR: int

def smart_resize(height: int, width: int, min_pixels: int = ..., max_pixels: int = ...) -> tuple[int, int]:
    """(resized_height, resized_width) of the reference smart_resize (factor 32); InvalidInputError on bad sizes."""
def image_tokens(height: int, width: int, min_pixels: int = ..., max_pixels: int = ...) -> int: ...
def probe_image(src: bytes | bytearray | str | _os.PathLike[str], *, name: str | None = None) -> tuple[str, int, int]:
    """Header-only (format, width, height); ImageDecodeError for unknown/truncated headers."""
def probe_images(srcs: _Seq[object], *, field: str = "images") -> list[tuple[str, int, int]]: ...
def preprocess_images(
    srcs: _Seq[bytes | bytearray | str | _os.PathLike[str] | _npt.NDArray[_np.uint8]],
    *,
    min_pixels: int = ...,
    max_pixels: int = ...,
    max_decode_pixels: int = ...,
    max_decode_bytes_in_flight: int = ...,
    names: list[str] | None = None,
    field: str = "images",
) -> list[
    tuple[_npt.NDArray[_np.float32], tuple[int, int, int], int, tuple[int, int], tuple[int, int]]
]:
    """Per image: (pixel_values (N, 1536), (t, h, w), num_tokens, (orig_h, orig_w), (resized_h, resized_w)).
    One call, GIL released, parallel over images (rayon), in waves whose header-estimated decode
    bytes fit max_decode_bytes_in_flight (an image over it alone: ImageTooLargeError) and the
    process budget (env VLRANK_DECODE_BYTES_IN_FLIGHT, default 2 GiB)."""
def decode_rgb(
    src: bytes | bytearray | str | _os.PathLike[str] | _npt.NDArray[_np.uint8],
    *,
    min_pixels: int = ...,
    max_pixels: int = ...,
    max_decode_pixels: int = ...,
    max_decode_bytes_in_flight: int = ...,
    resize: bool = True,
) -> _npt.NDArray[_np.uint8]:
    """(H, W, 3) uint8 RGB after the reference's to-RGB rule (and resize, unless resize=False)."""

# ---- video ----

def video_plan_file(
    *,
    total_frames: int,
    video_fps: float,
    height: int,
    width: int,
    fps: float = ...,
    max_frames: int = ...,
    min_pixels: int | None = None,
    total_pixels: float | None = None,
    max_tokens: int | None = None,
) -> dict[str, object]:
    """Plan of a file video from its header: frames, frames_indices, metadata_fps, sample_fps,
    pre_height/width, resized_height/width, min/total/max_pixels, grid_thw, tokens_per_group,
    num_pads, num_tokens, timestamps, timestamp_text. Over max_tokens: ContextTooLongError with advice."""
def video_plan_frames(
    *,
    num_frames: int,
    height: int,
    width: int,
    min_pixels: int | None = None,
    total_pixels: float | None = None,
) -> dict[str, object]:
    """Plan of a frame list (first frame height x width before any resize); keys as video_plan_file."""
def fetch_video_frames(
    srcs: _Seq[bytes | bytearray | str | _os.PathLike[str] | _npt.NDArray[_np.uint8]],
    *,
    min_pixels: int | None = None,
    max_decode_pixels: int = ...,
    field: str = "video",
) -> _npt.NDArray[_np.uint8]:
    """Frame-list frames after the first resize (factor 64, PIL bicubic), (T, H, W, 3) uint8."""
def preprocess_video_frames(
    frames: _npt.NDArray[_np.uint8], *, resized_height: int, resized_width: int
) -> tuple[_npt.NDArray[_np.float32], tuple[int, int, int]]:
    """Second resize (torchvision antialiased bicubic) + temporal-pair rows: ((N, 1536) float32, (t, h, w)).
    C-contiguous frames are read in place (others copied once); a refused allocation is ImageTooLargeError."""

def resize_video_frames(
    frames: _npt.NDArray[_np.uint8], *, resized_height: int, resized_width: int
) -> _npt.NDArray[_np.uint8]:
    """The second resize alone (torchvision antialiased bicubic on uint8): (T, H, W, 3) -> (T, h, w, 3)."""

# ---- tokenizer / prompt / batch ----

class Tokenizer:
    """tokenizer.json wrapper; user text is always plain (special-token strings are never parsed)."""

    @staticmethod
    def from_file(path: str | _os.PathLike[str]) -> Tokenizer:
        """Load a tokenizer.json; missing or unusable file -> vlrank.TokenizerError."""
    def encode(self, text: str) -> list[int]:
        """Plain-text ids (no special tokens added or parsed)."""
    def encode_batch(self, texts: _Seq[str]) -> list[list[int]]:
        """encode over many texts, in parallel; order kept."""
    def decode(self, ids: _Seq[int], *, skip_special_tokens: bool = False) -> str:
        """Text of ids (added tokens included unless skip_special_tokens drops the special ones)."""
    def token_to_id(self, token: str) -> int | None: ...
    def id_to_token(self, id: int) -> str | None: ...
    @property
    def vocab_size(self) -> int:
        """Model vocabulary plus added tokens (151,669 for Qwen3)."""

CONTEXT_TOKENS: int
RERANK_SYSTEM: str
VL_RERANK_DEFAULT_INSTRUCTION: str
EMBED_DEFAULT_INSTRUCTION: str
TEXT_RERANK_DEFAULT_INSTRUCTION: str
VL_RERANK_MAX_LENGTH: int
EMBED_MAX_LENGTH: int
TEXT_RERANK_MAX_LENGTH: int
# Control tokens of the chat template (their text in tokenizer.json); prompts put them in by id.
ENDOFTEXT_TOKEN: str
IM_START_TOKEN: str
IM_END_TOKEN: str
VISION_START_TOKEN: str
VISION_END_TOKEN: str
IMAGE_PAD_TOKEN: str
IMAGE_MARKER_TOKENS: int  # tokens an image takes besides its pads: <|vision_start|>, <|vision_end|>

class ContextOverflow:
    """A row that cannot fit: needed = fixed_tokens + image_tokens; fixed_tokens must fit beside the
    image pads within the context (an embedding: within max_length)."""

    field: str  # documents[i] / inputs[i]
    needed: int
    image_tokens: int
    fixed_tokens: int
    message: str
    def error(self) -> Exception:
        """The row's ContextTooLongError (field set), to raise."""

def build_vl_rerank_ids(
    tokenizer: Tokenizer,
    *,
    query: _PromptSide,
    documents: _Seq[_PromptSide],
    instruction: str | None = None,
    max_length: int = ...,
) -> list[list[int] | ContextOverflow]:
    """Qwen3-VL-Reranker ids of the query against each document (parallel, order kept), truncated
    officially; a row over the context is a ContextOverflow, the others are built."""

def build_vl_embed_ids(
    tokenizer: Tokenizer,
    *,
    inputs: _Seq[_PromptSide],
    instruction: str | None = None,
    max_length: int = ...,
) -> list[list[int] | ContextOverflow]:
    """Qwen3-VL-Embedding ids of each input; longer than max_length -> its first max_length ids, a
    ContextOverflow where that cut would go through an image's or video's tokens."""

def build_text_rerank_ids(
    tokenizer: Tokenizer,
    *,
    query: str,
    documents: _Seq[str],
    instruction: str | None = None,
    max_length: int = ...,
) -> list[list[int]]:
    """Qwen3-Reranker (text) ids of the query against each document: prefix + body cut to
    max_length - frame + suffix."""

def embed_instruction(instruction: str | None = None) -> str:
    """The embedder's instruction rule: strip; '.' appended unless it ends in P*; default if empty."""

def plan_batches(
    lengths: _Seq[int], *, max_batch_size: int, token_budget: int
) -> list[_npt.NDArray[_np.int64]]:
    """Index batches, longest first (stable); rows <= max_batch_size, rows * longest <= token_budget."""

def pad_batch(
    sequences: _Seq[_Seq[int]],
    *,
    pad_id: int,
    positions: _Seq[_npt.NDArray[_np.int64]] | None = None,
    pad_position: int = 1,
    min_width: int = 0,
) -> tuple[_npt.NDArray[_np.int64], _npt.NDArray[_np.int64], _npt.NDArray[_np.int64] | None]:
    """Right-pad: (input_ids (B, L), attention_mask (B, L), position_ids (3, B, L) or None)."""

# ---- rope ----

def mrope_position_ids(
    input_ids: _Seq[int] | _npt.NDArray[_np.int64],
    *,
    image_pad_id: int,
    image_grids: _Seq[tuple[int, int]],
    video_pad_id: int | None = None,
) -> _npt.NDArray[_np.int64]:
    """M-RoPE position ids (3, L) of one sequence; image_grids = merged (rows, cols) per image (and,
    with video_pad_id, per video frame pair: (H/32, W/32)), in prompt order."""

def mrope_position_ids_batch(
    input_ids: _npt.NDArray[_np.int64],
    *,
    lengths: _Seq[int],
    image_pad_id: int,
    image_grids: _Seq[_Seq[tuple[int, int]]],
    video_pad_id: int | None = None,
) -> _npt.NDArray[_np.int64]:
    """M-RoPE position ids (3, B, L) of a right-padded (B, L) batch; padding positions are 1."""

def vision_position_ids(grid_h: int, grid_w: int, *, merge_size: int = ...) -> _npt.NDArray[_np.int64]:
    """(row, col) of each patch, (N, 2), in merge-block order."""

def vision_rotary(
    grid_h: int, grid_w: int, *, head_dim: int, merge_size: int = ..., theta: float = 10000.0
) -> tuple[_npt.NDArray[_np.float32], _npt.NDArray[_np.float32]]:
    """Vision rotary (cos, sin), each (N, head_dim) float32, rows in merge-block order."""

def pos_embed_interpolation(
    grid_h: int, grid_w: int, *, num_grid_per_side: int, merge_size: int = ...
) -> tuple[_npt.NDArray[_np.int64], _npt.NDArray[_np.float32]]:
    """Bilinear corners (align_corners) into the learned position table: indices (N, 4), weights (N, 4)."""


class DecodeHold:
    """A hold on the process decode budget (env VLRANK_DECODE_BYTES_IN_FLIGHT, default 2 GiB) for decoding done
    outside the native decoders (PyAV video frames): ``with DecodeHold(nbytes): ...``. Holds
    ``min(nbytes, capacity)``, waiting with the GIL released until it fits."""

    def __init__(self, nbytes: int) -> None: ...
    @property
    def nbytes(self) -> int: ...
    def release(self) -> None: ...
    def __enter__(self) -> DecodeHold: ...
    def __exit__(self, *exc: object) -> bool: ...

def decode_budget() -> tuple[int, int]:
    """(capacity, bytes in use) of the process decode budget."""
