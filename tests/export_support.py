"""Helpers shared by the export / golden / facade tests (owner: export).

Exports are cached per (model, task, dtype) for the whole pytest session so each test file does not
re-export the tiny checkpoints.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np

from vlrank.export import export as export_model
from vlrank.engine.sessions import create_session

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN = REPO_ROOT / "tests" / "golden"
MODELS = GOLDEN / "models"
TEXT_CKPT = MODELS / "tiny-qwen3-text"
VL_CKPT = MODELS / "tiny-qwen3-vl"
IMAGE_PAD = 151655

_EXPORTS: dict[tuple[str, str, str], Path] = {}
_SESSIONS: dict[Path, object] = {}
_TMP = Path(tempfile.mkdtemp(prefix="vlrank-test-exports-"))


def cases(name: str) -> list[dict]:
    return json.loads((GOLDEN / "cases" / name).read_text())


def exported(ckpt: Path, task: str, dtype: str = "float32") -> Path:
    key = (ckpt.name, task, dtype)
    if key not in _EXPORTS:
        out = _TMP / f"{ckpt.name}-{task}-{dtype}"
        _EXPORTS[key] = export_model(ckpt, out, task=task, dtype=dtype, progress=False)
    return _EXPORTS[key]


def session(model_dir: Path):
    if model_dir not in _SESSIONS:
        _SESSIONS[model_dir] = create_session(model_dir / "decoder.onnx", providers="cpu")
    return _SESSIONS[model_dir]


def run_rows(sess, rows: list[tuple[list[int], np.ndarray | None]], output: str, *,
             extra_pad: int = 0) -> np.ndarray:
    """Right-pad ``rows`` (ids, position_ids (3, L) or None for text arange) into one batch and run it."""
    vl = len(sess.get_inputs()) > 3
    L = max(len(ids) for ids, _ in rows) + extra_pad
    B = len(rows)
    input_ids = np.full((B, L), 151643, dtype=np.int64)  # <|endoftext|> as pad, the reference's pad token
    mask = np.zeros((B, L), dtype=np.int64)
    pos = np.zeros((3, B, L) if vl else (B, L), dtype=np.int64)
    for b, (ids, p) in enumerate(rows):
        n = len(ids)
        input_ids[b, :n] = ids
        mask[b, :n] = 1
        if vl:
            pos[:, b, :n] = np.asarray(p, dtype=np.int64) if p is not None else np.arange(n)
        else:
            pos[b, :n] = np.arange(n)
    feeds = {"input_ids": input_ids, "attention_mask": mask, "position_ids": pos}
    if vl:  # no image tokens: empty feature tensors, sized from the graph's static dims
        shapes = {i.name: i.shape for i in sess.get_inputs()}
        k, _, hidden = shapes["deepstack_embeds"]
        feeds["image_embeds"] = np.zeros((0, hidden), np.float32)
        feeds["deepstack_embeds"] = np.zeros((k, 0, hidden), np.float32)
    return sess.run([output], feeds)[0]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softmax_yes(logits: np.ndarray) -> np.ndarray:
    """P(yes) from (B, 2) [no, yes] logits."""
    lg = logits.astype(np.float64)
    e = np.exp(lg - lg.max(axis=-1, keepdims=True))
    return e[:, 1] / e.sum(axis=-1)


SPECIALS = {
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
}


def encode_prompt(prompt: str, tokenizer_path: Path) -> list[int]:
    """Encode a prompt whose special tokens are written out: each run of text between special tokens is
    encoded as plain text (as prompt.rs does). Uses the native vlrank.Tokenizer."""
    import re

    import vlrank

    tok = vlrank.Tokenizer.from_file(str(tokenizer_path))
    ids: list[int] = []
    pattern = "(" + "|".join(re.escape(s) for s in SPECIALS) + ")"
    for piece in re.split(pattern, prompt):
        if piece in SPECIALS:
            ids.append(SPECIALS[piece])
        elif piece:
            ids.extend(tok.encode(piece))
    return ids


def embed_prompt(instruction: str | None, texts: list[str]) -> str:
    """The VL embedder prompt for a text-only input (golden README)."""
    import unicodedata

    instr = instruction
    if instr:
        instr = instr.strip()
        if instr and not unicodedata.category(instr[-1]).startswith("P"):
            instr += "."
    instr = instr or "Represent the user's input."
    body = "".join(texts) if texts else "NULL"
    return (f"<|im_start|>system\n{instr}<|im_end|>\n<|im_start|>user\n{body}<|im_end|>\n"
            "<|im_start|>assistant\n")
