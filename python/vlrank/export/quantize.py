"""Weight-only block quantization of Linear weights for ONNX Runtime's ``com.microsoft.MatMulNBits``.

The layout (ORT's MatMulNBits contrib op, the one ``onnxruntime.quantization.matmul_nbits_quantizer``
writes; tests/test_quantized.py checks it against ORT's own kernel):
- attributes ``K`` (input width), ``N`` (output width), ``bits`` (4 | 8), ``block_size`` (a power of two
  >= 16), ``accuracy_level``;
- ``B``: uint8 ``[N, n_blocks, block_size · bits / 8]`` with ``n_blocks = ceil(K / block_size)``: each
  output column's K weights cut into blocks along K; 4-bit values pack two per byte, element 2i in the
  low nibble and 2i+1 in the high nibble;
- ``scales``: one float per (column, block), ``[N · n_blocks]`` in the compute dtype of ``A``;
- ``zero_points`` omitted: the default zero point is 2^(bits-1) (8 for int4, 128 for int8), so a stored
  unsigned value q means (q − 2^(bits-1)) · scale — symmetric quantization.

Symmetric per block (ORT's own symmetric rule): the block's element of largest magnitude, m, gets
scale = m / −2^(bits-1), so m maps exactly to −2^(bits-1) and every other element rounds into
[−2^(bits-1), 2^(bits-1) − 1] (an opposite-sign element of magnitude |m| clips to 2^(bits-1) − 1). An
all-zero block has scale 0 and stores the zero point.

A width K that is not a multiple of ``block_size`` is accepted: the last block is padded with zeros
(stored as the zero point), which MatMulNBits reads only up to K — so every Qwen width (e.g. the 2B
vision MLP's 4,304) works with every block size. The nn.Linear weight ``[N, K]`` (out, in) is already
the column-major order MatMulNBits wants, so no transpose is made; weights are read and quantized in
row chunks straight from the checkpoint's memory map, so the export's peak memory stays one chunk above
the output it writes.

int8 compute (``precision="int8"``, docs/precision.md): the same Linears multiply int8 activations by
int8 weights in ONNX Runtime's integer GEMMs (AVX2 / AVX-512 VNNI kernels) instead of dequantizing to
float32. Which kernel takes which Linear (``compute_op``), chosen by benches/bench_int8_kernels.py
(docs/notes.md, "Round 5 — h2"):
- int8 weights: ``com.microsoft.DynamicQuantizeMatMul`` — weights int8 per output channel (symmetric,
  7 bits used: ``CHANNEL_QMAX``, ``quantize_channels``), activations quantized at run time to uint8 with one scale per tensor;
- the outlier guard: the Linears whose input is an MLP activation (``down_proj``, the vision
  ``linear_fc2``) and the vision mergers (their output is the decoder's input embedding) — where Qwen's
  massive activations live (ORT #29849) — stay ``MatMulNBits`` with per-block weights, at accuracy level
  4: activations quantized per row and per block of ``block_size`` along K, so an outlier channel or an
  attention-sink token coarsens only its own block, not the whole tensor;
- int4 weights: every Linear ``MatMulNBits`` at accuracy level 4 (DynamicQuantizeMatMul takes 8-bit
  weights only).
The yes/no head, the final norm and the pooled embedding are float32 in every export (decoder.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from vlrank.errors import InvalidInputError
from vlrank.export.checkpoint import _widen

SCHEMES = {"int8": 8, "int4": 4}
# Block sizes MLAS (ORT's CPU kernels) implements for MatMulNBits; CUDA takes the same powers of two.
BLOCK_SIZES = (16, 32, 64, 128, 256)
DEFAULT_BLOCK_SIZE = 32
# 0: the weights are dequantized and the GEMM runs in float32. 4 (int8 activations) is faster but moves
# the yes/no logit by ~an order of magnitude more (benches/RESULTS.md, "Quantized exports"), the
# failure ORT issue #29849 reports on Qwen3-0.6B's argmax.
DEFAULT_ACCURACY_LEVEL = 0
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
OP = "MatMulNBits"
DQMM = "DynamicQuantizeMatMul"
#: MatMulNBits' accuracy level for int8 activations (MLAS's CompInt8)
INT8_ACCURACY_LEVEL = 4
#: Linears kept at per-block activation scales in an int8-compute export (the outlier guard, module docstring):
#: the last name component, or the first for the vision mergers
GUARDED = ("down_proj", "linear_fc2", "merger", "deepstack_merger_list")

# DynamicQuantizeMatMul's weights use 7 of their 8 bits (±63, ORT's "reduce_range"): on an AVX2 CPU without
# VNNI, MLAS multiplies uint8 activations by int8 weights with vpmaddubsw, whose int16 pair sums saturate
# above 32,767 (255·127·2 = 64,770); with |w| <= 63 they cannot (255·63·2 = 32,130). Measured on this AMD
# EPYC (AVX2, no VNNI): max relative GEMM error 6e-2..1e-1 with ±127 weights, 2e-2 with ±63
# (benches/bench_int8_kernels.py, docs/notes.md "Round 5 — h2"). VNNI CPUs do not saturate; one shared
# export format for both costs half a weight bit there.
CHANNEL_QMAX = 63

# Rows of a weight quantized at once: bounds the float32 temporaries to ~16 MiB at the 8B widths.
_ROW_CHUNK = 1024


@dataclass(frozen=True)
class Quantization:
    """What a quantized export uses; recorded in the manifest under ``quantization``."""

    scheme: str  # "int8" | "int4"
    block_size: int = DEFAULT_BLOCK_SIZE
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL
    compute: str = "float32"  # "float32" (weight-only) | "int8" (int8 activations, precision="int8")

    @property
    def bits(self) -> int:
        return SCHEMES[self.scheme]

    def manifest(self) -> dict:
        doc = {"scheme": self.scheme, "bits": self.bits, "block_size": self.block_size,
               "accuracy_level": self.accuracy_level, "symmetric": True, "op": "com.microsoft." + OP}
        if self.compute == "int8":  # weight-only manifests stay exactly as they were
            doc.update(compute="int8", guarded=list(GUARDED), ops={
                "default": "com.microsoft." + (DQMM if self.bits == 8 else OP),
                "guarded": "com.microsoft." + OP})
        return doc

    def compute_op(self, name: str) -> str:
        """The op that computes Linear ``name`` (e.g. "layers.3.mlp.down_proj", "merger.linear_fc1")."""
        if self.compute != "int8" or self.bits != 8:
            return OP
        parts = name.split(".")
        return OP if parts[-1] in GUARDED or parts[0] in GUARDED else DQMM


def check_quantize(quantize: str | None, *, block_size: int = DEFAULT_BLOCK_SIZE,
                   accuracy_level: int | None = None, precision: str = "float32",
                   dtype: str = "float32") -> Quantization | None:
    """The validated quantization of an export (None: no quantization); typed errors name the field.
    ``accuracy_level`` None: the precision's own (0 for float32 compute, 4 for int8)."""
    if precision == "int8":
        return _check_int8(quantize, block_size=block_size, accuracy_level=accuracy_level, dtype=dtype)
    if accuracy_level is None:
        accuracy_level = DEFAULT_ACCURACY_LEVEL
    if quantize is None:
        return None
    if quantize not in SCHEMES:
        raise InvalidInputError(f"quantize={quantize!r}; pass quantize='int8' or quantize='int4' (CLI: --quantize "
                                "int8|int4), or leave it unset for unquantized weights", field="quantize")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size not in BLOCK_SIZES:
        raise InvalidInputError(f"block_size={block_size!r}; pass a power of two from {BLOCK_SIZES[0]} to "
                                f"{BLOCK_SIZES[-1]} ({', '.join(map(str, BLOCK_SIZES))}; default "
                                f"{DEFAULT_BLOCK_SIZE})", field="block_size")
    if isinstance(accuracy_level, bool) or accuracy_level not in ACCURACY_LEVELS:
        raise InvalidInputError(f"accuracy_level={accuracy_level!r}; pass 0 (float32 compute, the default) or "
                                "4 (int8 activations)", field="accuracy_level")
    if precision != "float32":
        raise InvalidInputError(f"quantize={quantize!r} builds a CPU graph (MatMulNBits computes in float32 or "
                                f"int8 on the CPU); precision={precision!r} is not supported with it: pass "
                                "precision='float32' (weight-only) or precision='int8' (int8 compute)",
                                field="precision")
    return Quantization(quantize, block_size, accuracy_level)


def _check_int8(quantize: str | None, *, block_size: int, accuracy_level: int | None, dtype: str) -> Quantization:
    """precision="int8": int8 weights or int4 weights, int8 activations, a float32 CPU graph around them."""
    if quantize is None:
        raise InvalidInputError("precision='int8' multiplies int8 activations by quantized weights; pass "
                                "quantize='int8' (or 'int4') with it (CLI: --quantize int8 --precision int8), or "
                                "precision='float32' for an unquantized export", field="quantize")
    if isinstance(accuracy_level, bool) or accuracy_level not in (None, INT8_ACCURACY_LEVEL):
        raise InvalidInputError(f"accuracy_level={accuracy_level!r} with precision='int8'; int8 compute is "
                                f"accuracy level {INT8_ACCURACY_LEVEL}: leave accuracy_level unset (or pass "
                                f"{INT8_ACCURACY_LEVEL}), or pass precision='float32' for level 0",
                                field="accuracy_level")
    if dtype != "float32":
        raise InvalidInputError(f"dtype={dtype!r} with precision='int8'; an int8-compute export is a CPU graph "
                                "whose non-Linear weights stay float32 (the token table is stored half size "
                                "anyway): pass dtype='float32' (or leave --dtype unset)", field="dtype")
    q = check_quantize(quantize, block_size=block_size, accuracy_level=INT8_ACCURACY_LEVEL)
    return Quantization(q.scheme, q.block_size, INT8_ACCURACY_LEVEL, compute="int8")


def embedding_storage(dtype: str, stored: str) -> str:
    """Storage of the token embedding table in a quantized export: half size always (it is ~1/4 of a
    2B model's weights and is only gathered, never multiplied): ``dtype`` when it is already half, else
    bfloat16 for a bf16 checkpoint (lossless) and float16 otherwise (10 mantissa bits against bf16's 7)."""
    if dtype != "float32":
        return dtype
    return "bfloat16" if stored == "BF16" else "float16"


def quantize_blocks(weight: np.ndarray, *, bits: int, block_size: int,
                    stored: str = "F32") -> tuple[np.ndarray, np.ndarray]:
    """``weight`` [N, K] (an nn.Linear's (out, in); ``stored``: its safetensors dtype tag, "BF16" for raw
    bf16 bits) -> (B uint8 [N, n_blocks, blob], scales float32 [N, n_blocks]), symmetric, in
    MatMulNBits' layout (module docstring)."""
    n, k = weight.shape
    n_blocks = -(-k // block_size)
    zp = 1 << (bits - 1)
    packed = np.empty((n, n_blocks, block_size * bits // 8), np.uint8)
    scales = np.empty((n, n_blocks), np.float32)
    for start in range(0, n, _ROW_CHUNK):
        rows = _widen(np.asarray(weight[start : start + _ROW_CHUNK]), stored)
        if k % block_size:
            rows = np.pad(rows, ((0, 0), (0, n_blocks * block_size - k)))
        blocks = rows.reshape(rows.shape[0], n_blocks, block_size)
        idx = np.abs(blocks).argmax(axis=-1)[..., None]
        scale = np.take_along_axis(blocks, idx, axis=-1) / np.float32(-zp)  # (r, n_blocks, 1)
        inv = np.divide(np.float32(1.0), scale, out=np.zeros_like(scale), where=scale != 0)
        q = np.clip(np.rint(blocks * inv) + zp, 0, 2 * zp - 1).astype(np.uint8)
        if bits == 4:
            q = q[..., 0::2] | (q[..., 1::2] << 4)
        packed[start : start + rows.shape[0]] = q
        scales[start : start + rows.shape[0]] = scale[..., 0]
    return packed, scales


def dequantize_blocks(packed: np.ndarray, scales: np.ndarray, *, bits: int, k: int) -> np.ndarray:
    """The float32 [N, K] weight MatMulNBits computes with (the inverse of ``quantize_blocks``)."""
    if bits == 4:
        q = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), np.uint8)
        q[..., 0::2] = packed & 0x0F
        q[..., 1::2] = packed >> 4
    else:
        q = packed
    values = (q.astype(np.float32) - (1 << (bits - 1))) * scales[..., None]
    return values.reshape(values.shape[0], -1)[:, :k]


def quantize_channels(weight: np.ndarray, *, stored: str = "F32") -> tuple[np.ndarray, np.ndarray]:
    """``weight`` [N, K] -> (B int8 [K, N], scales float32 [N]): symmetric per output channel, the
    channel's largest magnitude m stored as ±CHANNEL_QMAX (scale m / 63; an all-zero channel has scale 0).
    DynamicQuantizeMatMul's B is the (in, out) matrix, so the rows are transposed chunk by chunk."""
    n, k = weight.shape
    q = np.empty((k, n), np.int8)
    scales = np.empty(n, np.float32)
    for start in range(0, n, _ROW_CHUNK):
        rows = _widen(np.asarray(weight[start : start + _ROW_CHUNK]), stored)
        scale = (np.abs(rows).max(axis=1) / np.float32(CHANNEL_QMAX)).astype(np.float32)
        inv = np.divide(np.float32(1.0), scale, out=np.zeros_like(scale), where=scale != 0)
        q[:, start : start + rows.shape[0]] = np.clip(np.rint(rows * inv[:, None]), -CHANNEL_QMAX,
                                                      CHANNEL_QMAX).astype(np.int8).T
        scales[start : start + rows.shape[0]] = scale
    return q, scales


def quantized_linear(g, x: str, name: str, weight: np.ndarray, q: Quantization, *, stored: str = "F32") -> str:
    """``x @ weight.T`` for Linear ``name`` of a quantized export, through the op ``q.compute_op(name)``
    picks: MatMulNBits (weight-only, int4, and the int8 guard) or DynamicQuantizeMatMul (int8 compute)."""
    if q.compute_op(name) == OP:
        return matmul_nbits(g, x, name, weight, q, stored=stored)
    packed, scales = quantize_channels(weight, stored=stored)
    b = g.initializer(f"{name}.q8c", packed, elem_type=onnx.TensorProto.INT8)
    s = g.initializer(f"{name}.channel_scales", scales)
    del packed, scales
    return g.op(DQMM, [x, b, s], domain="com.microsoft")


def matmul_nbits(g, x: str, name: str, weight: np.ndarray, q: Quantization, *, stored: str = "F32") -> str:
    """``x @ weight.T`` as one MatMulNBits node of graph ``g`` (export/graph.py); ``weight`` is [N, K]
    (``stored`` as in ``quantize_blocks``)."""
    n, k = weight.shape
    packed, scales = quantize_blocks(weight, bits=q.bits, block_size=q.block_size, stored=stored)
    b = g.initializer(f"{name}.q{q.bits}", packed)
    s = g.initializer(f"{name}.scales", scales.reshape(-1))
    del packed, scales
    return g.op(OP, [x, b, s], domain="com.microsoft", K=k, N=n, bits=q.bits, block_size=q.block_size,
                accuracy_level=q.accuracy_level)


__all__ = ["SCHEMES", "BLOCK_SIZES", "DEFAULT_BLOCK_SIZE", "DEFAULT_ACCURACY_LEVEL", "GUARDED",
           "INT8_ACCURACY_LEVEL", "Quantization", "check_quantize", "embedding_storage", "quantize_blocks",
           "dequantize_blocks", "quantize_channels", "quantized_linear", "matmul_nbits"]
