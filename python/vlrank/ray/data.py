"""Ray Data batch inference: ``embed_dataset`` and ``rerank_dataset``.

Both are one ``Dataset.map_batches`` over a callable class, so Ray runs an actor pool (``concurrency``
actors, each holding ``num_cpus`` / ``num_gpus``) and every actor loads the exported model directory once,
in its constructor. A batch is answered by one ``embed_many`` / ``rerank_many`` call (one batch plan, a
bad row's typed error in its place); if that call fails as a whole, the batch is retried row by row so the
rows that fail carry the error and the rest their results. No row is dropped: the output has the input's
rows with ``output_column`` (null where the row failed) and ``error_column`` (null where it worked).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray.data

from vlrank.errors import InvalidInputError, ModelDirectoryError, VlrankError
from vlrank.inputs import FetchPolicy
from vlrank.ray.rows import (
    ERROR_TYPE,
    clean,
    column_values,
    embed_side,
    error_record,
    run_isolated,
    scores_by_index,
    with_outputs,
)

MANIFEST = "vlrank.json"
DEFAULT_BATCH_SIZE = 64


def check_model_dir(model: str | Path, *, task: str) -> str:
    """The absolute path of an exported ``task`` model directory; checked on the driver, before any actor
    starts, because workers never export (every actor would convert the checkpoint again)."""
    root = Path(model).expanduser()
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise ModelDirectoryError(
            f"model: {root} has no {MANIFEST}; export once (vlrank export CHECKPOINT OUT_DIR --task {task}) to a "
            "directory every node can read and pass that", field="model")
    try:
        found = json.loads(manifest.read_text(encoding="utf-8")).get("task")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ModelDirectoryError(f"model: {manifest} is unreadable ({exc}); re-export the model",
                                  field="model") from exc
    if found != task:
        other = "embed_dataset" if task == "rerank" else "rerank_dataset"
        raise ModelDirectoryError(f"model: {root} was exported for task {found!r}, not {task!r}; use {other} "
                                  f"or export with --task {task}", field="model")
    return str(root.resolve())


class _Worker:
    """What both callable classes share: the facade, loaded once per actor."""

    facade_name = ""

    def __init__(self, *, model: str, fetch_policy: FetchPolicy | None, providers: Any,
                 model_options: Mapping[str, Any]) -> None:
        import vlrank

        cls = getattr(vlrank, self.facade_name)
        self.model = cls(model, fetch_policy=fetch_policy, providers=providers, **dict(model_options))


class EmbedBatch(_Worker):
    """The ``map_batches`` callable of ``embed_dataset``."""

    facade_name = "Embedder"

    def __init__(self, *, column: str | None, image_column: str | None, dimensions: int | None,
                 instruction: str | None, output_column: str, error_column: str, **model_args: Any) -> None:
        super().__init__(**model_args)
        self.column, self.image_column = column, image_column
        self.options = {"dimensions": dimensions, "instruction": instruction}
        self.output_column, self.error_column = output_column, error_column

    def __call__(self, table: pa.Table) -> pa.Table:
        calls: list[Any] = []
        for text, image in zip(column_values(table, self.column), column_values(table, self.image_column)):
            try:
                side = embed_side(text, image, column=self.column, image_column=self.image_column)
                calls.append({"input": side, **self.options})
            except VlrankError as exc:
                calls.append(exc)
        answers = run_isolated(calls, many=self.model.embed_many, one=lambda call: self.model.embed(**call))
        vectors, errors = [], []
        for answer in answers:
            if isinstance(answer, BaseException):
                vectors.append(None)
                errors.append(error_record(answer, field=self.column or self.image_column))
            else:
                vectors.append(answer["data"][0]["embedding"])
                errors.append(None)
        return with_outputs(table, {self.output_column: pa.array(vectors, type=pa.list_(pa.float32())),
                                    self.error_column: pa.array(errors, type=ERROR_TYPE)})


class RerankBatch(_Worker):
    """The ``map_batches`` callable of ``rerank_dataset``."""

    facade_name = "Reranker"

    def __init__(self, *, query_column: str, documents_column: str, instruction: str | None,
                 output_column: str, error_column: str, rerank_options: Mapping[str, Any] | None = None,
                 **model_args: Any) -> None:
        super().__init__(**model_args)
        self.query_column, self.documents_column = query_column, documents_column
        self.instruction = instruction
        self.rerank_options = dict(rerank_options or {})
        self.output_column, self.error_column = output_column, error_column

    def __call__(self, table: pa.Table) -> pa.Table:
        calls = [{"query": clean(q), "documents": clean(d), "instruction": self.instruction,
                  "return_documents": False, **self.rerank_options}
                 for q, d in zip(column_values(table, self.query_column),
                                 column_values(table, self.documents_column))]
        answers = run_isolated(calls, many=self.model.rerank_many, one=lambda call: self.model.rerank(**call))
        scores, errors = [], []
        for answer in answers:
            if isinstance(answer, BaseException):
                scores.append(None)
                errors.append(error_record(answer, field=self.documents_column))
            else:
                scores.append(scores_by_index(answer))
                errors.append(None)
        return with_outputs(table, {self.output_column: pa.array(scores, type=pa.list_(pa.float64())),
                                    self.error_column: pa.array(errors, type=ERROR_TYPE)})


def embed_dataset(ds: ray.data.Dataset, *, model: str | Path, column: str | None = None,
                  image_column: str | None = None, dimensions: int | None = None, instruction: str | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, concurrency: int | tuple[int, int] = 1,
                  num_cpus: float = 1, num_gpus: float = 0, providers: Any = None,
                  fetch_policy: FetchPolicy | None = None, model_options: Mapping[str, Any] | None = None,
                  output_column: str = "embedding", error_column: str = "error",
                  ray_options: Mapping[str, Any] | None = None) -> ray.data.Dataset:
    """``ds`` with ``output_column`` (list<float32>, the ``Embedder.embed`` vector of the row) and
    ``error_column`` added.

    A row's input is its ``column`` text, its ``image_column`` image (a path or URL string, or encoded
    bytes, read by the worker under ``fetch_policy`` exactly as ``vlrank.Embedder`` reads it), or both in
    one input; ``column`` may instead hold embedding input objects (``{"text": ..., "image": ...}`` or
    ``{"content": [...]}``). ``model``: an exported embed directory every node can read. ``providers`` and
    ``model_options`` (e.g. ``batch_tokens``, ``max_pixels``, ``ort_options``) go to the ``Embedder``.
    ``ray_options``: further ``map_batches`` arguments (``memory``, ``resources``, ``runtime_env``, ...).
    """
    if column is None and image_column is None:
        raise InvalidInputError("column: pass column= (texts) and/or image_column= (image paths, URLs or bytes)",
                                field="column")
    args = {"column": column, "image_column": image_column, "dimensions": dimensions, "instruction": instruction}
    inputs = [c for c in (column, image_column) if c is not None]
    return _map(ds, EmbedBatch, task="embed", model=model, inputs=inputs, args=args, batch_size=batch_size,
                concurrency=concurrency, num_cpus=num_cpus, num_gpus=num_gpus, providers=providers,
                fetch_policy=fetch_policy, model_options=model_options, output_column=output_column,
                error_column=error_column, ray_options=ray_options)


def rerank_dataset(ds: ray.data.Dataset, *, model: str | Path, query_column: str, documents_column: str,
                   instruction: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   concurrency: int | tuple[int, int] = 1, num_cpus: float = 1, num_gpus: float = 0,
                   providers: Any = None, fetch_policy: FetchPolicy | None = None,
                   model_options: Mapping[str, Any] | None = None, output_column: str = "scores",
                   error_column: str = "error", ray_options: Mapping[str, Any] | None = None,
                   rerank_options: Mapping[str, Any] | None = None) -> ray.data.Dataset:
    """``ds`` with ``output_column`` (list<float64>: the ``Reranker.rerank`` relevance score of each
    document, in document order) and ``error_column`` added.

    ``rerank_options``: the long-document keywords of ``Reranker.rerank`` (``max_tokens_per_doc``,
    ``max_tokens_per_query``, ``truncate``, ``long_documents``, ``chunk_tokens``, ``chunk_overlap``,
    ``max_chunks_per_doc``), passed to every call as they are; checked here, before any worker starts.

    ``query_column`` holds what ``rerank(query=...)`` takes, ``documents_column`` what ``documents=`` takes
    (a list of strings or document objects; image paths/URLs/bytes inside them are read by the worker under
    ``fetch_policy``). Other arguments as ``embed_dataset``.
    """
    for name, value in (("query_column", query_column), ("documents_column", documents_column)):
        if not isinstance(value, str) or not value:
            raise InvalidInputError(f"{name}: pass the name of the dataset column", field=name)
    options = check_rerank_options(rerank_options)
    args = {"query_column": query_column, "documents_column": documents_column, "instruction": instruction,
            "rerank_options": options}
    return _map(ds, RerankBatch, task="rerank", model=model, inputs=[query_column, documents_column], args=args,
                batch_size=batch_size, concurrency=concurrency, num_cpus=num_cpus, num_gpus=num_gpus,
                providers=providers, fetch_policy=fetch_policy, model_options=model_options,
                output_column=output_column, error_column=error_column, ray_options=ray_options)


def check_rerank_options(options: Any) -> dict[str, Any]:
    """The long-document keywords, checked on the driver (a bad value fails the call, not every row)."""
    from vlrank.tasks.long_documents import LONG_DOCUMENT_KEYS, check_long_documents  # the facade loads lazily

    if options is None:
        return {}
    if not isinstance(options, Mapping) or not set(options) <= LONG_DOCUMENT_KEYS:
        raise InvalidInputError(f"rerank_options: pass a mapping of {', '.join(sorted(LONG_DOCUMENT_KEYS))}",
                                field="rerank_options")
    check_long_documents(**options)
    return dict(options)


def _map(ds: Any, worker: type, *, task: str, model: str | Path, inputs: list[str], args: dict[str, Any],
         batch_size: int, concurrency: Any, num_cpus: float, num_gpus: float, providers: Any,
         fetch_policy: FetchPolicy | None, model_options: Mapping[str, Any] | None, output_column: str,
         error_column: str, ray_options: Mapping[str, Any] | None) -> Any:
    if not isinstance(ds, ray.data.Dataset):
        raise InvalidInputError(f"ds: a {type(ds).__name__} is not a ray.data.Dataset; pass one "
                                "(ray.data.read_parquet(...), ray.data.from_items(...))", field="ds")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size={batch_size!r}; pass a positive int (rows per model call)",
                                field="batch_size")
    if fetch_policy is not None and not isinstance(fetch_policy, FetchPolicy):
        raise InvalidInputError("fetch_policy: pass a vlrank.FetchPolicy or None", field="fetch_policy")
    if output_column == error_column:
        raise InvalidInputError(f"error_column: {error_column!r} is also output_column; pick another name",
                                field="error_column")
    _check_columns(ds, inputs=inputs, outputs=[output_column, error_column])
    kwargs = {**args, "model": check_model_dir(model, task=task), "fetch_policy": fetch_policy,
              "providers": providers, "model_options": dict(model_options or {}),
              "output_column": output_column, "error_column": error_column}
    return ds.map_batches(worker, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="pyarrow",
                          compute=_actor_pool(concurrency), num_cpus=num_cpus, num_gpus=num_gpus,
                          **dict(ray_options or {}))


def _actor_pool(concurrency: Any) -> Any:
    """``concurrency``: n actors, or (min, max) for an autoscaling pool."""
    def positive(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if positive(concurrency):
        return ray.data.ActorPoolStrategy(size=concurrency)
    if (isinstance(concurrency, tuple | list) and len(concurrency) == 2 and all(map(positive, concurrency))
            and concurrency[0] <= concurrency[1]):
        return ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    raise InvalidInputError(f"concurrency={concurrency!r}; pass a positive int (actors) or (min, max) actors",
                            field="concurrency")


def _check_columns(ds: Any, *, inputs: list[str], outputs: list[str]) -> None:
    """Name errors now where the schema is known without running the dataset (else the worker finds them)."""
    schema = ds.schema(fetch_if_missing=False)
    if schema is None:
        return
    names = list(schema.names)
    for name in inputs:
        if name not in names:
            raise InvalidInputError(f"{name}: no such column; the dataset has {names}", field=name)
    for name in outputs:
        if name in names:
            raise InvalidInputError(f"{name}: the dataset already has this column; pass output_column= / "
                                    "error_column= with a new name", field=name)
