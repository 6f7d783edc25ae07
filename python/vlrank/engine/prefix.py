"""Shared prompt prefixes: rows that begin with the same tokens run those tokens once.

The rows of one rerank call repeat the system prompt, the instruction and the query before each document
(and so do the calls of one server batch that share a query and instruction). A prefix-capable decoder
(``Manifest.prefix_kv``, export/decoder.py) runs such a prefix once, returning its K/V per layer, then runs
each row's suffix against it, with the positions the full prompt gives the suffix. The scores equal the
full prompt's (within float rounding: the same keys, the same positions, only the kernels' blocking
differs).

Planning (``plan_groups``): rows sorted by their ids put every row next to the rows it shares most with;
the longest common prefix (LCP) of neighbours then splits them into groups whose shared prefix is the
minimum LCP inside the group. A group is split further at its smallest LCPs when its parts save more
tokens than it does as a whole ((rows − 1) · prefix tokens saved). A prefix never ends inside a vision
window's pads, and holds a window only when every row of the group holds the same one there (same content
key: same features, same M-RoPE grid). Every row keeps at least one token of its own (its score's token).

When to share (``share`` = None, the measured rule, kept here in ``SHARE_MIN_SAVING``): a group runs the
shared path when it saves at least that fraction of its rows' tokens. Suffixes run one row per session
run (GroupQueryAttention takes a non-empty past only at batch 1), so a small saving does not pay for
the smaller GEMMs; benches/bench_shared_prefix.py measures where it switches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: ``share_prefix=None``: share a group's prefix when it saves at least this fraction of the group's tokens
#: (a 1,280-token query image against 150-token documents saves ~0.85, a 100-token text query against
#: 300-token documents ~0.25, a system prompt alone ~0.1). See benches/bench_shared_prefix.py.
SHARE_MIN_SAVING = 0.2
#: Nested splits looked at below one group (bounds the planner's recursion on adversarial documents).
MAX_SPLIT_DEPTH = 32


@dataclass
class Group:
    """Rows (indices into the runner's rows) sharing their first ``prefix`` tokens, the first ``windows``
    of their vision windows inside them."""

    rows: list[int]
    prefix: int
    windows: int = 0


def check_share_prefix(value: Any) -> bool | None:
    """None (the measured rule), True (share whenever rows share a prefix) or False (never)."""
    if value is not None and not isinstance(value, bool):
        from vlrank.errors import InvalidInputError

        raise InvalidInputError(f"share_prefix={value!r}; pass None (share where it pays, the default), True "
                                "(whenever documents share the query's prompt prefix) or False (never)",
                                field="share_prefix")
    return value


def plan_groups(rows: Sequence[Any], *, pad_ids: set[int], share: bool | None) -> tuple[list[Group], list[int]]:
    """The groups that run the shared-prefix path and the indices of the rows that do not."""
    if share is False or len(rows) < 2:
        return [], list(range(len(rows)))
    ids = [np.asarray(r.ids, dtype=np.int64) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: rows[i].ids)
    lcp = [_lcp(ids[a], ids[b]) for a, b in zip(order, order[1:])]
    groups: list[Group] = []
    for lo, hi in _runs(lcp, 0, len(order) - 1, floor=1):
        groups += _best(rows, ids, order, lcp, lo, hi, pad_ids, depth=0)[1]
    chosen = [g for g in groups if _pays(g, rows, share)]
    taken = {i for g in chosen for i in g.rows}
    return chosen, [i for i in range(len(rows)) if i not in taken]


def _lcp(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


def _runs(lcp: list[int], lo: int, hi: int, *, floor: int) -> list[tuple[int, int]]:
    """Maximal runs [lo, hi] (positions in the sorted order) whose neighbour LCPs are all >= ``floor``."""
    out, start = [], lo
    for j in range(lo, hi):
        if lcp[j] < floor:
            out.append((start, j))
            start = j + 1
    out.append((start, hi))
    return out


def _best(rows, ids, order, lcp, lo, hi, pad_ids, *, depth: int) -> tuple[int, list[Group]]:
    """(tokens saved, groups) of the best hierarchical split of sorted rows lo..hi (inclusive)."""
    if lo == hi:
        return 0, []
    members = [order[j] for j in range(lo, hi + 1)]
    low = min(lcp[lo:hi])
    prefix = min(low, min(len(ids[i]) for i in members) - 1)
    prefix, windows = _window_safe(rows, ids, members, prefix, pad_ids)
    whole = (len(members) - 1) * prefix
    best = (whole, [Group(rows=sorted(members), prefix=prefix, windows=windows)] if prefix > 0 else [])
    if depth < MAX_SPLIT_DEPTH and any(lcp[j] > low for j in range(lo, hi)):
        saved, parts = 0, []
        for a, b in _runs(lcp, lo, hi, floor=low + 1):
            s, g = _best(rows, ids, order, lcp, a, b, pad_ids, depth=depth + 1)
            saved, parts = saved + s, parts + g
        if saved > whole:
            best = (saved, parts)
    return best


def _window_safe(rows, ids, members: list[int], prefix: int, pad_ids: set[int]) -> tuple[int, int]:
    """``prefix`` cut back to the start of the first vision window it would split or that not every row
    shares; and how many windows lie inside it."""
    first = rows[members[0]]
    if not first.images or prefix <= 0:
        return prefix, 0
    starts, ends = window_spans(ids[members[0]], first.images, pad_ids)
    for k, (start, end) in enumerate(zip(starts, ends)):
        if start >= prefix:
            return prefix, k
        same = all(len(rows[i].images) > k and rows[i].images[k].key == first.images[k].key for i in members)
        if not same or end > prefix:
            return start, k
    return prefix, len(starts)


def window_spans(ids: np.ndarray, windows: Sequence[Any], pad_ids: set[int]) -> tuple[list[int], list[int]]:
    """Each window's first pad position and one past its last: window k holds the next ``num_tokens`` pads
    (image or video pads, in prompt order)."""
    pads = np.flatnonzero(np.isin(ids, list(pad_ids)))
    starts, ends, seen = [], [], 0
    for w in windows:
        n = w.num_tokens
        if seen + n > len(pads):  # a row with fewer pads than windows: no window is shared from here
            break
        starts.append(int(pads[seen]))
        ends.append(int(pads[seen + n - 1]) + 1)
        seen += n
    return starts, ends


def group_bytes(runner: Any, rows: Sequence[Any], group: Group) -> int:
    """Working memory of the group's shared path: its prefix K/V, held across the suffix runs, plus the
    larger of the prefix run and the largest suffix run (engine/budget.py)."""
    budget = runner.budget
    first = rows[group.rows[0]]
    prefix_images = sum(w.num_tokens for w in first.images[:group.windows])
    suffix = max(budget.suffix_bytes(len(rows[i].ids) - group.prefix, group.prefix,
                                     sum(w.num_tokens for w in rows[i].images[group.windows:])) for i in group.rows)
    return budget.prefix_kv_bytes(group.prefix) + max(budget.row_bytes(group.prefix, prefix_images), suffix)


def run_group(runner: Any, rows: Sequence[Any], group: Group, image_batch: Any) -> dict[int, np.ndarray]:
    """The decoder output of every row of ``group``: its prefix once (its K/V per layer kept), then each
    row's suffix against it, one row per run, at the positions the full prompt gives it."""
    p, k = group.prefix, group.windows
    first = rows[group.rows[0]]
    layers = runner.manifest.dims.num_layers
    names = [f"present_{kind}.{i}" for i in range(layers) for kind in ("key", "value")]
    full = runner.row_positions(first, image_batch)
    kv = runner.decode(np.asarray([first.ids[:p]], np.int64), full[..., :p], first.images[:k], image_batch,
                       names, extra={"prefix_keep": np.asarray([p], np.int64)})
    past = {f"past_{n[len('present_'):]}": value for n, value in zip(names, kv)}
    out: dict[int, np.ndarray] = {}
    for i in group.rows:
        row = rows[i]
        positions = runner.row_positions(row, image_batch)[..., p:]
        out[i] = runner.decode(np.asarray([row.ids[p:]], np.int64), positions, row.images[k:], image_batch,
                               [runner.output], extra=past)[0][0]
    return out


def _pays(group: Group, rows: Sequence[Any], share: bool | None) -> bool:
    if group.prefix < 1 or len(group.rows) < 2:
        return False
    if share is True:
        return True
    total = sum(len(rows[i].ids) for i in group.rows)
    return (len(group.rows) - 1) * group.prefix >= SHARE_MIN_SAVING * total


__all__ = ["SHARE_MIN_SAVING", "Group", "check_share_prefix", "plan_groups", "window_spans", "group_bytes",
           "run_group"]
