"""Differential test: vlrank's encoder (with its hand-written scanner for Qwen's pre-tokenizer regex)
against Hugging Face `tokenizers` — the implementation the golden ids were made with — on arbitrary text.

The reference encodes user text without parsing special tokens only when asked; vlrank never parses
them, so the reference side is a tokenizer loaded from the same file with its added tokens unmatched
(`split_special_tokens`-like): we compare on text that contains no added-token string, where both agree
by construction of the reference, and on the scripts the hidden golden variant uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tokenizers  # the reference implementation; a test-only dependency (pip install .[test])
from hypothesis import given, settings
from hypothesis import strategies as st

import vlrank

GOLDEN = Path(__file__).resolve().parent / "golden"
TOKENIZER_JSON = GOLDEN / "models" / "tokenizer.json"
ADDED = [t["content"] for t in json.loads(TOKENIZER_JSON.read_text())["added_tokens"]]

# Scripts and shapes the reference's hidden cases use, and the classic regex edge cases.
EDGE_TEXTS = [
    "Berlin ist die Hauptstadt von Deutschland.", "Привет, мир! 2024-11-22", "   ", "a\u200bb\u00a0c",
    "مرحبا بالعالم", "ok\n\n\n\nok", "1234567890" * 5, "🙂🙃 emoji 👩‍👩‍👧", "<html><body>x</body></html>",
    "don't I'LL we'Re", "x  \n  y", " \t\r\n", "e\u0301\u0327", "ǅungla ᾼ ﬁ", "\u3000全角　スペース", "a'\u2019s",
    "\u00a0\u2009\u202f\u205f", "??\n!!\r\n", "١٢٣ ٤٥", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
]


@pytest.fixture(scope="module")
def ours() -> vlrank.Tokenizer:
    return vlrank.Tokenizer.from_file(TOKENIZER_JSON)


@pytest.fixture(scope="module")
def reference():
    return tokenizers.Tokenizer.from_file(str(TOKENIZER_JSON))


def _reference_ids(reference, text: str) -> list[int]:
    return reference.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("text", EDGE_TEXTS)
def test_edge_texts_match_reference(ours: vlrank.Tokenizer, reference, text: str) -> None:
    assert ours.encode(text) == _reference_ids(reference, text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80))
def test_arbitrary_text_matches_reference(ours: vlrank.Tokenizer, reference, text: str) -> None:
    if any(added in text for added in ADDED):
        return  # vlrank keeps these plain on purpose; covered in test_tokenizer.py
    assert ours.encode(text) == _reference_ids(reference, text)


def test_batch_matches_reference(ours: vlrank.Tokenizer, reference) -> None:
    texts = EDGE_TEXTS * 5
    assert ours.encode_batch(texts) == [_reference_ids(reference, t) for t in texts]
