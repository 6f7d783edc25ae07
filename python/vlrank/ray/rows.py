"""Dataset rows -> library calls, and library answers/errors -> output columns (no Ray needed here).

Column values arrive as Arrow turns them into Python: ``str``, ``bytes``, ``None``, lists, and dicts for
struct columns. A struct column gives every row every field (``None`` where a row had none), so ``None``
entries are dropped from dicts before the library sees them: ``{"text": None, "image": "a.png"}`` is the
image-only side ``{"image": "a.png"}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from vlrank.errors import InvalidInputError, VlrankError

# The error column: null for a row that worked; otherwise the exception class name, its message and
# the field it names (the input column for row-shape errors, the library's field path otherwise).
ERROR_TYPE = pa.struct([("type", pa.string()), ("message", pa.string()), ("field", pa.string())])


def clean(value: Any) -> Any:
    """``value`` with ``None`` entries of dicts removed, recursively (see the module docstring)."""
    if isinstance(value, Mapping):
        return {k: clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def embed_side(text: Any, image: Any, *, column: str | None, image_column: str | None) -> Any:
    """The ``Embedder.embed(input=...)`` side of one row: its text, its image, or both."""
    text, image = clean(text), clean(image)
    if isinstance(text, Mapping):
        if image is not None:
            raise InvalidInputError(
                f"{column}: a row whose {column!r} is an object cannot also have {image_column!r}; put the "
                'image inside the object ({"text": ..., "image": ...}) or use a plain text column',
                field=column)
        return text
    if text is not None and not isinstance(text, str):
        raise InvalidInputError(
            f"{column}: a {type(text).__name__} is not text; pass a string (or an embedding input object) "
            f"and put images in image_column", field=column)
    if image is None:
        if text is None:
            where = " or ".join(repr(c) for c in (column, image_column) if c)
            raise InvalidInputError(f"{column or image_column}: the row has no text and no image; fill {where}",
                                    field=column or image_column)
        return text
    return {"image": image} if text is None else {"image": image, "text": text}


def error_record(exc: BaseException, *, field: str | None = None) -> dict[str, str | None]:
    """The error-column value for a row that failed with ``exc``."""
    message = exc.message if isinstance(exc, VlrankError) else str(exc)
    return {"type": type(exc).__name__, "message": message or repr(exc),
            "field": getattr(exc, "field", None) or field}


def run_isolated(calls: Sequence[Any], *, many: Callable[[list[Any]], list[Any]],
                 one: Callable[[Any], Any]) -> list[Any]:
    """Answer ``calls`` in one batched ``many`` call; if that call itself fails (not one bad row, which
    ``many`` returns in place), answer each call alone so only the rows that fail carry the error.

    ``calls`` entries that are already exceptions (rows that could not become a call) stay as they are.
    Returns, per call, the library's answer or the exception it raised.
    """
    live = [i for i, c in enumerate(calls) if not isinstance(c, BaseException)]
    out: list[Any] = list(calls)
    if not live:
        return out
    try:
        answers = many([calls[i] for i in live])
    except Exception:  # noqa: BLE001 - isolated per row below; the row that fails keeps the error
        answers = []
        for i in live:
            try:
                answers.append(one(calls[i]))
            except Exception as exc:  # noqa: BLE001 - becomes that row's error column
                answers.append(exc)
    for i, answer in zip(live, answers):
        out[i] = answer
    return out


def column_values(table: pa.Table, name: str | None) -> list[Any]:
    """One input column as Python values; ``None`` per row for an unused (``None``) column."""
    if name is None:
        return [None] * table.num_rows
    if name not in table.column_names:
        raise InvalidInputError(f"{name}: no such column; the dataset has {table.column_names}", field=name)
    return table.column(name).to_pylist()


def with_outputs(table: pa.Table, columns: Mapping[str, pa.Array]) -> pa.Table:
    """``table`` plus the output columns, in the order given."""
    for name, array in columns.items():
        table = table.append_column(name, array)
    return table


def scores_by_index(result: Mapping[str, Any]) -> list[float]:
    """A rerank answer's scores in document order (the answer lists them best first)."""
    results = result["results"]
    scores = [0.0] * len(results)
    for item in results:
        scores[item["index"]] = float(item["relevance_score"])
    return scores
