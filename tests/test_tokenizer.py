"""vlrank.Tokenizer against the real Qwen tokenizer and the golden encodings."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vlrank
from vlrank.errors import InvalidInputError, TokenizerError

GOLDEN = Path(__file__).resolve().parent / "golden"
TOKENIZER_JSON = GOLDEN / "models" / "tokenizer.json"
ADDED = [t["content"] for t in json.loads(TOKENIZER_JSON.read_text())["added_tokens"]]
FIRST_ADDED_ID = 151643


@pytest.fixture(scope="module")
def tok() -> vlrank.Tokenizer:
    return vlrank.Tokenizer.from_file(TOKENIZER_JSON)


def golden_cases() -> list[dict]:
    return json.loads((GOLDEN / "cases" / "tokenizer.json").read_text())


def test_golden_cases_exact(tok: vlrank.Tokenizer) -> None:
    cases = golden_cases()
    assert cases
    for case in cases:
        assert tok.encode(case["text"]) == case["ids"], case["text"]
    assert tok.encode_batch([c["text"] for c in cases]) == [c["ids"] for c in cases]


def test_vocabulary(tok: vlrank.Tokenizer) -> None:
    assert tok.vocab_size == 151_669
    assert tok.token_to_id("yes") == 9693
    assert tok.token_to_id("no") == 2152
    assert tok.token_to_id("<|im_start|>") == 151644
    assert tok.token_to_id("<|image_pad|>") == 151655
    assert tok.token_to_id("definitely not a token") is None
    assert tok.id_to_token(151645) == "<|im_end|>"
    assert tok.id_to_token(10**7) is None


# Text that exercises every pre-tokeniser branch: special-token strings, emoji (ZWJ sequences),
# CJK, combining marks, every kind of whitespace, contractions, digits.
_pieces = st.sampled_from(
    ADDED
    + ["<|", "|>", "<think", "'s", "'LL", " 'm", "😀", "👩\u200d👩\u200d👧", "🇩🇪", "東京", "タワー", "한국어", "e\u0301"]
    + [" ", "  ", "\n", "\r\n", "\t", "\u00a0", "\u3000", "\u200b", "123", "٣", "ﬁ", "½"]
)
_texts = st.lists(st.one_of(st.text(max_size=12), _pieces), max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(_texts)
def test_decode_inverts_encode(tok: vlrank.Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    # The tokenizer normalises to NFC first (as the reference does); decoding gives that text back.
    assert tok.decode(ids) == unicodedata.normalize("NFC", text)
    # User text is plain: never an added (control) token, whatever it spells.
    assert all(i < FIRST_ADDED_ID for i in ids)


def test_special_token_strings_stay_plain(tok: vlrank.Tokenizer) -> None:
    text = "".join(ADDED)
    ids = tok.encode(text)
    assert all(i < FIRST_ADDED_ID for i in ids)
    assert tok.decode(ids) == text
    assert tok.encode("<|im_end|>") == [27, 91, 318, 6213, 91, 29]


def test_decode_added_ids(tok: vlrank.Tokenizer) -> None:
    ids = [151644, *tok.encode("user\nHello"), 151645, 151667]
    assert tok.decode(ids) == "<|im_start|>user\nHello<|im_end|><think>"
    # <think> is an added but not special token: skip_special_tokens keeps it (as HF does).
    assert tok.decode(ids, skip_special_tokens=True) == "user\nHello<think>"


def test_encode_batch_order_and_parallel(tok: vlrank.Tokenizer) -> None:
    texts = [f"document number {i} " * (i % 7) for i in range(500)]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.encode_batch([]) == []


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        vlrank.Tokenizer.from_file(tmp_path / "missing.json")
    with pytest.raises(TokenizerError):
        vlrank.Tokenizer.from_file(tmp_path)  # a directory
    corrupt = tmp_path / "tokenizer.json"
    corrupt.write_bytes(TOKENIZER_JSON.read_bytes()[:5000])
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        vlrank.Tokenizer.from_file(corrupt)
    corrupt.write_text('{"version": "1.0"}')
    with pytest.raises(TokenizerError):
        vlrank.Tokenizer.from_file(corrupt)


def test_bad_arguments(tok: vlrank.Tokenizer) -> None:
    with pytest.raises(InvalidInputError) as e:
        tok.encode(123)  # type: ignore[arg-type]
    assert e.value.field == "text"
    with pytest.raises(InvalidInputError) as e:
        tok.encode("ok \ud800")  # lone surrogate: not encodable text
    assert e.value.field == "text"
    with pytest.raises(InvalidInputError) as e:
        tok.encode_batch("not a list")  # type: ignore[arg-type]
    assert e.value.field == "texts"
    with pytest.raises(InvalidInputError) as e:
        tok.decode([1, 2, 999_999])
    assert e.value.field == "ids[2]"
    with pytest.raises(InvalidInputError) as e:
        tok.decode([-1])
    assert e.value.field == "ids[0]"
