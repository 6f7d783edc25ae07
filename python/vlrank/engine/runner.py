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
from vlrank.engine.budget import MemoryBudget, check_budget, default_budget, model_widths
from vlrank.engine.export_cache import resolve_model_dir
from vlrank.engine.manifest import check_graph, check_tokenizer, read_manifest
from vlrank.engine.prefix import group_bytes, plan_groups, run_group
from vlrank.engine.sessions import check_ort_options, create_session, providers_for_precision
from vlrank.engine.tokenizers import load_tokenizer
from vlrank.errors import InvalidInputError, ModelDirectoryError, RuntimeUnavailableError, VlrankError

DEFAULT_BATCH_TOKENS = 16384  # rows × longest per decoder run: bounds activation memory, keeps GEMMs large
DEFAULT_MAX_BATCH_SIZE = 64


class Row:
    """One decoder row: prompt ids plus the vision windows whose pads it holds, in prompt order (images and
    video frame pairs, engine/videos.py: the memory budget and the features count both alike)."""

    __slots__ = ("ids", "images")

    def __init__(self, ids: list[int], images: list | None = None) -> None:
        self.ids = ids
        self.images = images or []


class ModelRunner:
    """An exported model ready to run: manifest, tokenizer, decoder session.

    ``run(rows, image_batch)`` plans token-budgeted batches with the native planner (length-sorted),
    right-pads them, feeds image features when the rows have images, and returns the decoder output of
    every row in input order. Right padding never changes a row's result (see export/decoder.py).

    ``memory_budget`` (bytes; None: half of the RAM the loaded model leaves free) bounds the working
    memory of every session run (engine/budget.py): batches are planned within it, and a row that cannot
    fit it alone is refused with MemoryBudgetError before any image is decoded or any graph runs.
    """

    def __init__(self, model: str | Path, *, task: str, providers=None, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, ort_options: Mapping[str, str] | None = None,
                 memory_budget: int | None = None) -> None:
        for value, fld in ((batch_tokens, "batch_tokens"), (max_batch_size, "max_batch_size")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{fld}={value!r}; pass a positive integer", field=fld)
        memory_budget = check_budget(memory_budget)
        self.dir = resolve_model_dir(model, task=task)
        self.manifest = read_manifest(self.dir)
        if self.manifest.task != task:
            raise ModelDirectoryError(
                f"{self.dir} is a '{self.manifest.task}' model; use vlrank."
                f"{'Reranker' if self.manifest.task == 'rerank' else 'Embedder'} for it, or export the checkpoint "
                f"with task='{task}'",
                field="model",
            )
        # A half-precision export without CUDA is refused here, before anything is loaded.
        self.providers = providers_for_precision(self.manifest.precision, providers)
        self.ort_options = check_ort_options(ort_options)
        self.max_batch_size = max_batch_size
        self.tokenizer = load_tokenizer(self.manifest.file("tokenizer"))
        check_tokenizer(self.manifest, self.tokenizer)
        self.session = create_session(self.manifest.file("decoder"), providers=self.providers,
                                      ort_options=self.ort_options, precision=self.manifest.precision)
        check_graph(self.manifest, self.session, graph="decoder")
        self.budget = self._budget(memory_budget)
        # The planner's token budget (rows × longest) never exceeds what the memory budget holds.
        self.batch_tokens = max(1, min(batch_tokens, self.budget.max_tokens()))
        self.output = self.manifest.decoder_output
        self.family = self.manifest.family
        self.pad_id = self.manifest.pad_id
        self.image_pad_id = self.manifest.image_pad_id
        self.video_pad_id = self.manifest.video_pad_id
        self.hidden = self.manifest.dims.hidden_size
        self.deepstack = self.manifest.dims.deepstack_layers

    @property
    def memory_budget(self) -> int:
        return self.budget.budget

    def _budget(self, memory_budget: int | None) -> MemoryBudget:
        m = self.manifest
        weights = sum(p.stat().st_size for p in self.dir.iterdir() if p.is_file())
        intermediate, vision = model_widths(m)
        return MemoryBudget(budget=memory_budget or default_budget(weights), hidden=m.dims.hidden_size,
                            heads=m.dims.num_heads, kv_heads=m.dims.num_kv_heads, head_dim=m.dims.head_dim,
                            intermediate=intermediate, deepstack=m.dims.deepstack_layers, vision=vision,
                            layers=m.dims.num_layers)

    def check_rows(self, rows: list[Row]) -> None:
        """MemoryBudgetError for the first row that cannot fit the memory budget alone (nothing runs)."""
        for row in rows:
            self.budget.check_row(len(row.ids), image_tokens=sum(img.num_tokens for img in row.images),
                                  max_patches=max((img.grid_h * img.grid_w for img in row.images), default=0))

    def run_calls(self, prepared: list, image_batch, result: Callable[[Any, np.ndarray], dict], *,
                  share_prefix: bool | None = False) -> list:
        """The rows of many prepared calls (objects with ``.rows``) through ONE batch plan; ``result(call,
        outputs)`` builds each call's answer. A call that failed to prepare, or whose rows cannot fit the
        memory budget, keeps its error in place, so one bad request never fails the others (the server
        packs many requests this way). ``share_prefix``: as in ``run``, across every call's rows (calls
        with the same query and instruction share its prefix)."""
        for i, p in enumerate(prepared):
            if not isinstance(p, VlrankError):
                try:
                    self.check_rows(p.rows)
                except VlrankError as exc:
                    prepared[i] = exc
        rows = [row for p in prepared if not isinstance(p, VlrankError) for row in p.rows]
        outputs = self.run(rows, image_batch, share_prefix=share_prefix)
        results: list = []
        offset = 0
        for p in prepared:
            if isinstance(p, VlrankError):
                results.append(p)
                continue
            results.append(result(p, outputs[offset : offset + len(p.rows)]))
            offset += len(p.rows)
        return results

    def run(self, rows: list[Row], image_batch=None, *, share_prefix: bool | None = False) -> np.ndarray:
        """The decoder output of every row, in input order. ``image_batch`` (the task's per-call image
        feed) gives the rows' M-RoPE positions and image features; None for text-only rows.
        ``share_prefix`` (engine/prefix.py): rows sharing a prompt prefix run it once — None where the
        measured rule says it pays, True wherever they share one, False never; a directory exported
        without prefix inputs, or a group whose prefix K/V would not fit the memory budget, runs the full
        prompts."""
        if not rows:
            return np.zeros((0,), np.float32)
        self.check_rows(rows)
        results: list[np.ndarray | None] = [None] * len(rows)
        rest = list(range(len(rows)))
        if share_prefix is not False and self.manifest.prefix_kv:
            pads = {i for i in (self.image_pad_id, self.video_pad_id) if i is not None}
            groups, rest = plan_groups(rows, pad_ids=pads, share=share_prefix)
            for group in groups:
                if group_bytes(self, rows, group) > self.budget.budget:
                    rest += group.rows  # its K/V does not fit beside the runs: the full prompts do
                    continue
                for i, out in run_group(self, rows, group, image_batch).items():
                    results[i] = out
        if rest:
            rest.sort()
            for i, out in zip(rest, self._run_full([rows[i] for i in rest], image_batch)):
                results[i] = out
        return np.stack(results)

    def _run_full(self, rows: list[Row], image_batch) -> list[np.ndarray]:
        """Every row on its full prompt, in token-budgeted right-padded batches; outputs in input order."""
        lengths = [len(r.ids) for r in rows]
        plan = _native.plan_batches(lengths, max_batch_size=self.max_batch_size, token_budget=self.batch_tokens)
        results: list[np.ndarray | None] = [None] * len(rows)
        vl = self.family == "qwen3_vl"
        for idx in self._within_budget([[int(i) for i in batch] for batch in plan], rows):
            batch_rows = [rows[i] for i in idx]
            positions = None
            if vl:
                positions = [self._positions(r, image_batch) for r in batch_rows]
            input_ids, mask, pos = _native.pad_batch([r.ids for r in batch_rows], pad_id=self.pad_id,
                                                     positions=positions)
            if not vl:
                # Text Qwen3: positions 0..L-1 (padding positions are masked out; their value is irrelevant).
                pos = np.broadcast_to(np.arange(input_ids.shape[1], dtype=np.int64), input_ids.shape).copy()
            images = [img for r in batch_rows for img in r.images]
            out = self._session_run(input_ids, mask, pos, images, image_batch, [self.output])[0]
            for j, i in enumerate(idx):
                results[i] = out[j]
        return results

    def decode(self, input_ids: np.ndarray, positions: np.ndarray, windows: list, image_batch, outputs: list[str], *,
               extra: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        """One row (``input_ids`` (1, S), ``positions`` (3, S) or (S,)) through the decoder, no padding;
        ``extra``: further feeds (a prefix's K/V, ``prefix_keep``)."""
        mask = np.ones(input_ids.shape, np.int64)
        pos = positions[:, None, :] if positions.ndim == 2 else positions[None, :]
        return self._session_run(input_ids, mask, np.ascontiguousarray(pos, dtype=np.int64), windows, image_batch,
                                 outputs, extra)

    def row_positions(self, row: Row, image_batch) -> np.ndarray:
        """The full prompt's position ids of ``row``: (3, L) M-RoPE for Qwen3-VL, (L,) for text Qwen3."""
        if self.family == "qwen3_vl":
            return self._positions(row, image_batch)
        return np.arange(len(row.ids), dtype=np.int64)

    def _session_run(self, input_ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, images: list, image_batch,
                     outputs: list[str], extra: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        """One session run: the feeds (image features of ``images`` for Qwen3-VL, empty when none), the
        ``outputs`` asked for. The task head is checked finite (corrupt weights fail loudly, not as scores); a
        prefix pass's K/V is not scanned (hundreds of MB at real widths): a non-finite key or value reaches
        every suffix's head, where the check catches it."""
        feeds = {"input_ids": input_ids, "attention_mask": mask, "position_ids": pos, **(extra or {})}
        if self.family == "qwen3_vl":
            if images:
                feeds["image_embeds"], feeds["deepstack_embeds"] = image_batch.features(images)
            else:
                feeds["image_embeds"] = np.zeros((0, self.hidden), np.float32)
                feeds["deepstack_embeds"] = np.zeros((self.deepstack, 0, self.hidden), np.float32)
        out = self.session.run(outputs, feeds)
        if not all(np.all(np.isfinite(o)) for name, o in zip(outputs, out) if name == self.output):
            raise non_finite_error(dtype=self.manifest.dtype, precision=self.manifest.precision)
        return out

    def _within_budget(self, plan: list[list[int]], rows: list[Row]) -> list[list[int]]:
        """The plan with every batch whose image features push it over the memory budget split in two
        (recursively; a single row always fits, ``check_rows`` made sure). The native planner counts
        tokens only, so image rows are checked here."""
        out: list[list[int]] = []
        todo = list(reversed(plan))
        while todo:
            idx = todo.pop()
            need = self.budget.batch_bytes([len(rows[i].ids) for i in idx],
                                           [sum(img.num_tokens for img in rows[i].images) for i in idx])
            if len(idx) > 1 and need > self.budget.budget:
                half = len(idx) // 2
                todo += [idx[half:], idx[:half]]
            else:
                out.append(idx)
        return out

    def _positions(self, row: Row, image_batch) -> np.ndarray:
        if row.images:
            return image_batch.positions(row.ids, row.images, image_pad_id=self.image_pad_id,
                                         video_pad_id=self.video_pad_id)
        return np.broadcast_to(np.arange(len(row.ids), dtype=np.int64), (3, len(row.ids))).copy()


FLOAT16_MAX = 65504.0


def non_finite_error(*, dtype: str, precision: str) -> RuntimeUnavailableError:
    """The error for NaN / inf outputs, naming the likely cause for the export's ``dtype`` (weight storage) and
    ``precision`` (compute). float16's range ends at 65,504: float16 compute overflows on large activations
    (Qwen3's hidden states have outliers far beyond it), float16 storage turns any larger weight into inf; bfloat16
    has float32's range at the same size. Only a float32 / bfloat16 export points at damaged weights."""
    head = "the model produced non-finite outputs (NaN/inf)"
    if precision == "float16":
        return RuntimeUnavailableError(
            f"{head}: with float16 compute, activations above {FLOAT16_MAX:g} overflow (Qwen3's large hidden-state "
            "values do); export the checkpoint with precision='bfloat16' (same memory, float32's range, CUDA) or "
            "precision='float32'", field="model")
    if dtype == "float16":
        return RuntimeUnavailableError(
            f"{head}: the weights are stored as float16, where a value beyond {FLOAT16_MAX:g} becomes inf; export "
            "the checkpoint with dtype='bfloat16' or dtype='float32'", field="model")
    return RuntimeUnavailableError(f"{head}; the exported weights may be corrupt — re-export the model", field="model")


__all__ = ["DEFAULT_BATCH_TOKENS", "DEFAULT_MAX_BATCH_SIZE", "Row", "ModelRunner", "non_finite_error"]
