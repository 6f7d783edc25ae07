"""The Qwen3 / Qwen3-VL text decoder as one ONNX graph, ending in the task head.

Semantics follow transformers' Qwen3 / Qwen3-VL text models computed in float32 (the golden reference):
- RMSNorm: variance = mean(x²) in f32, x · rsqrt(var + eps), then weight · x (weight multiplies last).
- q/k-norm: the same RMSNorm per head over head_dim, before RoPE.
- RoPE: inv_freq = 1 / θ^(2i/d) in float32 (bf16 inv_freq shifts scores ~1e-4), freqs = pos · inv_freq
  in f32, emb = [freqs, freqs], x·cos + rotate_half(x)·sin. Qwen3-VL: interleaved M-RoPE — frequency j
  takes its position from axis h when j ≡ 1 (mod 3) and j < 3·section[1], from w when j ≡ 2 (mod 3)
  and j < 3·section[2], else from t (transformers' ``apply_interleaved_mrope``).
- GQA: query head h reads kv head h // (heads / kv_heads); scores = (q·kᵀ)·head_dim^-½, softmax in f32.
- Image features replace the ``<|image_pad|>`` embeddings and video frame-pair features the
  ``<|video_pad|>`` ones (one feature sequence over both kinds, row-major order over the batch); DeepStack
  features are added at those positions after decoder layers 0..K-1.
- Only the last real token of each row reaches the final norm and the head (right padding, so it sits at
  sum(attention_mask) − 1); the final layer already computes that token alone (see ``layer``). Right padding never changes a real token: causality already hides the
  padding behind it, and the padding keys are masked as well.

Shared prompt prefix (rerank graphs exported with ``prefix_kv=True``): optional inputs ``past_key.{i}`` / ``past_value.{i}``
(1, kv_heads, P, head_dim) in the compute dtype — a prefix's K/V of layer i, default empty — make the
rows a suffix attending to that prefix: every key of the prefix is real, the suffix's positions are the
ones the full prompt gives it (the caller feeds them), and the pruned final layer reads the prefix keys
too. Outputs ``present_key.{i}`` / ``present_value.{i}`` are the first ``prefix_keep`` (default 0) tokens
of each layer's K/V: a prefix pass asks for all of them, every other run gets empty outputs, so the full
path holds no K/V past its layer. GroupQueryAttention takes a non-empty past only at batch 1 (ORT 1.32:
"batch_size must be 1 when sequence_length > 1 and past context is given"), so suffix rows run one per
run; with the empty default it batches as before (its check is sequence_length != total_length).

Precision (``precision``): "float32" (the CPU graph) computes everything in float32. "float16" / "bfloat16"
(CUDA graphs, weights stored in that dtype) run the MatMuls and the fused attention in half, as
onnxruntime-genai's builder does; RMSNorm and its statistics, q/k-norm, the rotary tables, the residual
stream, SiLU, the pruned final layer's one-query softmax and the head stay float32, and so do the outputs.

For a float32 graph, weights stored as float16/bfloat16 are cast to float32 inside the graph; ORT constant-folds those Casts
at session load, so compute (and scores) stay float32 on CPU, whose ORT kernels lack most fp16 ops. The
token embedding table is the exception: it is gathered in its storage dtype and only the gathered rows
are cast, so the 151,936-row table stays half size in memory.

Quantized exports (``quant``, export/quantize.py): every Linear (q/k/v/o, gate/up/down) is one
``com.microsoft.MatMulNBits`` over int8 / int4 block-quantized weights, computing in float32; the
embedding table is stored half size (export/quantize.embedding_storage); norms, the rotary tables, the
yes/no score rows and the pooled embedding stay float32.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vlrank.export.checkpoint import Checkpoint, TextConfig
from vlrank.errors import InvalidInputError
from vlrank.export.quantize import Quantization, embedding_storage, quantized_linear
from vlrank.export.graph import BOOL, FLOAT, INT32, INT64, MS_DOMAIN, STORAGE_TYPES, Graph
from vlrank.modeldir import DECODER_FILE

# Large negative instead of -inf: a fully masked row (an all-padding row) then gives a uniform softmax
# rather than NaN; a masked score still contributes exactly 0 after exp().
_MASKED = -1e30

PRECISIONS = ("float32", "float16", "bfloat16")


def check_precision(precision: str, dtype: str) -> None:
    """``precision`` is the compute dtype of the graph; a half-precision graph stores its weights in that
    same dtype (``dtype`` must equal it), a float32 graph may store them in any of the three."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision={precision!r}; pass one of {', '.join(PRECISIONS)}",
                                field="precision")
    if precision != "float32" and dtype != precision:
        raise InvalidInputError(
            f"precision={precision!r} stores weights as {precision}, but dtype={dtype!r}; pass "
            f"dtype={precision!r} (or precision='float32' for a float32-compute graph)", field="dtype")


def inv_freq(cfg: TextConfig) -> np.ndarray:
    """Rotary inverse frequencies exactly as transformers computes them: float32 throughout."""
    d = cfg.head_dim
    exponents = np.arange(0, d, 2, dtype=np.int64).astype(np.float32) / np.float32(d)
    return (np.float32(1.0) / np.power(np.float32(cfg.rope_theta), exponents)).astype(np.float32)


def mrope_axis_of_frequency(cfg: TextConfig) -> np.ndarray:
    """For each of the head_dim/2 frequencies, the position axis (0=t, 1=h, 2=w) it reads."""
    section = cfg.mrope_section or (cfg.head_dim // 2, 0, 0)
    axis = np.zeros(cfg.head_dim // 2, dtype=np.int64)
    for dim, offset in ((1, 1), (2, 2)):
        axis[offset : section[dim] * 3 : 3] = dim
    return axis


class DecoderBuilder:
    """Builds decoder.onnx for one checkpoint and task."""

    def __init__(self, ckpt: Checkpoint, *, task: str, dtype: str, yes_id: int, no_id: int,
                 image_token_id: int | None, deepstack_layers: int, precision: str = "float32",
                 quant: Quantization | None = None,
                 video_token_id: int | None = None, prefix_kv: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> None:
        check_precision(precision, dtype)
        self.ck = ckpt
        self.cfg = ckpt.text
        self.task = task
        self.storage = dtype
        self.precision = precision
        self.half = None if precision == "float32" else STORAGE_TYPES[precision]
        self.quant = quant
        self.yes_id = yes_id
        self.no_id = no_id
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        self.deepstack_layers = deepstack_layers
        self.progress = progress or (lambda done, total: None)
        self.prefix = ckpt.text_prefix
        self.g = Graph("vlrank_decoder")
        # Shared-prefix inputs / outputs (module docstring; export(prefix_kv=True), rerank only).
        self.prefix_kv = prefix_kv
        # Compute the final layer for the last token only (see ``layer``); off only to measure it.
        self.prune_last_layer = True

    # ---- weights -------------------------------------------------------------------------------------
    def _w(self, name: str) -> str:
        """A 1-D weight (norm scales): always float32 (tiny, and RMSNorm multiplies in f32)."""
        return self.g.initializer(name, self.ck.tensor(self.prefix + name))

    def _matmul(self, x: str, name: str) -> str:
        """``x`` through the bias-free nn.Linear ``name``: the quantized op export/quantize.py picks for it
        (quantized exports: MatMulNBits, or an int8 kernel with precision "int8"), else a MatMul with the
        weight as (in, out), in the compute dtype."""
        if self.quant is not None:  # quantized straight from the checkpoint's [out, in] memory map
            return quantized_linear(self.g, x, name, self.ck.raw(self.prefix + name + ".weight"), self.quant,
                                    stored=self.ck.info(self.prefix + name + ".weight").dtype)
        w = self.ck.tensor(self.prefix + name + ".weight", self.storage)
        if self.half is not None:  # stored as the compute dtype: the MatMul reads it as is
            return self.g.matmul(x, self.g.initializer(name, np.ascontiguousarray(w.T), elem_type=self.half))
        return self.g.matmul(x, self.g.weight(name, np.ascontiguousarray(w.T), storage=self.storage))

    def _to_compute(self, x: str) -> str:
        """A float32 activation as the MatMul / attention input dtype (identity for float32 graphs)."""
        return x if self.half is None else self.g.cast(x, self.half)

    def _f32(self, x: str) -> str:
        """A MatMul / attention output back to float32 (identity for float32 graphs)."""
        return x if self.half is None else self.g.cast(x, FLOAT)

    # ---- blocks --------------------------------------------------------------------------------------
    def rms_norm(self, x: str, weight: str) -> str:
        g = self.g
        var = g.reduce_mean(g.mul(x, x), [-1])
        inv = g.reciprocal(g.sqrt(g.add(var, g.const(self.cfg.rms_norm_eps, np.float32))))
        return g.mul(weight, g.mul(x, inv))

    def rope(self, x: str, cos: str, sin: str) -> str:
        g = self.g
        half = self.cfg.head_dim // 2
        x1, x2 = g.split(x, [half, half], axis=-1)
        rotated = g.concat([g.neg(x2), x1], axis=-1)
        return g.add(g.mul(x, cos), g.mul(rotated, sin))

    def rotary_tables(self, position_ids: str) -> tuple[str, str]:
        """cos, sin of shape (B, L, 1, head_dim) (broadcast over the heads of (B, L, heads, hd)), float32,
        shared by every layer."""
        g, cfg = self.g, self.cfg
        freq = g.const(inv_freq(cfg), np.float32)
        pos = g.unsqueeze(g.cast(position_ids, FLOAT), [-1])
        freqs = g.mul(pos, freq)  # (B, L, d/2) or (3, B, L, d/2)
        if self.ck.family == "qwen3_vl":
            axis = mrope_axis_of_frequency(cfg)
            onehot = (np.arange(3)[:, None] == axis[None, :]).astype(np.float32).reshape(3, 1, 1, -1)
            # Selecting by a one-hot multiply and sum is exact: every other term is exactly 0.
            freqs = g.reduce_sum(g.mul(freqs, g.const(onehot, np.float32)), [0], keepdims=0)
        emb = g.concat([freqs, freqs], axis=-1)
        return g.unsqueeze(g.cos(emb), [2]), g.unsqueeze(g.sin(emb), [2])

    def sequence_lengths(self, attention_mask: str, past_len: str | None = None) -> tuple[str, str]:
        """GroupQueryAttention's per-row ``seqlens_k`` (real length − 1, int32 (B,)) and
        ``total_sequence_length`` (L, int32 scalar), computed from the right-padded attention_mask.
        ``past_len`` ((1,) int64): the prefix tokens before every row, counted in both (0: the full path)."""
        g = self.g
        lengths = g.reduce_sum(attention_mask, [1], keepdims=0)  # (B,)
        total = g.shape(attention_mask, 1, 2)  # (1,)
        if past_len is not None:
            lengths, total = g.add(lengths, past_len), g.add(total, past_len)
        seqlens_k = g.cast(g.sub(lengths, g.const(1)), INT32)
        total = g.cast(g.squeeze(total, [0]), INT32)
        return seqlens_k, total

    def mask_bias(self, keep: str) -> str:
        """A bool keep-mask as an additive float bias (0 / _MASKED), built once per graph.

        Why not ``Where(mask, scores, _MASKED)``: ORT's CPU Where broadcasts the mask over
        the heads with a generic, unvectorised loop — 15% of a text-rerank call and 30% of an image-rerank
        decoder run (long rows) at 4 layers. ``scores + bias`` is a vectorised Add and gives the same
        values bit for bit: ``s + 0 == s``, and ``s + _MASKED`` rounds to exactly _MASKED for any |s| <
        1e22 (half an ulp of 1e30), so masked scores and softmax outputs are unchanged. The bias is
        (float(keep) - 1) · 1e30, exactly 0 or _MASKED, with vectorised Cast/Sub/Mul (a Where here costs
        as much as the Add it saves)."""
        g = self.g
        keep = g.cast(keep, FLOAT)
        return g.mul(g.sub(keep, g.const(1.0, np.float32)), g.const(-_MASKED, np.float32))

    def layer(self, i: int, x: str, cos: str, sin: str, lengths: tuple[str, str], last_mask: str,
              last: str | None = None, past: tuple[str, str, str] | None = None) -> str:
        """One decoder layer. With ``last`` ((B, 1) index of each row's last real token) only that token's
        output is computed — (B, 1, H) — since nothing downstream reads the others: keys and values still
        come from every token, but the query, o_proj and MLP run on one row (the final layer's share of
        the compute, ~1/num_layers, saved). ``past``: this layer's prefix (key, value, keep) — the prefix
        K/V (B, kv_heads, P, hd) the rows attend to and how many tokens of K/V to output."""
        g, cfg = self.g, self.cfg
        p = f"layers.{i}."
        nh, nkv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        h = self.rms_norm(x, self._w(p + "input_layernorm.weight"))
        hh = self._to_compute(h)
        k = g.reshape(self._f32(self._matmul(hh, p + "self_attn.k_proj")), [0, 0, nkv, hd])
        v = g.reshape(self._matmul(hh, p + "self_attn.v_proj"), [0, 0, nkv * hd])
        if last is not None:
            x = g.unsqueeze(g.op("GatherND", [x, last], batch_dims=1), [1])  # (B, 1, H)
            hh = g.unsqueeze(g.op("GatherND", [hh, last], batch_dims=1), [1])
            cos_q = g.unsqueeze(g.op("GatherND", [g.squeeze(cos, [2]), last], batch_dims=1), [1, 2])
            sin_q = g.unsqueeze(g.op("GatherND", [g.squeeze(sin, [2]), last], batch_dims=1), [1, 2])
        else:
            cos_q, sin_q = cos, sin
        q = g.reshape(self._f32(self._matmul(hh, p + "self_attn.q_proj")), [0, 0, nh, hd])
        # (B, L, heads, hd) layout: q/k-norm and RoPE are per element of a head, so the layout changes no
        # value, and GroupQueryAttention reads (B, L, heads·hd) without a transpose.
        q = self.rope(self.rms_norm(q, self._w(p + "self_attn.q_norm.weight")), cos_q, sin_q)
        k = self.rope(self.rms_norm(k, self._w(p + "self_attn.k_norm.weight")), cos, sin)
        post_norm = self._w(p + "post_attention_layernorm.weight")
        if last is None:
            ctx, present = self.fused_attention(q, k, v, lengths, past)
            post_norm = g.add(post_norm, self.release(*present))  # + 0.0: lets ORT free this layer's K/V now
        else:
            keys = g.transpose(k, [0, 2, 1, 3])  # (B, nkv, L, hd)
            values = g.transpose(g.reshape(self._f32(v), [0, 0, nkv, hd]), [0, 2, 1, 3])
            if past is not None:  # the prefix's keys come first: P + L keys, all of the prefix real
                keys = g.concat([self._f32(past[0]), keys], axis=2)
                values = g.concat([self._f32(past[1]), values], axis=2)
                present = (self._to_compute(keys), self._to_compute(values))
            ctx = self.last_token_attention(q, keys, values, last_mask)
        if past is not None:
            self.prefix_outputs(i, present, past[2])
        x = g.add(x, self._f32(self._matmul(ctx, p + "self_attn.o_proj")))
        h = self._to_compute(self.rms_norm(x, post_norm))
        # SiLU·up in float32: the half graphs then hold only MatMul, attention, Cast and data-movement ops
        # in half, each with a CUDA kernel for fp16 and bf16 (tests/test_attention_graphs.py).
        gate = self._f32(self._matmul(h, p + "mlp.gate_proj"))
        up = self._f32(self._matmul(h, p + "mlp.up_proj"))
        act = self._to_compute(g.mul(g.mul(gate, g.sigmoid(gate)), up))
        return g.add(x, self._f32(self._matmul(act, p + "mlp.down_proj")))

    def fused_attention(self, q: str, k: str, v: str, lengths: tuple[str, str],
                        past: tuple[str, str, str] | None = None) -> tuple[str, tuple[str, str]]:
        """Causal GQA over every token with ORT's fused ``com.microsoft.GroupQueryAttention``: no (L × L)
        tensor exists. Chosen by measurement (ORT 1.32 CPU, one node, 16/8 heads, head_dim 128, 8,192
        tokens): GroupQueryAttention +274 MB and 3.7 s; opset-24 ``Attention`` (is_causal, nonpad_kv_seqlen)
        +4.3 GB and 16-23 s — its CPU kernel materialises (heads × L × L) — and opset-23 ``Attention``
        needs an (Lq × Lk) mask for padding. Right padding is per-row lengths (``seqlens_k`` = length − 1):
        a real query reads keys 0..itself only, so padding keys never reach it; padding rows' outputs are
        never read. q/k arrive normed and rotated (do_rotary=0): the M-RoPE and q/k-norm stay exactly the
        reference's float32 math. Inputs (B, L, heads·hd) in the compute dtype; returns (B, L, nh·hd) and
        the present K/V ((B, kv_heads, P + L, hd): the prefix's then these rows')."""
        g, cfg = self.g, self.cfg
        seqlens_k, total = lengths
        q = g.reshape(self._to_compute(q), [0, 0, cfg.num_heads * cfg.head_dim])
        k = g.reshape(self._to_compute(k), [0, 0, cfg.num_kv_heads * cfg.head_dim])
        past_k, past_v = ("", "") if past is None else past[:2]
        ctx, present_k, present_v = g.op(
            "GroupQueryAttention", [q, k, v, past_k, past_v, seqlens_k, total], outputs=3, domain=MS_DOMAIN,
            num_heads=cfg.num_heads, kv_num_heads=cfg.num_kv_heads, scale=float(cfg.head_dim**-0.5), do_rotary=0)
        return ctx, (present_k, present_v)

    def prefix_inputs(self, batch: str) -> tuple[list[tuple[str, str, str]], str]:
        """Per layer (past key, past value, keep) and the prefix length P ((1,) int64). The past inputs
        default to empty (1, kv_heads, 0, hd) initializers — a graph input with an initializer is optional
        — and are broadcast to the batch (an empty tensor at batch > 1; a batch-1 suffix run feeds one)."""
        g, cfg = self.g, self.cfg
        dtype = FLOAT if self.half is None else self.half
        shape = [1, cfg.num_kv_heads, "prefix", cfg.head_dim]
        keep = g.input("prefix_keep", INT64, [1])
        g.initializer(keep, np.zeros(1, np.int64))
        expand = g.concat([batch, g.const([1, 1, 1])], axis=0)
        empty = np.zeros((1, cfg.num_kv_heads, 0, cfg.head_dim), np.float32)
        layers = []
        for i in range(cfg.num_layers):
            pair = []
            for kind in ("key", "value"):
                name = g.input(f"past_{kind}.{i}", dtype, shape)
                g.initializer(name, empty, elem_type=dtype)
                pair.append(g.op("Expand", [name, expand]))
            layers.append((pair[0], pair[1], keep))
        return layers, g.shape("past_key.0", 2, 3)

    def prefix_outputs(self, i: int, present: tuple[str, str], keep: str) -> None:
        """Layer i's first ``keep`` tokens of K/V as outputs ``present_key.{i}`` / ``present_value.{i}``."""
        g, cfg = self.g, self.cfg
        dtype = FLOAT if self.half is None else self.half
        for kind, value in zip(("key", "value"), present):
            kept = g.op("Slice", [value, g.const([0]), keep, g.const([2])])
            g.output(kept, f"present_{kind}.{i}", dtype, ["batch", cfg.num_kv_heads, "kept", cfg.head_dim])

    def release(self, *values: str) -> str:
        """A float32 scalar 0.0 computed from ``values`` (each sliced to zero elements first: no work).

        Why: GroupQueryAttention always writes its present K/V (B, kv_heads, L, head_dim) outputs, and ORT
        1.32 holds an output nobody consumes until the end of the run: 2 · L · kv_heads · head_dim floats
        per layer that pile up with depth (measured at 2B widths and 8,192 tokens: 28 layers +2.67 GB, of
        which ~1.5 GB are the 27 fused layers' K/V). Consumed by an empty Slice whose zero-sum is added to
        the next norm's weight (w + 0.0 == w bit for bit), each layer's K/V is freed as soon as the layer is
        done. Cast before ReduceSum: the reduce runs in float32 in every precision."""
        g = self.g
        parts = [g.cast(g.slice(v, [0], [0], [2]), FLOAT) for v in values]
        return g.reduce_sum(g.concat(parts, axis=2), [0, 1, 2, 3], keepdims=0)

    def last_token_attention(self, q: str, k: str, v: str, last_mask: str) -> str:
        """Attention of one query per row (the pruned final layer) over every key: scores are (B, heads,
        1, L), linear in L, so the explicit MatMul-Softmax-MatMul costs no (L × L) memory. Softmax in f32.
        GQA without copying K/V: the g query heads of one kv head are g rows of one GEMM (head h = kv·g + j,
        as transformers' repeat_kv orders them). ``k`` / ``v``: (B, nkv, L, hd) float32."""
        g, cfg = self.g, self.cfg
        nh, nkv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q = g.reshape(g.transpose(q, [0, 2, 1, 3]), [0, nkv, -1, hd])  # (B, nkv, g, hd)
        k = g.transpose(k, [0, 1, 3, 2])  # (B, nkv, hd, L)
        scores = g.mul(g.matmul(q, k), g.const(hd**-0.5, np.float32))
        scores = g.add(scores, last_mask)  # additive bias (see mask_bias)
        ctx = g.matmul(g.softmax(scores, -1), v)  # (B, nkv, g, hd)
        return self._to_compute(g.reshape(ctx, [0, 1, nh * hd]))  # (B, 1, nh·hd)

    def embed_tokens(self, input_ids: str) -> str:
        g = self.g
        name = self.prefix + "embed_tokens.weight"
        storage = self.storage if self.quant is None else embedding_storage(self.storage, self.ck.info(name).dtype)
        table = self.ck.tensor(name, storage)
        stored = g.initializer("embed_tokens", table, elem_type=STORAGE_TYPES[storage])
        rows = g.gather(stored, input_ids)
        return rows if storage == "float32" else g.cast(rows, FLOAT)

    def head_rows(self, ids: list[int]) -> np.ndarray:
        """The lm_head rows for ``ids`` as float32 (H, len(ids)); reads only those rows."""
        name = "lm_head.weight"
        if self.cfg.tie_word_embeddings or not self.ck.has(name):
            if not self.cfg.tie_word_embeddings:
                self.ck.info(name)  # raises: untied checkpoint without its lm_head
            name = self.prefix + "embed_tokens.weight"
        info = self.ck.info(name)
        raw = np.asarray(self.ck.raw(name)[ids])
        from vlrank.export.checkpoint import _widen

        return np.ascontiguousarray(_widen(raw, info.dtype).T)

    # ---- the whole graph --------------------------------------------------------------------------------
    def build(self, out_dir: Path) -> list[str]:
        g, cfg = self.g, self.cfg
        vl = self.ck.family == "qwen3_vl"
        H = cfg.hidden_size
        g.set_external_data(out_dir / (DECODER_FILE + ".data"))
        try:
            input_ids = g.input("input_ids", INT64, ["batch", "seq"])
            attention_mask = g.input("attention_mask", INT64, ["batch", "seq"])
            position_ids = g.input("position_ids", INT64, [3, "batch", "seq"] if vl else ["batch", "seq"])
            x = self.embed_tokens(input_ids)
            image_index = image_mask = None
            if vl:
                image_embeds = g.input("image_embeds", FLOAT, ["image_tokens", H])
                deepstack = g.input("deepstack_embeds", FLOAT, [self.deepstack_layers, "image_tokens", H])
                image_mask = g.op("Equal", [input_ids, g.const(self.image_token_id)])  # (B, L)
                if self.video_token_id is not None:
                    # Video frame-pair features fill <|video_pad|> like image features fill
                    # <|image_pad|>: one feature sequence over both, in prompt order.
                    # The union as Max of the int64 masks: ORT's CUDA EP has no bool Or nor integer Add.
                    video_mask = g.op("Equal", [input_ids, g.const(self.video_token_id)])
                    image_mask = g.cast(g.op("Max", [g.cast(image_mask, INT64), g.cast(video_mask, INT64)]), BOOL)
                flat = g.cast(g.reshape(image_mask, [-1]), INT64)
                # k-th image token (row-major) takes image row k; clamp so M == 0 still indexes a row.
                image_index = g.op("Max", [g.sub(g.op("CumSum", [flat, g.const(0)]), g.const(1)), g.const(0)])
                image_mask = g.unsqueeze(image_mask, [-1])  # (B, L, 1)
                x = g.where(image_mask, self._image_rows(image_embeds, image_index, input_ids), x)
            cos, sin = self.rotary_tables(position_ids)
            pasts: list = [None] * cfg.num_layers
            keys_mask, past_len = attention_mask, None
            if self.prefix_kv:
                batch = g.shape(input_ids, 0, 1)
                pasts, past_len = self.prefix_inputs(batch)
                # Every prefix key is real: ones before the rows' own mask (P columns, none on the full path).
                ones = g.op("Expand", [g.const([[1]]), g.concat([batch, past_len], axis=0)])
                keys_mask = g.concat([ones, attention_mask], axis=1)  # (B, P + L)
            lengths = self.sequence_lengths(attention_mask, past_len)
            # Last real token of each row (right padding): index sum(mask) - 1.
            last = g.sub(g.reduce_sum(attention_mask, [1], keepdims=1), g.const(1))  # (B, 1)
            # The last token's query sees every real key (causality holds by construction).
            last_mask = self.mask_bias(g.cast(g.unsqueeze(keys_mask, [1, 2]), BOOL))  # (B, 1, 1, P + L)
            total = cfg.num_layers
            for i in range(total):
                # DeepStack adds only at image tokens, never the last token; pruning the final layer to
                # that token is safe unless a DeepStack add would still follow it.
                prune = self.prune_last_layer and i == total - 1 and not (vl and i < self.deepstack_layers)
                x = self.layer(i, x, cos, sin, lengths, last_mask, last if prune else None, pasts[i])
                if vl and i < self.deepstack_layers:
                    ds = g.gather(deepstack, g.const(i), axis=0)  # (M, H)
                    rows = self._image_rows(ds, image_index, input_ids)
                    x = g.add(x, g.where(image_mask, rows, g.const(0.0, np.float32)))
                self.progress(i + 1, total)
            if prune:
                h_last = g.squeeze(x, [1])  # (B, H)
            else:
                h_last = g.op("GatherND", [x, last], batch_dims=1)  # (B, H)
            h_last = self.rms_norm(h_last, self._w("norm.weight"))
            self._head(h_last, vl)
            return g.save(out_dir / DECODER_FILE)
        except BaseException:
            g.abort()
            raise

    def _image_rows(self, features: str, index: str, input_ids: str) -> str:
        """Scatter (M, H) features to (B, L, H): row k of ``features`` lands on the k-th image token."""
        g = self.g
        padded = g.concat([features, g.const(np.zeros((1, self.cfg.hidden_size)), np.float32)], axis=0)
        rows = g.gather(padded, index)  # (B·L, H)
        shape = g.concat([g.shape(input_ids), g.const([self.cfg.hidden_size])], axis=0)
        return g.reshape(rows, shape)

    def _head(self, h_last: str, vl: bool) -> None:
        g, H = self.g, self.cfg.hidden_size
        if self.task == "embed":
            norm = g.sqrt(g.reduce_sum(g.mul(h_last, h_last), [-1]))
            out = g.div(h_last, g.op("Max", [norm, g.const(1e-12, np.float32)]))
            g.output(out, "embedding", FLOAT, ["batch", H])
        elif vl:
            rows = self.head_rows([self.yes_id, self.no_id])  # (H, 2)
            w = (rows[:, 0] - rows[:, 1]).reshape(H, 1).astype(np.float32)
            logit = g.squeeze(g.matmul(h_last, g.initializer("score_weight", w)), [1])
            g.output(logit, "logit", FLOAT, ["batch"])
        else:
            w = self.head_rows([self.no_id, self.yes_id])  # columns [no, yes]
            logits = g.matmul(h_last, g.initializer("score_weight", w))
            g.output(logits, "logits", FLOAT, ["batch", 2])


def build_decoder(ckpt: Checkpoint, out_dir: str | Path, *, task: str, dtype: str, yes_id: int, no_id: int,
                  image_token_id: int | None = None, deepstack_layers: int = 0, precision: str = "float32",
                  quant: Quantization | None = None,
                  video_token_id: int | None = None, prefix_kv: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Write decoder.onnx (+ decoder.onnx.data) into ``out_dir``; returns the file names. ``precision``:
    compute dtype ("float32" for the CPU; "float16" | "bfloat16" for CUDA, see the module docstring).
    ``quant``: every Linear as a block-quantized MatMulNBits (export/quantize.py)."""
    builder = DecoderBuilder(ckpt, task=task, dtype=dtype, yes_id=yes_id, no_id=no_id,
                             image_token_id=image_token_id, deepstack_layers=deepstack_layers,
                             precision=precision, quant=quant, progress=progress, video_token_id=video_token_id,
                             prefix_kv=prefix_kv)
    return builder.build(Path(out_dir))
