"""Quantized embedding outputs: ``Embedder.embed(..., output_type=...)`` and Cohere's ``embedding_types``.

One scheme, applied to the final vector (after ``dimensions=`` truncated and re-normalised it):

- ``float``: the float32 values as they are.
- ``int8``: ``round(x * 127 / max|x|)``, in [-127, 127]. The scale is per vector (its largest magnitude maps
  to 127). Why per vector: the vectors are unit length and compared by cosine / normalised dot product, which a
  per-vector scale does not change, while a fixed scale cannot serve every dimension at once (a 2,048-d unit
  vector's values are near 1/45, so ``x * 127`` would leave it about 3 levels). The round trip
  ``q * max|x| / 127`` is within ``max|x| / 254`` of ``x`` in every component.
- ``uint8``: the int8 value plus 128, in [1, 255] (for stores that take unsigned bytes; subtract 128 before
  comparing).
- ``ubinary``: one bit per dimension, 1 where ``x > 0``, packed 8 to a byte most significant bit first (as
  Cohere and sentence-transformers ``quantize_embeddings`` do); a last partial byte is padded with 0 bits.
  Hamming distance between two codes counts the dimensions whose signs differ.
- ``binary``: the same bytes as signed values (byte - 128, in [-128, 127]), as Cohere and
  sentence-transformers write them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlrank.errors import InvalidInputError

OUTPUT_TYPES = ("float", "int8", "uint8", "binary", "ubinary")


def check_output_type(value: Any, *, field: str = "output_type") -> str:
    """``value`` if it names an output type, else a typed error naming ``field``."""
    if not isinstance(value, str) or value not in OUTPUT_TYPES:
        raise InvalidInputError(f"{field}={value!r}; pass one of " + ", ".join(repr(t) for t in OUTPUT_TYPES),
                                field=field)
    return value


def quantize(vec: np.ndarray, output_type: str) -> np.ndarray:
    """One float vector in ``output_type`` (module docstring): float32, int8 or uint8 values."""
    vec = np.asarray(vec, dtype=np.float32)
    if output_type == "float":
        return vec
    if output_type in ("int8", "uint8"):
        peak = float(np.max(np.abs(vec))) if vec.size else 0.0
        scale = 127.0 / peak if peak > 0 else 0.0
        q = np.clip(np.rint(vec.astype(np.float64) * scale), -127, 127).astype(np.int8)
        return q if output_type == "int8" else (q.astype(np.int16) + 128).astype(np.uint8)
    if output_type in ("binary", "ubinary"):
        packed = np.packbits(vec > 0, bitorder="big")
        return packed if output_type == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    raise InvalidInputError(f"output_type={output_type!r}; pass one of {', '.join(OUTPUT_TYPES)}",
                            field="output_type")


def dequantize_int8(q: np.ndarray, *, peak: float) -> np.ndarray:
    """The int8 round trip: ``q * peak / 127`` (``peak``: the vector's max |x|, which the client keeps if it
    needs absolute values; cosine comparisons do not)."""
    return np.asarray(q, dtype=np.float64) * (peak / 127.0)


def as_json(values: np.ndarray) -> list[Any]:
    """Python floats for float32 values, ints for the quantized ones (JSON arrays)."""
    if values.dtype == np.float32:
        return [float(v) for v in values]
    return values.astype(np.int64).tolist()


def raw_bytes(values: np.ndarray) -> bytes:
    """The values' bytes for ``encoding_format="base64"``: little-endian float32, or one byte per value."""
    return values.astype("<f4").tobytes() if values.dtype == np.float32 else values.tobytes()


__all__ = ["OUTPUT_TYPES", "check_output_type", "quantize", "dequantize_int8", "as_json", "raw_bytes"]
