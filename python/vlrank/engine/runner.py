"""The batch runner: an exported model's decoder session fed with token-budgeted, right-padded batches.

The runner knows rows (prompt ids + the images whose pads they hold) and an image feed object handed
to it by the task (``positions(ids, images, image_pad_id=)`` and ``features(images)``); it never builds
prompts or runs the vision tower itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlrank import _native
from vlrank.engine.export_cache import resolve_model_dir
from vlrank.engine.manifest import check_graph, check_tokenizer, read_manifest
from vlrank.engine.sessions import check_ort_options, create_session
from vlrank.engine.tokenizers import load_tokenizer
from vlrank.errors import InvalidInputError, ModelDirectoryError, RuntimeUnavailableError, VlrankError

DEFAULT_BATCH_TOKENS = 16384  # rows × longest per decoder run: bounds activation memory, keeps GEMMs large
DEFAULT_MAX_BATCH_SIZE = 64


class Row:
    """One decoder row: prompt ids plus the prepared images whose pads it holds (in order)."""

    __slots__ = ("ids", "images")

    def __init__(self, ids: list[int], images: list | None = None) -> None:
        self.ids = ids
        self.images = images or []


class ModelRunner:
    """An exported model ready to run: manifest, tokenizer, decoder session.

    ``run(rows, image_batch)`` plans token-budgeted batches with the native planner (length-sorted),
    right-pads them, feeds image features when the rows have images, and returns the decoder output of
    every row in input order. Right padding never changes a row's result (see export/decoder.py).
    """

    def __init__(self, model: str | Path, *, task: str, providers=None, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, ort_options: Mapping[str, str] | None = None) -> None:
        for value, fld in ((batch_tokens, "batch_tokens"), (max_batch_size, "max_batch_size")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{fld}={value!r}; pass a positive integer", field=fld)
        self.dir = resolve_model_dir(model, task=task)
        self.manifest = read_manifest(self.dir)
        if self.manifest.task != task:
            raise ModelDirectoryError(
                f"{self.dir} is a '{self.manifest.task}' model; use vlrank."
                f"{'Reranker' if self.manifest.task == 'rerank' else 'Embedder'} for it, or export the checkpoint "
                f"with task='{task}'",
                field="model",
            )
        self.providers = providers
        self.ort_options = check_ort_options(ort_options)
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.tokenizer = load_tokenizer(self.manifest.file("tokenizer"))
        check_tokenizer(self.manifest, self.tokenizer)
        self.session = create_session(self.manifest.file("decoder"), providers=providers,
                                      ort_options=self.ort_options)
        check_graph(self.manifest, self.session, graph="decoder")
        self.output = self.manifest.decoder_output
        self.family = self.manifest.family
        self.pad_id = self.manifest.pad_id
        self.image_pad_id = self.manifest.image_pad_id
        self.hidden = self.manifest.dims.hidden_size
        self.deepstack = self.manifest.dims.deepstack_layers

    def run_calls(self, prepared: list, image_batch, result: Callable[[Any, np.ndarray], dict]) -> list:
        """The rows of many prepared calls (objects with ``.rows``) through ONE batch plan; ``result(call,
        outputs)`` builds each call's answer. A call that failed to prepare keeps its error in place, so
        one bad request never fails the others (the server packs many requests this way)."""
        rows = [row for p in prepared if not isinstance(p, VlrankError) for row in p.rows]
        outputs = self.run(rows, image_batch)
        results: list = []
        offset = 0
        for p in prepared:
            if isinstance(p, VlrankError):
                results.append(p)
                continue
            results.append(result(p, outputs[offset : offset + len(p.rows)]))
            offset += len(p.rows)
        return results

    def run(self, rows: list[Row], image_batch=None) -> np.ndarray:
        """The decoder output of every row, in input order. ``image_batch`` (the task's per-call image
        feed) gives the rows' M-RoPE positions and image features; None for text-only rows."""
        if not rows:
            return np.zeros((0,), np.float32)
        lengths = [len(r.ids) for r in rows]
        plan = _native.plan_batches(lengths, max_batch_size=self.max_batch_size, token_budget=self.batch_tokens)
        results: list[np.ndarray | None] = [None] * len(rows)
        vl = self.family == "qwen3_vl"
        for batch in plan:
            idx = [int(i) for i in batch]
            batch_rows = [rows[i] for i in idx]
            positions = None
            if vl:
                positions = [self._positions(r, image_batch) for r in batch_rows]
            input_ids, mask, pos = _native.pad_batch([r.ids for r in batch_rows], pad_id=self.pad_id,
                                                     positions=positions)
            feeds = {"input_ids": input_ids, "attention_mask": mask}
            if vl:
                feeds["position_ids"] = pos
                images = [img for r in batch_rows for img in r.images]
                if images:
                    feeds["image_embeds"], feeds["deepstack_embeds"] = image_batch.features(images)
                else:
                    feeds["image_embeds"] = np.zeros((0, self.hidden), np.float32)
                    feeds["deepstack_embeds"] = np.zeros((self.deepstack, 0, self.hidden), np.float32)
            else:
                # Text Qwen3: positions 0..L-1 (padding positions are masked out; their value is irrelevant).
                feeds["position_ids"] = np.broadcast_to(np.arange(input_ids.shape[1], dtype=np.int64),
                                                        input_ids.shape).copy()
            out = self.session.run([self.output], feeds)[0]
            if not np.all(np.isfinite(out)):
                raise RuntimeUnavailableError(
                    "the model produced non-finite outputs (NaN/inf); the exported weights may be corrupt — "
                    "re-export the model", field="model")
            for j, i in enumerate(idx):
                results[i] = out[j]
        return np.stack(results)

    def _positions(self, row: Row, image_batch) -> np.ndarray:
        if row.images:
            return image_batch.positions(row.ids, row.images, image_pad_id=self.image_pad_id)
        return np.broadcast_to(np.arange(len(row.ids), dtype=np.int64), (3, len(row.ids))).copy()


__all__ = ["DEFAULT_BATCH_TOKENS", "DEFAULT_MAX_BATCH_SIZE", "Row", "ModelRunner"]
