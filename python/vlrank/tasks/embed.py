"""``vlrank.Embedder``: OpenAI/IONOS-shaped embeddings from Qwen3-VL-Embedding.

Same three steps as the reranker (prepare -> model -> result). ``dimensions=k`` (MRL) keeps the first k
values of the L2-normalised vector and re-normalises them; ``encoding_format="base64"`` returns the
little-endian float32 bytes base64-encoded, as OpenAI does.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlrank.errors import InvalidInputError, VlrankError
from vlrank.inputs import ParsedInput, parse_embedding_input
from vlrank.reranker import ModelFacade, as_int, check_calls, check_instruction
from vlrank.runtime import Row

ENCODINGS = ("float", "base64")
_EMBED_ARGS = frozenset({"input", "messages", "instruction", "dimensions", "encoding_format"})


@dataclass
class _Prepared:
    rows: list[Row]
    dimensions: int | None
    encoding_format: str


class Embedder(ModelFacade):
    """One vector per input (text, image, or both) with Qwen3-VL-Embedding. Arguments as ``Reranker``."""

    task = "embed"

    @property
    def dimensions(self) -> int:
        """The full embedding size (the model's hidden size); ``dimensions=`` may ask for fewer (MRL)."""
        return int(self.runner.manifest.data["dims"]["hidden_size"])



    # ---- public API -------------------------------------------------------------------------------------
    def embed(self, input: Any = None, *, messages: Any = None, instruction: str | None = None,  # noqa: A002
              dimensions: int | None = None, encoding_format: str = "float") -> dict:
        """``{"object": "list", "data": [{"object": "embedding", "embedding", "index"}], "model", "usage"}``."""
        images = self._image_batch()
        prepared = self._prepare(input=input, messages=messages, instruction=instruction, dimensions=dimensions,
                                 encoding_format=encoding_format, images=images)
        return self._result(prepared, self.runner.run(prepared.rows, images))

    def embed_many(self, calls: Sequence[Mapping[str, Any]]) -> list[dict | VlrankError]:
        """Many embed calls through one batch plan; result i equals ``embed(**calls[i])``; a bad call
        yields its typed error in place."""
        calls = check_calls(calls, method="embed")
        images = self._image_batch()
        prepared: list[_Prepared | VlrankError] = []
        for i, call in enumerate(calls):
            try:
                if not isinstance(call, Mapping) or not set(call) <= _EMBED_ARGS:
                    raise InvalidInputError(f"calls[{i}]: pass a mapping of embed() keyword arguments "
                                            f"({', '.join(sorted(_EMBED_ARGS))})", field=f"calls[{i}]")
                prepared.append(self._prepare(images=images, **call))
            except VlrankError as exc:
                prepared.append(exc)
        return self.runner.run_calls(prepared, images, self._result)

    # ---- steps ----------------------------------------------------------------------------------------------

    def _prepare(self, *, input: Any = None, messages: Any = None, instruction: str | None = None,  # noqa: A002
                 dimensions: int | None = None, encoding_format: str = "float", images=None) -> _Prepared:
        dimensions = as_int(dimensions)
        if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)
                                       or not 1 <= dimensions <= self.dimensions):
            raise InvalidInputError(
                f"dimensions={dimensions!r}; pass an integer from 1 to {self.dimensions} (or None for all)",
                field="dimensions",
            )
        if encoding_format not in ENCODINGS:
            raise InvalidInputError(f"encoding_format={encoding_format!r}; pass 'float' or 'base64'",
                                    field="encoding_format")
        instruction = check_instruction(instruction)
        inputs = parse_embedding_input(input=input, messages=messages, policy=self.fetch_policy)
        per_input = self._prepare_images(inputs, images)
        # (vision hook) multimodal.vl_embed_ids = build_vl_embed_ids_batch + image-aware context errors.
        from vlrank.multimodal import vl_embed_ids

        ids = vl_embed_ids(self.runner.tokenizer, inputs=inputs, images=per_input, instruction=instruction,
                           max_length=self.max_length, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return _Prepared([Row(list(r), imgs) for r, imgs in zip(ids, per_input)], dimensions, encoding_format)

    @staticmethod
    def _prepare_images(inputs: list[ParsedInput], images) -> list[list]:
        if not any(x.images for x in inputs):
            return [[] for _ in inputs]
        if images is None:
            raise InvalidInputError("this model directory has no vision graph, so it cannot embed images; "
                                    "re-export the Qwen3-VL checkpoint with this vlrank", field="input")
        return images.prepare(inputs)

    def _result(self, p: _Prepared, outputs: np.ndarray) -> dict:
        data = []
        for i, vec in enumerate(outputs):
            vec = np.asarray(vec, dtype=np.float32)
            if p.dimensions is not None:
                head = vec[: p.dimensions].astype(np.float64)
                vec = (head / max(float(np.linalg.norm(head)), 1e-12)).astype(np.float32)
            if p.encoding_format == "base64":
                value: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
            else:
                value = [float(v) for v in vec]
            data.append({"object": "embedding", "embedding": value, "index": i})
        tokens = sum(len(r.ids) for r in p.rows)
        return {"object": "list", "data": data, "model": self.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
