"""``vlrank.compare`` / ``vlrank compare``: two real exports of the tiny golden models (float32 vs int8
weight-only) on the same JSON-lines file.

- The report's numbers equal a direct computation: both models rerank / embed every line through the public
  API here, and the statistics are computed in this file independently (numpy, a hand-written Spearman by the
  textbook formula 1 - 6 Σd² / (n (n² - 1)) where no ties, and the rank-Pearson form where ties are).
- The gates and exit codes: 0 when they hold, 1 when one fails, 2 on a usage error.
- Bad input: a missing file, a malformed line, a rerank file against an embedder, two directories of
  different tasks or families -> typed errors naming the line / argument.
"""

from __future__ import annotations

import json
import re
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from export_support import GOLDEN, TEXT_CKPT, VL_CKPT, exported

import vlrank
from vlrank.compare import MAX_LINE_INPUTS, ranks, spearman
from vlrank.errors import InvalidInputError, ModelDirectoryError

IMAGE_URL = f"file://{GOLDEN / 'images' / 'gradient_130x97.png'}"
IMAGE = {"content": [{"type": "image_url", "image_url": {"url": IMAGE_URL}}]}
RERANK_LINES = [
    {"query": "capital of France?", "documents": ["Paris is the capital", "Berlin", "a cat", "the Eiffel tower",
                                                  "bread and cheese"]},
    {"query": "a colour gradient", "documents": [IMAGE, "plain text", "a picture of a gradient"],
     "instruction": "Find the picture"},
    {"query": "one document", "documents": ["the only one"]},
    {"query": "tides", "documents": ["the moon pulls the sea", "tides rise twice a day", "a recipe", "stocks fell"]},
]
EMBED_LINES = [
    {"input": ["a red logo", "a blue logo", "a recipe for bread", IMAGE]},
    {"input": "one input alone", "instruction": "Represent the sentence"},
    {"input": ["the moon", "the sea", "tides"]},
]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compare")


def _int8(root: Path, ckpt: Path, task: str) -> Path:
    out = root / f"{ckpt.name}-{task}-int8"
    return out if out.is_dir() else vlrank.export(ckpt, out, task=task, quantize="int8", progress=False)


def _write(root: Path, name: str, lines: list) -> Path:
    path = root / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlrank.cli", "compare", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


# ---- an independent computation ----------------------------------------------------------------------------

def _textbook_spearman(a, b) -> float:
    """1 - 6 Σd² / (n (n² - 1)) on distinct values; the Pearson correlation of mean ranks where ties are."""
    n = len(a)
    if n < 2:
        return 1.0

    def mean_ranks(v):
        return [sum(1 for w in v if w < x) + (sum(1 for w in v if w == x) + 1) / 2 for x in v]

    ra, rb = mean_ranks(list(a)), mean_ranks(list(b))
    if len(set(a)) == n and len(set(b)) == n:
        return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb)) / (n * (n * n - 1))
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    if va == 0 or vb == 0:
        return 1.0 if va == vb else 0.0
    return cov / math.sqrt(va * vb)


def _scores(model, line) -> list[float]:
    out = model.rerank(line["query"], line["documents"], instruction=line.get("instruction"))
    by_index = {r["index"]: r["relevance_score"] for r in out["results"]}
    return [by_index[i] for i in range(len(line["documents"]))]


def _top(model, line, k) -> set[int]:
    return {r["index"] for r in model.rerank(line["query"], line["documents"], instruction=line.get("instruction"),
                                             top_n=k)["results"]}


def _direct_rerank(ref_dir: Path, cand_dir: Path, lines: list, k: int = 3) -> dict:
    ref, cand = vlrank.Reranker(ref_dir), vlrank.Reranker(cand_dir)
    diffs, rhos, agree = [], [], 0
    for line in lines:
        a, b = _scores(ref, line), _scores(cand, line)
        diffs += [abs(x - y) for x, y in zip(a, b)]
        rhos.append(_textbook_spearman(a, b))
        agree += _top(ref, line, k) == _top(cand, line, k)  # rerank()'s own top_n order
    return {"max_abs_diff": max(diffs), "median_abs_diff": float(np.median(diffs)), "spearman_min": min(rhos),
            "spearman_mean": sum(rhos) / len(rhos), "top_k_agreement": agree / len(lines),
            "documents": len(diffs)}


def _assert_report(report: dict, direct: dict) -> None:
    for key, value in direct.items():
        assert report[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


# ---- the report equals a direct computation ----------------------------------------------------------------

def test_vl_rerank_report_equals_direct(root):
    ref, cand = exported(VL_CKPT, "rerank"), _int8(root, VL_CKPT, "rerank")
    queries = _write(root, "vl-rerank.jsonl", RERANK_LINES)
    report = vlrank.compare(ref, cand, queries=queries)
    direct = _direct_rerank(ref, cand, RERANK_LINES)
    _assert_report(report, direct)
    assert report["task"] == "rerank" and report["family"] == "qwen3_vl" and report["lines"] == len(RERANK_LINES)
    assert 0 < report["max_abs_diff"] < 1e-2  # int8 moves the scores, within the golden int8 bound
    assert report["candidate"]["quantization"]["scheme"] == "int8" and report["reference"]["quantization"] is None
    for side in ("reference", "candidate"):
        assert report[side]["docs_per_s"] == pytest.approx(direct["documents"] / report[side]["seconds"])
    assert report["gates"] == {} and report["passed"] is True


def test_text_rerank_report_equals_direct_with_k(root):
    ref, cand = exported(TEXT_CKPT, "rerank"), _int8(root, TEXT_CKPT, "rerank")
    lines = [line for line in RERANK_LINES if line["documents"][0] is not IMAGE]
    queries = _write(root, "text-rerank.jsonl", lines)
    report = vlrank.compare(ref, cand, queries=queries, top_k=1)
    _assert_report(report, _direct_rerank(ref, cand, lines, k=1))
    assert report["family"] == "qwen3" and report["top_k"] == 1 and report["max_abs_diff"] > 0


def test_same_export_is_exact(root):
    ref = exported(TEXT_CKPT, "rerank")
    report = vlrank.compare(ref, ref, queries=_write(root, "same.jsonl", RERANK_LINES[2:]), max_abs_diff=0.0,
                            min_spearman=1.0)
    assert report["max_abs_diff"] == 0.0 and report["spearman_min"] == 1.0 and report["top_k_agreement"] == 1.0
    assert report["passed"] is True


def test_embed_report_equals_direct(root):
    ref_dir, cand_dir = exported(VL_CKPT, "embed"), _int8(root, VL_CKPT, "embed")
    report = vlrank.compare(ref_dir, cand_dir, queries=_write(root, "embed.jsonl", EMBED_LINES))
    ref, cand = vlrank.Embedder(ref_dir), vlrank.Embedder(cand_dir)
    diffs, cosines, rhos = [], [], []
    for line in EMBED_LINES:
        a = np.array([d["embedding"] for d in ref.embed(line["input"], instruction=line.get("instruction"))["data"]])
        b = np.array([d["embedding"] for d in cand.embed(line["input"], instruction=line.get("instruction"))["data"]])
        diffs += list(np.abs(a - b).ravel().astype(np.float32))
        cosines += [float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))) for x, y in zip(a, b)]
        pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]

        def cos(m, i, j):
            return float(m[i] @ m[j] / (np.linalg.norm(m[i]) * np.linalg.norm(m[j])))

        rhos.append(_textbook_spearman([cos(a, i, j) for i, j in pairs], [cos(b, i, j) for i, j in pairs]))
    _assert_report(report, {"max_abs_diff": max(diffs), "median_abs_diff": float(np.median(diffs)),
                            "cosine_min": min(cosines), "cosine_mean": sum(cosines) / len(cosines),
                            "spearman_min": min(rhos), "spearman_mean": sum(rhos) / len(rhos),
                            "inputs": len(cosines)})
    assert report["task"] == "embed" and "top_k_agreement" not in report
    assert 0.999 < report["cosine_min"] < 1.0


# ---- Spearman's conventions ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("a", "b", "rho"), [
    ([0.5], [0.1], 1.0),                                 # one document: nothing to misorder
    ([], [], 1.0),
    ([0.1, 0.2, 0.3], [0.3, 0.2, 0.1], -1.0),
    ([0.4, 0.4, 0.4], [0.1, 0.2, 0.3], 0.0),             # one side all equal, the other not
    ([0.4, 0.4], [0.7, 0.7], 1.0),                       # both all equal
    ([0.1, 0.2, 0.2, 0.9], [0.1, 0.3, 0.2, 0.9], None),  # ties: mean ranks
    ([3.0, 1.0, 2.0, 5.0, 4.0], [2.0, 1.0, 3.0, 4.0, 5.0], 0.8),
])
def test_spearman_conventions(a, b, rho):
    got = spearman(np.array(a, dtype=float), np.array(b, dtype=float))
    assert got == pytest.approx(_textbook_spearman(a, b) if rho is None else rho)
    assert got == pytest.approx(_textbook_spearman(a, b))


def test_ranks_share_ties():
    assert ranks(np.array([0.2, 0.1, 0.2, 0.5])).tolist() == [2.5, 1.0, 2.5, 4.0]


# ---- the command line: report, gates, exit codes -------------------------------------------------------------

def test_cli_gates_and_exit_codes(root):
    ref, cand = exported(VL_CKPT, "rerank"), _int8(root, VL_CKPT, "rerank")
    queries = _write(root, "cli.jsonl", RERANK_LINES)
    ok = _cli(ref, cand, "--queries", queries, "--json", "--max-abs-diff", "0.05", "--min-spearman", "0.5")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["passed"] is True and set(report["gates"]) == {"max_abs_diff", "min_spearman"}
    assert report["max_abs_diff"] == pytest.approx(vlrank.compare(ref, cand, queries=queries)["max_abs_diff"])

    failed = _cli(ref, cand, "--queries", queries, "--max-abs-diff", "1e-9")
    assert failed.returncode == 1
    assert "gate failed: max_abs_diff" in failed.stderr and "FAIL" in failed.stdout
    assert "Spearman min" in failed.stdout and "documents/s" in failed.stdout

    usage = _cli(ref, cand)  # --queries is required: argparse's usage error
    assert usage.returncode == 2 and "--queries" in usage.stderr
    bad_number = _cli(ref, cand, "--queries", queries, "--max-abs-diff", "lots")
    assert bad_number.returncode == 2 and "--max-abs-diff" in bad_number.stderr
    missing = _cli(ref, cand, "--queries", root / "nope.jsonl")
    assert missing.returncode == 2 and "vlrank: error: queries: cannot read" in missing.stderr
    assert "Traceback" not in missing.stderr and missing.stdout == ""


# ---- bad input: typed errors naming the line / argument ------------------------------------------------------

def test_missing_file(root):
    with pytest.raises(InvalidInputError, match="cannot read") as e:
        vlrank.compare(exported(TEXT_CKPT, "rerank"), exported(TEXT_CKPT, "rerank"), queries=root / "absent.jsonl")
    assert e.value.field == "queries"


def test_malformed_line_names_its_number(root):
    queries = _write(root, "bad.jsonl", [RERANK_LINES[0], "", '{"query": "q", "documents": ["a"'])
    with pytest.raises(InvalidInputError, match=r"bad\.jsonl:3 is not a JSON value") as e:
        vlrank.compare(exported(TEXT_CKPT, "rerank"), exported(TEXT_CKPT, "rerank"), queries=queries)
    assert e.value.field == "queries:3"


@pytest.mark.parametrize(("line", "field", "needle"), [
    ({"query": "q", "documents": []}, "queries:2.documents", "non-empty list"),
    ({"query": "q", "docs": ["a"]}, "queries:2", "has keys ['docs']"),
    (["not", "an", "object"], "queries:2", "not a JSON object"),
    ({"input": "an embed line"}, "queries:2", "keep one kind of line per file"),
])
def test_bad_lines(root, line, field, needle):
    queries = _write(root, "bad-line.jsonl", [RERANK_LINES[2], line])
    with pytest.raises(InvalidInputError, match=re.escape(needle)) as e:
        vlrank.compare(exported(TEXT_CKPT, "rerank"), exported(TEXT_CKPT, "rerank"), queries=queries)
    assert e.value.field == field


def test_line_cap(root):
    queries = _write(root, "long.jsonl", RERANK_LINES[2:] * 3)
    with pytest.raises(InvalidInputError, match="more than 2 lines") as e:
        vlrank.compare(exported(TEXT_CKPT, "rerank"), exported(TEXT_CKPT, "rerank"), queries=queries, max_lines=2)
    assert e.value.field == "queries:3"


def test_line_too_wide(root):
    queries = _write(root, "wide.jsonl", [{"input": ["x"] * (MAX_LINE_INPUTS + 1)}])
    with pytest.raises(InvalidInputError, match=f"has {MAX_LINE_INPUTS + 1} input") as e:
        vlrank.compare(exported(VL_CKPT, "embed"), exported(VL_CKPT, "embed"), queries=queries)
    assert e.value.field == "queries:1.input"


def test_rerank_file_against_an_embedder(root):
    queries = _write(root, "rr.jsonl", RERANK_LINES[:1])
    with pytest.raises(InvalidInputError, match="is a rerank line but reference is an embed model") as e:
        vlrank.compare(exported(VL_CKPT, "embed"), exported(VL_CKPT, "embed"), queries=queries)
    assert e.value.field == "queries:1"


def test_directories_of_different_tasks(root):
    queries = _write(root, "rr2.jsonl", RERANK_LINES[:1])
    with pytest.raises(InvalidInputError, match="candidate is an embed model") as e:
        vlrank.compare(exported(VL_CKPT, "rerank"), exported(VL_CKPT, "embed"), queries=queries)
    assert e.value.field == "queries:1"


def test_directories_of_different_families(root):
    queries = _write(root, "rr3.jsonl", RERANK_LINES[2:3])
    with pytest.raises(ModelDirectoryError, match="'qwen3' model against a 'qwen3_vl' reference") as e:
        vlrank.compare(exported(VL_CKPT, "rerank"), exported(TEXT_CKPT, "rerank"), queries=queries)
    assert e.value.field == "candidate"


def test_missing_model_names_the_argument(root):
    queries = _write(root, "rr4.jsonl", RERANK_LINES[2:3])
    with pytest.raises(ModelDirectoryError) as e:
        vlrank.compare(exported(TEXT_CKPT, "rerank"), root / "no-such-model", queries=queries)
    assert e.value.field == "candidate" and str(e.value).startswith("candidate: ")


def test_bad_document_names_its_line(root):
    queries = _write(root, "rr5.jsonl", [RERANK_LINES[2], {"query": "q", "documents": [{"content": 5}]}])
    with pytest.raises(InvalidInputError, match="line 2") as e:
        vlrank.compare(exported(TEXT_CKPT, "rerank"), exported(TEXT_CKPT, "rerank"), queries=queries)
    assert e.value.field.startswith("queries:2.documents")



def test_checkpoint_against_its_int8_export(root, monkeypatch):
    # A checkpoint directory is exported once into $VLRANK_CACHE, with the task the file's lines pick.
    monkeypatch.setenv("VLRANK_CACHE", str(root / "cache"))
    lines = [line for line in RERANK_LINES if line["documents"][0] is not IMAGE]
    report = vlrank.compare(TEXT_CKPT, _int8(root, TEXT_CKPT, "rerank"), queries=_write(root, "ckpt.jsonl", lines))
    _assert_report(report, _direct_rerank(exported(TEXT_CKPT, "rerank"), _int8(root, TEXT_CKPT, "rerank"), lines))
    assert report["reference"]["model"] == str(TEXT_CKPT) and report["family"] == "qwen3"
