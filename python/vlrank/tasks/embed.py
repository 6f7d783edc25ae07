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
from vlrank.tasks.long_documents import EMBED_TRUNCATE, check_choice, refuse_over, side_text, token_spans, with_text
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
    call_args = frozenset({"input", "messages", "instruction", "dimensions", "encoding_format", "truncate",
                           "output_type"})
    inputs_field = "input"
    image_verb = "embed"

    @property
    def dimensions(self) -> int:
        """The full embedding size (the model's hidden size); ``dimensions=`` may ask for fewer (MRL)."""
        return self.runner.manifest.dims.hidden_size

    # ---- public API -------------------------------------------------------------------------------------
    def embed(self, input: Any = None, *, messages: Any = None, instruction: str | None = None,  # noqa: A002
              truncate: str = "END", dimensions: int | None = None, encoding_format: str = "float",
              output_type: str = "float") -> dict:
        """``{"object": "list", "data": [{"object": "embedding", "embedding", "index"}], "model", "usage"}``;
        ``output_type``: "float", "int8", "uint8", "binary" or "ubinary" (see ``vlrank.tasks.quantize_out``)."""
        # truncate: "END" cuts the end of a prompt over max_length, "START" the start of its text (Cohere's
        # START), "NONE" refuses it (ContextTooLongError naming input[i]).
        return self._call(input=input, messages=messages, instruction=instruction, dimensions=dimensions,
                          truncate=truncate, encoding_format=encoding_format, output_type=output_type)

    def embed_many(self, calls: Sequence[Mapping[str, Any]]) -> list[dict | VlrankError]:
        """Many embed calls through one batch plan; result i equals ``embed(**calls[i])``; a bad call
        yields its typed error in place."""
        return self._call_many(calls)

    # ---- steps ----------------------------------------------------------------------------------------------

    def _prepare(self, *, input: Any = None, messages: Any = None, instruction: str | None = None,  # noqa: A002
                 truncate: Any = "END", dimensions: int | None = None, encoding_format: str = "float",
                 images=None, output_type: str = "float") -> _Prepared:
        dimensions = check_positive(dimensions, field="dimensions", what="or None for all", upper=self.dimensions)
        if encoding_format not in ENCODINGS:
            raise InvalidInputError(f"encoding_format={encoding_format!r}; pass 'float' or 'base64'",
                                    field="encoding_format")
        output_type = check_output_type(output_type)
        instruction = check_instruction(instruction)
        truncate = check_choice(truncate, field="truncate", choices=EMBED_TRUNCATE)
        inputs = parse_embedding_input(input=input, messages=messages, policy=self.fetch_policy)
        # Truncation to max_length may not cut a video (as for images): a video is bounded by max_length.
        per_video = self._prepare_videos(inputs, images, max_tokens=self.max_length,
                                         fields=[f"input[{i}]" for i in range(len(inputs))])
        per_input = self._prepare_images(inputs, images)
        if truncate != "END":
            inputs = self._fit_start(inputs, per_input, per_video, instruction=instruction, truncate=truncate)
        ids = vl_embed_ids(self.runner.tokenizer, inputs=inputs, images=per_input, instruction=instruction,
                           max_length=self.max_length, min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                           videos=per_video)
        rows = [Row(list(r), side_blocks(vids, imgs)) for r, vids, imgs in zip(ids, per_video, per_input)]
        return _Prepared(rows=rows, dimensions=dimensions, encoding_format=encoding_format,
                         output_type=output_type)

    def _fit_start(self, inputs: list, images: list, videos: list, *, instruction: str | None,
                   truncate: str) -> list:
        """``truncate="NONE"``: refuse an input whose prompt (built to the context) is over max_length.
        ``"START"``: drop the fewest first tokens of its text that make the prompt fit. The first guess comes
        from the prompt without the text, six tokens short (the text's first token may merge differently with
        the template than alone, an empty side may render a placeholder); then one more token per try."""
        context = self.runner.manifest.context_length

        def build(xs: list) -> list[list[int]]:
            return vl_embed_ids(self.runner.tokenizer, inputs=xs, images=images, instruction=instruction,
                                max_length=context, min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                                videos=videos)

        rows = build(inputs)
        if truncate == "NONE":
            refuse_over(rows, max_length=self.max_length, fields=[f"input[{i}]" for i in range(len(inputs))],
                        hint="truncate='END' or 'START' to cut it, or a shorter input")
            return inputs
        over = [i for i, r in enumerate(rows) if len(r) > self.max_length and inputs[i].texts]
        if not over:
            return inputs
        bare = build([with_text(x, "") for x in inputs])
        tokenizer_file = self.runner.manifest.file("tokenizer")
        spans = {i: token_spans(self.runner.tokenizer, tokenizer_file, side_text(inputs[i])) for i in over}
        out = list(inputs)
        for attempt in range(16):
            for i in over:
                drop = min(max(0, spans[i].count - (self.max_length - len(bare[i])) - 6 + attempt), spans[i].count)
                out[i] = with_text(inputs[i], spans[i].text[int(spans[i].starts[drop]):] if drop < spans[i].count
                                   else "")
            rows = build(out)
            over = [i for i in over if len(rows[i]) > self.max_length]
            if not over:
                break
        return out

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
