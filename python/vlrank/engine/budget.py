"""The memory budget of a call: how many bytes of working memory a decoder batch and a vision-tower run
need, estimated from the model's widths, and the refusal of a pair that cannot fit before any work.

Why linear: decoder attention is ORT's fused GroupQueryAttention and vision attention its fused
MultiHeadAttention; neither holds an (L × L) tensor (measured, ORT 1.32 CPU, 16 / 8 heads, head_dim 128:
one GQA node needs 70 / 138 / 275 MB at 2k / 4k / 8k tokens — 33.5 KB a token, ~2× its q + k + v). So the
working memory of a decoder run is (rows × padded length) × bytes-per-token plus the image features of
its rows, and of a vision run patches × bytes-per-patch; activations of one layer are dead before the next
layer's are made, so depth does not enter.

Per token, in float32 words (the half graphs keep the residual stream and norm statistics in float32, so
the same count bounds them): the residual, the embedding and the normed input (3·hidden), and the larger
of the attention phase — q, k, v, their q/k-norm and rotary temporaries and GQA's output and workspace,
5·(heads + 2·kv_heads)·head_dim — and the MLP phase — gate, up, SiLU's two temporaries and the product,
5·intermediate. Each image token adds its features and DeepStack rows, fed and concatenated
(2·(1 + deepstack)·hidden). The vision tower per patch: 3·hidden_v + max(5·3·hidden_v, 5·intermediate_v)
plus the pixel row.

A shared prompt prefix (engine/prefix.py) holds its K/V — 2·kv_heads·head_dim words per token per layer,
all layers — for as long as its rows' suffixes run; a suffix run adds, per layer, transients of the
prefix plus its own tokens' K/V: the fed prefix broadcast to the batch, GroupQueryAttention's present
output (past + new) and, in the pruned final layer, the concatenated keys and values (3 copies).
At Qwen3-VL-2B widths (28 layers, 8 kv heads, head_dim 128) a 1,300-token prefix holds 298 MB once,
whatever the number of documents (16 documents on the full path would recompute it 16 times); at 8B
widths (36 layers) 383 MB. ``SAFETY`` covers ONNX Runtime's arena rounding and what the model's fixed buffers
(rotary tables, masks) add; benches/bench_long_context.py prints this estimate beside the measured peak.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlrank.errors import InvalidInputError, MemoryBudgetError
from vlrank.modeldir import Manifest

SAFETY = 1.5
MIN_DEFAULT_BUDGET = 1 << 30  # 1 GiB: below this the default would refuse ordinary pairs on small machines
WORD = 4  # bytes of a float32 activation


@dataclass(frozen=True)
class VisionWidths:
    hidden: int
    intermediate: int
    patch_dim: int


def model_widths(manifest: Manifest) -> tuple[int, VisionWidths | None]:
    """The decoder's MLP width and the vision tower's widths (None: a text model), from the manifest. An
    export made before the manifest carried them has them read from its graphs instead (only then is onnx
    imported)."""
    intermediate = manifest.dims.intermediate_size or _graph_decoder_intermediate(
        manifest.file("decoder"), manifest.dims.hidden_size)
    if not manifest.has_vision:
        return intermediate, None
    v = manifest.vision
    if v is not None and v.hidden_size and v.intermediate_size:
        return intermediate, VisionWidths(hidden=v.hidden_size, intermediate=v.intermediate_size,
                                          patch_dim=v.patch_dim)
    return intermediate, vision_widths(manifest.file("vision"))


def vision_widths(vision_file: Path) -> VisionWidths | None:
    """The vision tower's hidden and MLP widths, read from its graph's initializer shapes (weights stay
    in the external data file; nothing large is loaded). None when the graph has no vision MLP or cannot
    be parsed (loading the tower then says what is wrong with it)."""
    import onnx  # only for an export whose manifest lacks ``vision``: the runtime does not import onnx

    try:
        model = onnx.load(str(vision_file), load_external_data=False)
    except Exception:  # noqa: BLE001 - an unreadable graph fails with its own error when the tower loads
        return None
    fc1 = [tuple(t.dims) for t in model.graph.initializer if "blocks." in t.name and "linear_fc1" in t.name
           and len(t.dims) == 2]
    patch = [d.dim_value for i in model.graph.input if i.name == "pixel_values"
             for d in i.type.tensor_type.shape.dim[1:2]]
    if not fc1:
        return None
    return VisionWidths(hidden=min(fc1[0]), intermediate=max(fc1[0]), patch_dim=patch[0] if patch else 0)


def _graph_decoder_intermediate(decoder_file: Path, hidden: int) -> int:
    """The decoder's MLP width, from the graph's gate_proj initializer shape (no weights are read); a graph
    whose MLP weights are stored otherwise (e.g. quantized) gives Qwen3's ratio, 3 × hidden."""
    import onnx  # only for an export whose manifest lacks dims.intermediate_size

    try:
        model = onnx.load(str(decoder_file), load_external_data=False)
    except Exception:  # noqa: BLE001 - only reached after ONNX Runtime loaded the same file
        return 3 * hidden
    for t in model.graph.initializer:
        if "mlp.gate_proj" in t.name and len(t.dims) == 2 and hidden in t.dims:
            return int(max(t.dims))
    return 3 * hidden


def physical_memory() -> int:
    """Bytes of RAM of this machine (0 where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 0


def default_budget(model_bytes: int) -> int:
    """Half of the RAM the loaded model leaves free, at least 1 GiB: one call may use half of what is
    left, so a second process (or the server's next batch) still has room."""
    return max(MIN_DEFAULT_BUDGET, (physical_memory() - model_bytes) // 2)


def check_budget(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"memory_budget={value!r}; pass a number of bytes (e.g. 8 * 2**30 for 8 GiB) or "
                                "None for the default (half of the RAM the model leaves free)",
                                field="memory_budget")
    return value


class MemoryBudget:
    """Bytes per decoder token, per image token and per vision patch for one model, against ``budget``."""

    def __init__(self, *, budget: int, hidden: int, heads: int, kv_heads: int, head_dim: int, intermediate: int,
                 deepstack: int = 0, vision: VisionWidths | None = None, layers: int = 0) -> None:
        self.budget = budget
        self.layers = layers
        self.kv_token_bytes = int(SAFETY * WORD * 2 * kv_heads * head_dim)  # one layer's K + V of one token
        attention = 5 * (heads + 2 * kv_heads) * head_dim
        mlp = 5 * intermediate
        self.token_bytes = int(SAFETY * WORD * (3 * hidden + max(attention, mlp)))
        self.image_token_bytes = int(SAFETY * WORD * 2 * (1 + deepstack) * hidden)
        self.patch_bytes = 0
        if vision is not None:
            v = vision
            self.patch_bytes = int(SAFETY * WORD * (3 * v.hidden + max(15 * v.hidden, 5 * v.intermediate)
                                                     + v.patch_dim))

    def row_bytes(self, tokens: int, image_tokens: int = 0) -> int:
        """Decoder working memory of one row of ``tokens`` (``image_tokens`` of them image pads)."""
        return tokens * self.token_bytes + image_tokens * self.image_token_bytes

    def batch_bytes(self, lengths: Sequence[int], image_tokens: Sequence[int]) -> int:
        """A right-padded batch: every row costs the longest row's tokens."""
        return len(lengths) * max(lengths) * self.token_bytes + sum(image_tokens) * self.image_token_bytes

    def prefix_kv_bytes(self, prefix: int) -> int:
        """A shared prefix's K/V, every layer, held while its rows' suffixes run."""
        return self.layers * prefix * self.kv_token_bytes

    def suffix_bytes(self, tokens: int, prefix: int, image_tokens: int = 0) -> int:
        """One suffix run of ``tokens`` against a ``prefix``-token K/V: the row's own working memory plus one
        layer's prefix + suffix K/V transients (module docstring)."""
        return self.row_bytes(tokens, image_tokens) + 3 * (prefix + tokens) * self.kv_token_bytes

    def vision_bytes(self, patches: int) -> int:
        return patches * self.patch_bytes

    def max_tokens(self) -> int:
        """The longest text row that fits."""
        return max(0, self.budget // self.token_bytes)

    def check_row(self, tokens: int, *, image_tokens: int = 0, max_patches: int = 0, field: str = "max_length") -> None:
        """MemoryBudgetError when one row (and its largest image's tower run) cannot fit the budget."""
        need = self.row_bytes(tokens, image_tokens) + self.vision_bytes(max_patches)
        if need <= self.budget:
            return
        images = f", {image_tokens} of them image tokens" if image_tokens else ""
        fix = ("pass a shorter max_length (a text pair of at most about "
               f"{self.max_tokens():,} tokens fits)")
        if image_tokens:
            fix += ", fewer or smaller images (a lower max_pixels)"
        raise MemoryBudgetError(
            f"{field}: a row of {tokens:,} tokens{images} needs about {need / 2**30:.2f} GiB of working memory, "
            f"over this model's memory_budget of {self.budget / 2**30:.2f} GiB; {fix}, or load the model with a "
            "larger memory_budget (bytes)", field=field)


__all__ = ["SAFETY", "MemoryBudget", "VisionWidths", "model_widths", "vision_widths", "default_budget", "physical_memory",
           "check_budget"]
