"""``vlrank.Embedder``: OpenAI/IONOS-shaped embeddings from Qwen3-VL-Embedding.

What differs from the other tasks: the prompt (one input per row, the embedding instruction) and the
result (one vector per input). ``dimensions=k`` (MRL) keeps the first k
values of the L2-normalised vector and re-normalises them; ``encoding_format="base64"`` returns the
little-endian float32 bytes base64-encoded, as OpenAI does. ``output_type="int8" | "uint8" | "binary" |
"ubinary"`` quantizes the final vector (scheme: ``quantize_out``); base64 then encodes the quantized bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlrank.engine.prompt_ids import vl_embed_ids
from vlrank.engine.runner import Row
from vlrank.errors import InvalidInputError, VlrankError
from vlrank.inputs import parse_embedding_input
from vlrank.tasks.base import Prepared, Task, check_instruction, check_positive, side_blocks, usage
from vlrank.tasks.quantize_out import as_json, check_output_type, quantize, raw_bytes

ENCODINGS = ("float", "base64")


@dataclass(kw_only=True)
class _Prepared(Prepared):
    dimensions: int | None
    encoding_format: str
    output_type: str = "float"


class Embedder(Task):
    """One vector per input (text, images, videos, or any mix) with Qwen3-VL-Embedding. Arguments as ``Reranker``."""

    task = "embed"
    method = "embed"
    call_args = frozenset({"input", "messages", "instruction", "dimensions", "encoding_format",
                           "output_type"})
    inputs_field = "input"
    image_verb = "embed"

    @property
    def dimensions(self) -> int:
        """The full embedding size (the model's hidden size); ``dimensions=`` may ask for fewer (MRL)."""
        return self.runner.manifest.dims.hidden_size

    # ---- public API -------------------------------------------------------------------------------------
    def embed(self, input: Any = None, *, messages: Any = None, instruction: str | None = None,  # noqa: A002
              dimensions: int | None = None, encoding_format: str = "float",
              output_type: str = "float") -> dict:
        """``{"object": "list", "data": [{"object": "embedding", "embedding", "index"}], "model", "usage"}``;
        ``output_type``: "float", "int8", "uint8", "binary" or "ubinary" (see ``vlrank.tasks.quantize_out``)."""
        return self._call(input=input, messages=messages, instruction=instruction, dimensions=dimensions,
                          encoding_format=encoding_format,
                          output_type=output_type)

    def embed_many(self, calls: Sequence[Mapping[str, Any]]) -> list[dict | VlrankError]:
        """Many embed calls through one batch plan; result i equals ``embed(**calls[i])``; a bad call
        yields its typed error in place."""
        return self._call_many(calls)

    # ---- steps ----------------------------------------------------------------------------------------------

    def _prepare(self, *, input: Any = None, messages: Any = None, instruction: str | None = None,  # noqa: A002
                 dimensions: int | None = None, encoding_format: str = "float", images=None,
                 output_type: str = "float") -> _Prepared:
        dimensions = check_positive(dimensions, field="dimensions", what="or None for all", upper=self.dimensions)
        if encoding_format not in ENCODINGS:
            raise InvalidInputError(f"encoding_format={encoding_format!r}; pass 'float' or 'base64'",
                                    field="encoding_format")
        output_type = check_output_type(output_type)
        instruction = check_instruction(instruction)
        inputs = parse_embedding_input(input=input, messages=messages, policy=self.fetch_policy)
        # Truncation to max_length may not cut a video (as for images): a video is bounded by max_length.
        per_video = self._prepare_videos(inputs, images, max_tokens=self.max_length,
                                         fields=[f"input[{i}]" for i in range(len(inputs))])
        per_input = self._prepare_images(inputs, images)
        ids = vl_embed_ids(self.runner.tokenizer, inputs=inputs, images=per_input, instruction=instruction,
                           max_length=self.max_length, min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                           videos=per_video)
        rows = [Row(list(r), side_blocks(vids, imgs)) for r, vids, imgs in zip(ids, per_video, per_input)]
        return _Prepared(rows=rows, dimensions=dimensions, encoding_format=encoding_format,
                         output_type=output_type)

    def _result(self, p: _Prepared, outputs: np.ndarray) -> dict:
        data = []
        for i, vec in enumerate(outputs):
            vec = np.asarray(vec, dtype=np.float32)
            if p.dimensions is not None:
                head = vec[: p.dimensions].astype(np.float64)
                vec = (head / max(float(np.linalg.norm(head)), 1e-12)).astype(np.float32)
            out = quantize(vec, p.output_type)
            if p.encoding_format == "base64":
                value: Any = base64.b64encode(raw_bytes(out)).decode("ascii")
            else:
                value = as_json(out)
            data.append({"object": "embedding", "embedding": value, "index": i})
        return {"object": "list", "data": data, "model": self.name, "usage": usage(p.rows)}
