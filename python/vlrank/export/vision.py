"""The Qwen3-VL vision tower as one ONNX graph: one image per run.

Inputs (all index math comes from rope.rs via ``vlrank._native``, so the graph has no data-dependent
shapes): ``pixel_values`` (N, C·T·P·P), ``pos_interp_indices`` int64 (N, 4), ``pos_interp_weights``
(N, 4), ``rotary_cos`` / ``rotary_sin`` (N, head_dim); patch rows in merge-block order.
Outputs: ``image_embeds`` (N/m², out_hidden) and ``deepstack_embeds`` (K, N/m², out_hidden).

Semantics follow transformers' ``Qwen3VLVisionModel`` in float32 (the golden reference):
- patch embed: a Conv3d whose kernel equals its stride over an input already cut into patches, i.e.
  exactly ``x @ W.reshape(hidden, -1).T + b``;
- learned position embedding: the 4 bilinear corners of the (side × side) table, weighted and summed;
- blocks: pre-LayerNorm (eps 1e-6) attention with 2-D rotary on q/k (``x·cos + rotate_half(x)·sin``),
  full attention over the image's patches (one image per run, so no block-diagonal mask), then a
  gelu_pytorch_tanh MLP;
- merger: LayerNorm over hidden, then the m² patches of a merge block concatenated, fc1 → GELU (erf) → fc2;
  DeepStack mergers (``use_postshuffle_norm``): concatenate first, LayerNorm over m²·hidden, same MLP,
  applied to the outputs of the listed vision layers.

Precision (``precision``): "float32" computes everything in float32 (the CPU graph, exact). "float16" /
"bfloat16" (CUDA graphs) run the block MatMuls and the attention in that dtype, with weights stored in it;
LayerNorm, biases, activations, the residual stream, the patch / position embeddings and both outputs
stay float32 (the outputs feed the decoder's float32 inputs). Quantized exports (``quant``): every block
and merger Linear is a ``com.microsoft.MatMulNBits`` (export/quantize.py) computing in float32, or with
int8 compute the int8 kernel export/quantize.py picks per Linear; the patch embedding (a Conv3d) and
the position table stay in the storage dtype.

Where the graph keeps its hyper-parameters: the model's ``metadata_props`` (``vlrank.vision.*``), so the
runtime computes its rope tables with the numbers the graph was built for, without a second config file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx

from vlrank.errors import ModelDirectoryError
from vlrank.export.checkpoint import Checkpoint
from vlrank.export.decoder import check_precision
from vlrank.export.quantize import Quantization, quantized_linear
from vlrank.export.graph import FLOAT, INT64, MS_DOMAIN, STORAGE_TYPES, Graph
from vlrank.modeldir import VISION_FILE, VISION_PROPS, VisionMeta
_LN_EPS = 1e-6  # hard-coded in transformers' Qwen3-VL vision blocks and mergers


class VisionSpec:
    """The vision hyper-parameters the graph and the runtime agree on."""

    def __init__(self, cfg: dict) -> None:
        try:
            self.hidden = int(cfg["hidden_size"])
            self.heads = int(cfg["num_heads"])
            self.depth = int(cfg["depth"])
            self.intermediate = int(cfg["intermediate_size"])
            self.out_hidden = int(cfg["out_hidden_size"])
            self.patch = int(cfg.get("patch_size", 16))
            self.temporal = int(cfg.get("temporal_patch_size", 2))
            self.channels = int(cfg.get("in_channels", 3))
            self.merge = int(cfg.get("spatial_merge_size", 2))
            self.num_pos = int(cfg["num_position_embeddings"])
            self.deepstack = [int(i) for i in cfg.get("deepstack_visual_indexes", [])]
            self.act = str(cfg.get("hidden_act", "gelu_pytorch_tanh"))
            self.theta = float(cfg.get("rope_theta", 10000.0))
        except KeyError as exc:
            raise ModelDirectoryError(f"config.json vision_config: missing key {exc}", field="model") from exc
        self.head_dim = self.hidden // self.heads
        self.side = int(self.num_pos**0.5)
        if self.side * self.side != self.num_pos:
            raise ModelDirectoryError(
                f"vision_config.num_position_embeddings={self.num_pos} is not a square number", field="model")
        if self.head_dim * self.heads != self.hidden or self.head_dim % 4:
            raise ModelDirectoryError(
                f"vision hidden_size {self.hidden} / num_heads {self.heads} does not give a head_dim divisible by 4",
                field="model")
        if self.act not in ("gelu_pytorch_tanh", "gelu"):
            raise ModelDirectoryError(f"vision hidden_act '{self.act}' is not supported", field="model")
        if any(not 0 <= i < self.depth for i in self.deepstack):
            raise ModelDirectoryError(
                f"deepstack_visual_indexes {self.deepstack} must lie within the {self.depth} vision layers",
                field="model")
        self.patch_dim = self.channels * self.temporal * self.patch * self.patch

    def meta(self) -> VisionMeta:
        """What the runtime reads of this tower (the manifest's ``vision``; its rope numbers are also the
        graph's own ``vlrank.vision.*`` metadata)."""
        return VisionMeta(head_dim=self.head_dim, rope_theta=self.theta, num_grid_per_side=self.side,
                          spatial_merge_size=self.merge, patch_dim=self.patch_dim, out_hidden_size=self.out_hidden,
                          deepstack_layers=len(self.deepstack), hidden_size=self.hidden,
                          intermediate_size=self.intermediate)

    def metadata(self) -> dict[str, str]:
        return self.meta().props()


def vision_spec(ckpt: Checkpoint) -> VisionSpec:
    """The checkpoint's vision hyper-parameters; ModelDirectoryError when it has no vision tower config."""
    cfg = ckpt.vision_config
    if not cfg:
        raise ModelDirectoryError(f"{ckpt.path}: config.json has no vision_config", field="model")
    return VisionSpec(cfg)


class VisionBuilder:
    def __init__(self, ckpt: Checkpoint, dtype: str, *, precision: str = "float32",
                 quant: Quantization | None = None, expose_stages: bool = False) -> None:
        check_precision(precision, dtype)
        self.spec = vision_spec(ckpt)
        self.ck = ckpt
        self.storage = dtype
        self.precision = precision
        self.half = None if precision == "float32" else STORAGE_TYPES[precision]
        self.quant = quant
        self._half_values: set[str] = set()
        self.prefix = self._prefix()
        self.g = Graph("vlrank_vision")
        # Extra outputs named like the golden intermediates (vision.patch_embed, vision.block{i}, ...),
        # for tests that bisect a mismatch; never in an exported model.
        self.expose_stages = expose_stages
        self.stages: dict[str, str] = {}

    def _prefix(self) -> str:
        for name in self.ck.tensors:
            if name.endswith("patch_embed.proj.weight"):
                return name[: -len("patch_embed.proj.weight")]
        raise ModelDirectoryError(
            f"{self.ck.path}: no '*patch_embed.proj.weight' tensor; the checkpoint has no Qwen3-VL vision tower",
            field="model")

    # ---- weights -------------------------------------------------------------------------------------
    def _f32_tensor(self, name: str) -> str:
        """Small 1-D tensors (biases, norm scales): float32 always (they add/multiply in f32)."""
        return self.g.initializer(name, self.ck.tensor(self.prefix + name))

    def _linear(self, x: str, name: str) -> str:
        """nn.Linear with bias: x @ W.T + b. The MatMul runs in the compute dtype (``x`` may already be
        in it); its output returns to float32 before the float32 bias is added. Quantized exports: the op
        export/quantize.py picks (MatMulNBits, or an int8 kernel with precision "int8"), then the same
        float32 bias."""
        if self.quant is not None:
            key = self.prefix + name + ".weight"
            y = quantized_linear(self.g, x, name, self.ck.raw(key), self.quant, stored=self.ck.info(key).dtype)
            return self.g.add(y, self._f32_tensor(name + ".bias"))
        w = self.ck.tensor(self.prefix + name + ".weight", self.storage)
        if self.half is not None:
            wt = self.g.initializer(name + ".weight", np.ascontiguousarray(w.T), elem_type=self.half)
        else:
            wt = self.g.weight(name + ".weight", np.ascontiguousarray(w.T), storage=self.storage)
        return self.g.add(self._f32(self.g.matmul(self._to_compute(x), wt)), self._f32_tensor(name + ".bias"))

    def _to_compute(self, x: str) -> str:
        """A float32 value as the MatMul / attention dtype; a value already in it passes through."""
        if self.half is None or x in self._half_values:
            return x
        out = self.g.cast(x, self.half)
        self._half_values.add(out)
        return out

    def _f32(self, x: str) -> str:
        return x if self.half is None else self.g.cast(x, FLOAT)

    def _layer_norm(self, x: str, name: str) -> str:
        return self.g.op("LayerNormalization", [x, self._f32_tensor(name + ".weight"), self._f32_tensor(name + ".bias")],
                         axis=-1, epsilon=_LN_EPS)

    # ---- activations ---------------------------------------------------------------------------------
    def _gelu_tanh(self, x: str) -> str:
        """0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) — torch's gelu(approximate='tanh')."""
        g = self.g
        c = g.const(math.sqrt(2.0 / math.pi), np.float32)
        inner = g.mul(c, g.add(x, g.mul(g.const(0.044715, np.float32), g.mul(g.mul(x, x), x))))
        return g.mul(g.mul(g.const(0.5, np.float32), x), g.add(g.const(1.0, np.float32), g.op("Tanh", [inner])))

    def _gelu_erf(self, x: str) -> str:
        """0.5·x·(1 + erf(x/√2)) — nn.GELU()."""
        g = self.g
        erf = g.op("Erf", [g.mul(x, g.const(1.0 / math.sqrt(2.0), np.float32))])
        return g.mul(g.mul(g.const(0.5, np.float32), x), g.add(g.const(1.0, np.float32), erf))

    def _act(self, x: str) -> str:
        return self._gelu_tanh(x) if self.spec.act == "gelu_pytorch_tanh" else self._gelu_erf(x)

    # ---- blocks --------------------------------------------------------------------------------------
    def _rope(self, x: str, cos: str, sin: str) -> str:
        g = self.g
        half = self.spec.head_dim // 2
        x1, x2 = g.split(x, [half, half], axis=-1)
        return g.add(g.mul(x, cos), g.mul(g.concat([g.neg(x2), x1], axis=-1), sin))

    def _block(self, i: int, x: str, cos: str, sin: str) -> str:
        g, s = self.g, self.spec
        p = f"blocks.{i}."
        h = self._layer_norm(x, p + "norm1")
        qkv = g.reshape(self._linear(h, p + "attn.qkv"), [0, 3, s.heads, s.head_dim])  # (N, 3, nh, hd)
        q, k, v = (g.squeeze(t, [1]) for t in g.split(qkv, [1, 1, 1], axis=1))  # (N, nh, hd)
        # Non-causal attention over the image's patches with ORT's fused com.microsoft.MultiHeadAttention:
        # no (patches × patches) tensor (measured, ORT 1.32 CPU, 16 heads, 5,120 patches: +169 MB / 1.2 s
        # against +1.7 GB / 2.4 s for MatMul-Softmax-MatMul). One image per run, so the single batch row
        # is exactly the image and needs no mask. Inputs (1, N, nh·hd).
        q = g.unsqueeze(g.reshape(self._rope(q, cos, sin), [0, s.hidden]), [0])
        k = g.unsqueeze(g.reshape(self._rope(k, cos, sin), [0, s.hidden]), [0])
        v = g.unsqueeze(g.reshape(v, [0, s.hidden]), [0])
        ctx = g.op("MultiHeadAttention", [self._to_compute(q), self._to_compute(k), self._to_compute(v)],
                   domain=MS_DOMAIN, num_heads=s.heads, scale=float(s.head_dim**-0.5))
        ctx = g.squeeze(ctx, [0])  # (N, hidden), compute dtype
        if self.half is not None:
            self._half_values.add(ctx)
        x = g.add(x, self._linear(ctx, p + "attn.proj"))
        h = self._layer_norm(x, p + "norm2")
        return g.add(x, self._linear(self._act(self._linear(h, p + "mlp.linear_fc1")), p + "mlp.linear_fc2"))

    def _merger(self, x: str, name: str, postshuffle: bool) -> str:
        g, s = self.g, self.spec
        merged = s.hidden * s.merge * s.merge
        if postshuffle:
            x = self._layer_norm(g.reshape(x, [-1, merged]), name + ".norm")
        else:
            x = g.reshape(self._layer_norm(x, name + ".norm"), [-1, merged])
        return self._linear(self._gelu_erf(self._linear(x, name + ".linear_fc1")), name + ".linear_fc2")

    # ---- the whole graph -----------------------------------------------------------------------------
    def build(self, out_dir: Path) -> list[str]:
        g, s = self.g, self.spec
        g.set_external_data(out_dir / (VISION_FILE + ".data"))
        try:
            pixels = g.input("pixel_values", FLOAT, ["patches", s.patch_dim])
            indices = g.input("pos_interp_indices", INT64, ["patches", 4])
            weights = g.input("pos_interp_weights", FLOAT, ["patches", 4])
            cos_in = g.input("rotary_cos", FLOAT, ["patches", s.head_dim])
            sin_in = g.input("rotary_sin", FLOAT, ["patches", s.head_dim])
            # Conv3d with kernel == stride over (C, T, P, P) patches == one GEMM with the flattened kernel.
            proj = self.ck.tensor(self.prefix + "patch_embed.proj.weight", self.storage).reshape(s.hidden, -1)
            w = g.weight("patch_embed.proj.weight", np.ascontiguousarray(proj.T), storage=self.storage)
            x = g.add(g.matmul(pixels, w), self._f32_tensor("patch_embed.proj.bias"))
            self.stages["patch_embed"] = x
            table = g.weight("pos_embed.weight", self.ck.tensor(self.prefix + "pos_embed.weight", self.storage),
                             storage=self.storage)
            corners = g.gather(table, indices)  # (N, 4, hidden)
            pos = g.reduce_sum(g.mul(corners, g.unsqueeze(weights, [-1])), [1], keepdims=0)
            x = g.add(x, pos)
            cos = g.unsqueeze(cos_in, [1])  # (N, 1, hd): broadcast over heads
            sin = g.unsqueeze(sin_in, [1])
            deepstack = []
            for i in range(s.depth):
                x = self._block(i, x, cos, sin)
                self.stages[f"block{i}"] = x
                if i in s.deepstack:
                    j = s.deepstack.index(i)
                    deepstack.append(self._merger(x, f"deepstack_merger_list.{j}", postshuffle=True))
                    self.stages[f"deepstack{j}"] = deepstack[-1]
            image = self._merger(x, "merger", postshuffle=False)
            self.stages["merger"] = image
            g.output(image, "image_embeds", FLOAT, ["tokens", s.out_hidden])
            if deepstack:
                stacked = g.concat([g.unsqueeze(d, [0]) for d in deepstack], axis=0)
            else:  # (0, N/m², out) keeps the interface uniform for a checkpoint without DeepStack
                stacked = g.slice(g.unsqueeze(image, [0]), [0], [0], [0])
            g.output(stacked, "deepstack_embeds", FLOAT, [len(s.deepstack), "tokens", s.out_hidden])
            if self.expose_stages:
                for stage, value in self.stages.items():
                    g.output(value, f"vision.{stage}", FLOAT, None)
            files = g.save(out_dir / VISION_FILE)
        except BaseException:
            g.abort()
            raise
        _write_metadata(out_dir / VISION_FILE, s.metadata())
        return files


def _write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Add ``metadata_props`` to a saved graph without touching its external data."""
    model = onnx.load(str(path), load_external_data=False)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path.write_bytes(model.SerializeToString())


def read_vision_metadata(metadata: dict[str, str]) -> dict[str, float | int]:
    """The ``vlrank.vision.*`` entries of a session's custom metadata, typed (``VisionMeta.from_props``)."""
    meta = VisionMeta.from_props(metadata)
    return {name: getattr(meta, name) for name in VISION_PROPS}


def build_vision_graph(checkpoint: Checkpoint, out_dir: str | Path, dtype: str, *, precision: str = "float32",
                       quant: Quantization | None = None, expose_stages: bool = False) -> list[str]:
    """Write vision.onnx (+ vision.onnx.data) into ``out_dir``; returns the file names written.
    ``precision``: compute dtype of MatMuls and attention (see decoder.check_precision).
    ``expose_stages`` adds every stage as an extra output (``vision.block0``, ...) for debugging."""
    return VisionBuilder(checkpoint, dtype, precision=precision, quant=quant,
                         expose_stages=expose_stages).build(Path(out_dir))
