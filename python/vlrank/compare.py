"""``vlrank.compare``: run two model directories (any export, or a checkpoint) on the same JSON-lines file and
report how far the candidate's scores / embeddings move from the reference's, and each side's speed.

A line is a rerank call ``{"query", "documents", "instruction"?}`` or an embed call ``{"input",
"instruction"?}``; every line of a file is the same kind (the first line's), and it picks the model class
(``vlrank.Reranker`` / ``vlrank.Embedder``).

What the report's numbers mean:
- rerank: ``|Δ|`` is over the relevance scores (``relevance_score``, in [0, 1]), one per document;
  embed: over the embedding components (``embed()``'s float output), one per component of every input.
- Spearman, per line: the rank correlation of the two sides' values — the documents' scores (rerank) or the
  cosine similarities of every pair of the line's inputs (embed). Ties get the mean of the ranks they span
  (as ``scipy.stats.spearmanr``); the coefficient is the Pearson correlation of those ranks. A line with
  fewer than two values (one document; one or two inputs) scores 1.0: there is no order to get wrong. A side
  whose values are all equal while the other's are not scores 0.0; both all equal: 1.0.
- top-k agreement (rerank): the fraction of lines whose sets of top-``min(k, documents)`` indices are equal,
  each side ordered as ``rerank()`` orders (score descending, then index).
- cosine (embed): of each input's two embeddings.
- docs/s: documents (rerank) or inputs (embed) per second of that side's calls. Both models are loaded
  together (memory is their sum); the lines alternate which side runs first so neither gets the warm caches.

Bounded: the file is read twice, one line at a time (first to check every line and count, before any model
loads; then to run); a line over ``MAX_LINE_BYTES``, more than ``max_lines`` lines, a line of more than the
library's documents (rerank) or ``MAX_LINE_INPUTS`` inputs (embed), or more compared values than
``MAX_VALUES`` (the median needs them all) is refused before any work.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vlrank.errors import InvalidInputError, ModelDirectoryError, VlrankError
from vlrank.inputs import DEFAULT_MAX_DOCUMENTS
from vlrank.modeldir import MANIFEST, Manifest, read_manifest

DEFAULT_MAX_LINES = 10_000
MAX_LINE_BYTES = 16 << 20  # one line's JSON: a page of documents with inline images fits
MAX_VALUES = 64 << 20  # |Δ| values kept for the exact median: 256 MiB of float32 at most
MAX_LINE_INPUTS = 1024  # an embed line's inputs: its pairwise cosines are a square matrix (8 MiB at 1024)
RERANK_KEYS = frozenset({"query", "documents", "instruction"})
EMBED_KEYS = frozenset({"input", "instruction"})
FIELD = "queries"


def compare(reference: str | Path, candidate: str | Path, *, queries: str | Path, top_k: int = 3,
            max_lines: int = DEFAULT_MAX_LINES, max_abs_diff: float | None = None,
            min_spearman: float | None = None, max_length: int | None = None, providers: Any = None) -> dict:
    """The comparison report (a plain dict; see the module docstring). ``max_abs_diff`` / ``min_spearman``
    are gates: the report's ``"gates"`` says each one's limit, value and verdict, ``"passed"`` whether all
    held (True with no gates)."""
    top_k = _check_int(top_k, field="top_k", lowest=1)
    max_lines = _check_int(max_lines, field="max_lines", lowest=1)
    for name, value in (("max_abs_diff", max_abs_diff), ("min_spearman", min_spearman)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise InvalidInputError(f"{name}={value!r}; pass a finite number or None for no gate", field=name)
    path = _queries_path(queries)
    kind, lines, items = _scan(path, max_lines=max_lines)
    ref_m, cand_m = (_manifest(m, field=f) for m, f in ((reference, "reference"), (candidate, "candidate")))
    for m, f in ((ref_m, "reference"), (cand_m, "candidate")):
        if m is not None and m.task != kind:
            raise InvalidInputError(
                f"{FIELD}: {path}:1 is {_a(kind)} line but {f} is {_a(m.task)} model; pass "
                f"{_line_shape(m.task)} lines for it, or {_a(kind)} model", field=f"{FIELD}:1")
    from vlrank.tasks import Embedder, Reranker

    cls = Reranker if kind == "rerank" else Embedder
    ref = _load(cls, reference, field="reference", max_length=max_length, providers=providers)
    cand = _load(cls, candidate, field="candidate", max_length=max_length, providers=providers)
    ref_m, cand_m = ref.runner.manifest, cand.runner.manifest
    if ref_m.family != cand_m.family:
        raise ModelDirectoryError(
            f"candidate: a '{cand_m.family}' model against a '{ref_m.family}' reference; compare two exports "
            "of the same model family (different families tokenize and score differently)", field="candidate")
    per_item = ref_m.dims.hidden_size if kind == "embed" else 1
    if items * per_item > MAX_VALUES:
        raise InvalidInputError(
            f"{FIELD}: {items} {'inputs' if kind == 'embed' else 'documents'} x {per_item} values is more than "
            f"{MAX_VALUES} compared values; pass a smaller sample (fewer lines, or max_lines)", field=FIELD)
    stats = _Stats(kind, top_k=top_k, cap=items * per_item)
    seconds = [0.0, 0.0]
    for n, line in _lines(path):
        outs: list[Any] = [None, None]
        for side in ((0, 1) if n % 2 else (1, 0)):
            model = (ref, cand)[side]
            start = time.perf_counter()
            outs[side] = _run(model, kind, line, n=n)
            seconds[side] += time.perf_counter() - start
        stats.add(*outs)
    report = {"task": kind, "family": ref_m.family, "lines": lines,
              ("documents" if kind == "rerank" else "inputs"): items,
              "reference": _side(reference, ref_m, items, seconds[0]),
              "candidate": _side(candidate, cand_m, items, seconds[1]), **stats.report()}
    gates = {}
    if max_abs_diff is not None:
        gates["max_abs_diff"] = {"limit": max_abs_diff, "value": report["max_abs_diff"],
                                 "passed": report["max_abs_diff"] <= max_abs_diff}
    if min_spearman is not None:
        gates["min_spearman"] = {"limit": min_spearman, "value": report["spearman_min"],
                                 "passed": report["spearman_min"] >= min_spearman}
    report["gates"] = gates
    report["passed"] = all(g["passed"] for g in gates.values())
    return report


# ---- statistics ---------------------------------------------------------------------------------------------

def ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    out = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        out[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho with the conventions of the module docstring (ties, short lines, constant sides)."""
    if len(a) < 2:
        return 1.0
    ra, rb = ranks(np.asarray(a, dtype=np.float64)), ranks(np.asarray(b, dtype=np.float64))
    if np.array_equal(ra, rb):  # the same order: exactly 1.0, not 1 - 2e-16 (a gate of 1.0 must pass)
        return 1.0
    da, db = ra - ra.mean(), rb - rb.mean()
    na, nb = float(np.sqrt((da * da).sum())), float(np.sqrt((db * db).sum()))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.clip((da * db).sum() / (na * nb), -1.0, 1.0))


def top_indices(scores: np.ndarray, k: int) -> set[int]:
    """The indices of the ``k`` best scores, ordered as ``rerank()`` orders (score descending, then index)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return set(order[:k])


def _cosines(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    nx, ny = np.linalg.norm(x, axis=-1), np.linalg.norm(y, axis=-1)
    return (x * y).sum(-1) / np.maximum(nx * ny, np.finfo(np.float64).tiny)


class _Stats:
    """Running per-line statistics; ``cap`` is the number of |Δ| values the scan counted (one array, filled)."""

    def __init__(self, kind: str, *, top_k: int, cap: int) -> None:
        self.kind, self.top_k = kind, top_k
        self.diffs = np.empty(cap, dtype=np.float64 if kind == "rerank" else np.float32)
        self.filled = 0
        self.rhos: list[float] = []
        self.agree = 0
        self.cosines: list[np.ndarray] = []

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        d = np.abs(ref - cand).ravel()
        if self.filled + d.size > len(self.diffs):  # the file grew between the check pass and the run
            raise InvalidInputError(f"{FIELD}: the file changed while it was compared; compare a file nothing "
                                    "writes to", field=FIELD)
        self.diffs[self.filled:self.filled + d.size] = d
        self.filled += d.size
        if self.kind == "rerank":
            self.rhos.append(spearman(ref, cand))
            k = min(self.top_k, len(ref))
            self.agree += top_indices(ref, k) == top_indices(cand, k)
        else:
            self.cosines.append(_cosines(ref, cand))
            iu = np.triu_indices(len(ref), k=1)
            self.rhos.append(spearman(_pair_cosines(ref)[iu], _pair_cosines(cand)[iu]))

    def report(self) -> dict:
        diffs = self.diffs[:self.filled]
        out = {"max_abs_diff": float(diffs.max()), "median_abs_diff": float(np.median(diffs)),
               "spearman_min": min(self.rhos), "spearman_mean": float(np.mean(self.rhos))}
        if self.kind == "rerank":
            out |= {"top_k": self.top_k, "top_k_agreement": self.agree / len(self.rhos)}
        else:
            cos = np.concatenate(self.cosines)
            out |= {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())}
        return out


def _pair_cosines(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    unit = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.finfo(np.float64).tiny)
    return unit @ unit.T


# ---- running a line -----------------------------------------------------------------------------------------

def _run(model: Any, kind: str, line: dict, *, n: int) -> np.ndarray:
    """One line through one model: the scores by document index (rerank) or the embeddings (embed)."""
    try:
        if kind == "rerank":
            out = model.rerank(line["query"], line["documents"], instruction=line.get("instruction"),
                               return_documents=False)
            scores = np.empty(len(out["results"]), dtype=np.float64)
            for r in out["results"]:
                scores[r["index"]] = r["relevance_score"]
            return scores
        out = model.embed(line["input"], instruction=line.get("instruction"))
        return np.asarray([d["embedding"] for d in out["data"]], dtype=np.float64)
    except InvalidInputError as exc:  # the line's fault: name it
        inner = f".{exc.field}" if exc.field else ""
        raise InvalidInputError(f"{FIELD}: line {n}: {exc}", field=f"{FIELD}:{n}{inner}") from exc


def _side(model: str | Path, m: Manifest, items: int, seconds: float) -> dict:
    return {"model": str(model), "name": m.name, "dtype": m.dtype, "precision": m.precision,
            "quantization": m.quantization, "seconds": seconds,
            "docs_per_s": items / seconds if seconds > 0 else None}


# ---- the file -----------------------------------------------------------------------------------------------

def _scan(path: Path, *, max_lines: int) -> tuple[str, int, int]:
    """Check every line; (kind, lines, documents or inputs)."""
    kind, lines, items = "", 0, 0
    for n, line in _lines(path):
        lines += 1
        if lines > max_lines:
            raise InvalidInputError(f"{FIELD}: {path} has more than {max_lines} lines; pass a sample of at most "
                                    f"{max_lines} lines, or raise max_lines (--max-lines)", field=f"{FIELD}:{n}")
        this = _kind(line, path=path, n=n)
        if kind and this != kind:
            raise InvalidInputError(f"{FIELD}: {path}:{n} is {_a(this)} line after {_a(kind)} line 1; keep one "
                                    "kind of line per file", field=f"{FIELD}:{n}")
        kind = this
        count = len(line["documents"]) if kind == "rerank" else _count_inputs(line["input"])
        most = DEFAULT_MAX_DOCUMENTS if kind == "rerank" else MAX_LINE_INPUTS
        if count > most:
            what = "documents" if kind == "rerank" else "input"
            raise InvalidInputError(f"{FIELD}: {path}:{n} has {count} {what}; pass at most {most} per line",
                                    field=f"{FIELD}:{n}.{what}")
        items += count
    if not lines:
        raise InvalidInputError(f"{FIELD}: {path} has no lines; write one JSON object per line: "
                                f"{_line_shape('rerank')} or {_line_shape('embed')}", field=FIELD)
    return kind, lines, items


def _lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) for every non-blank line, one line in memory at a time."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise InvalidInputError(f"{FIELD}: cannot read {path} ({exc.strerror or exc}); pass an existing "
                                "JSON-lines file", field=FIELD) from None
    with f:
        n = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            n += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise InvalidInputError(f"{FIELD}: {path}:{n} is longer than {MAX_LINE_BYTES} bytes; split it "
                                        "into smaller lines", field=f"{FIELD}:{n}")
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InvalidInputError(f"{FIELD}: {path}:{n} is not a JSON value ({exc}); write one JSON object "
                                        "per line", field=f"{FIELD}:{n}") from None
            if not isinstance(value, dict):
                raise InvalidInputError(f"{FIELD}: {path}:{n} is not a JSON object; write "
                                        f"{_line_shape('rerank')} or {_line_shape('embed')}", field=f"{FIELD}:{n}")
            yield n, value


def _kind(line: dict, *, path: Path, n: int) -> str:
    keys = set(line)
    kind = "rerank" if "query" in keys else "embed" if "input" in keys else ""
    allowed = RERANK_KEYS if kind == "rerank" else EMBED_KEYS
    if not kind or keys - allowed:
        extra = sorted(keys - allowed) if kind else sorted(keys)
        raise InvalidInputError(f"{FIELD}: {path}:{n} has keys {extra}; write {_line_shape('rerank')} or "
                                f"{_line_shape('embed')}", field=f"{FIELD}:{n}")
    if kind == "rerank" and not (isinstance(line.get("documents"), list) and line["documents"]):
        raise InvalidInputError(f"{FIELD}: {path}:{n}: \"documents\" must be a non-empty list of documents",
                                field=f"{FIELD}:{n}.documents")
    if kind == "embed" and (line["input"] is None or line["input"] == []):
        raise InvalidInputError(f"{FIELD}: {path}:{n}: \"input\" must be an input or a non-empty list of them",
                                field=f"{FIELD}:{n}.input")
    return kind


def _count_inputs(value: Any) -> int:
    return len(value) if isinstance(value, list) else 1


def _line_shape(kind: str) -> str:
    return ('{"query", "documents", "instruction"?}' if kind == "rerank" else '{"input", "instruction"?}')


def _a(kind: str) -> str:
    return "a rerank" if kind == "rerank" else "an embed"


def _queries_path(queries: Any) -> Path:
    if not isinstance(queries, (str, Path)) or not str(queries):
        raise InvalidInputError("queries: pass the path of a JSON-lines file", field=FIELD)
    return Path(queries).expanduser()


def _manifest(model: Any, *, field: str) -> Manifest | None:
    """An exported directory's manifest (read before loading anything); None for a checkpoint or hub id,
    whose task the file picks."""
    if not isinstance(model, (str, Path)) or not str(model):
        raise InvalidInputError(f"{field}: pass a model directory, a checkpoint directory or a hub id", field=field)
    path = Path(model).expanduser()
    if not (path / MANIFEST).is_file():
        return None
    try:
        return read_manifest(path)
    except VlrankError as exc:
        raise ModelDirectoryError(f"{field}: {exc}", field=field) from None


def _load(cls: Any, model: str | Path, *, field: str, **options: Any) -> Any:
    """``cls(model)``; a model that does not load is an error on ``field`` (reference / candidate)."""
    try:
        return cls(model, **options)
    except (ModelDirectoryError, InvalidInputError) as exc:
        if exc.field in ("max_length", "providers"):
            raise
        raise ModelDirectoryError(f"{field}: {exc}", field=field) from None


def _check_int(value: Any, *, field: str, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise InvalidInputError(f"{field}={value!r}; pass an integer >= {lowest}", field=field)
    return value


__all__ = ["compare", "spearman", "ranks", "top_indices", "DEFAULT_MAX_LINES"]
