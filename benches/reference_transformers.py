"""The reference stack users run today, timed: transformers + torch (CPU, float32), driven the way the
official Qwen code drives it. Run with a Python that has torch and transformers (a separate venv —
they are never vlrank dependencies); the vlrank benches call this script and print ratios.

    python benches/reference_transformers.py text-rerank --checkpoint DIR --pairs pairs.json --mode loop
    python benches/reference_transformers.py vl-rerank   --checkpoint DIR --pairs pairs.json --mode batched

`pairs.json`: {"query": ..., "documents": [...], "instruction": null, "repeats": 3, "warmup": true}; for
vl-rerank a side is {"texts": [...], "images": [paths]}. Prints one JSON object: per-repeat wall seconds,
scores, the RSS high-water mark after loading and after the calls (MB), versions.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys

import numpy as np
import torch
import transformers
from PIL import Image

from benchlib import hwm_mib, reset_hwm, rgb, timed  # this folder's; imports only the standard library

SYSTEM = ('Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
          'Note that the answer can only be "yes" or "no".')
TEXT_DEFAULT = "Given a web search query, retrieve relevant passages that answer the query"
VL_DEFAULT = "Given a search query, retrieve relevant candidates that answer the query."
YES, NO, IMG_PAD = 9693, 2152, 151655


def text_rerank(checkpoint: str, spec: dict, mode: str) -> dict:
    """The official Qwen3-Reranker README recipe (left padding, 2-way softmax over no/yes)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    prefix = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
    suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    prefix_ids = tok.encode(prefix, add_special_tokens=False)
    suffix_ids = tok.encode(suffix, add_special_tokens=False)
    max_length = 8192
    instruction = spec.get("instruction") or TEXT_DEFAULT
    pairs = [f"<Instruct>: {instruction}\n<Query>: {spec['query']}\n<Document>: {d}" for d in spec["documents"]]

    def score(batch: list[str]) -> list[float]:
        enc = tok(batch, padding=False, truncation="longest_first", return_attention_mask=False,
                  max_length=max_length - len(prefix_ids) - len(suffix_ids))
        enc["input_ids"] = [prefix_ids + ids + suffix_ids for ids in enc["input_ids"]]
        enc = tok.pad(enc, padding=True, return_tensors="pt", max_length=max_length)
        with torch.no_grad():
            logits = model(**enc).logits[:, -1, :]
        two = torch.stack([logits[:, NO], logits[:, YES]], dim=1)
        return torch.log_softmax(two, dim=1)[:, 1].exp().tolist()

    return _timed(lambda: _run(score, pairs, mode), spec)


def vl_rerank(checkpoint: str, spec: dict, mode: str) -> dict:
    """The official Qwen3-VL-Reranker semantics: chat prompt, qwen-vl-utils resize, yes-no head."""
    from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = AutoTokenizer.from_pretrained(checkpoint, padding_side="left")
    model = Qwen3VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    processor = Qwen2VLImageProcessorPil(patch_size=16, temporal_patch_size=2, merge_size=2,
                                         image_mean=[0.5] * 3, image_std=[0.5] * 3, do_resize=False)
    w = model.lm_head.weight.detach().float()
    head = w[YES] - w[NO]
    instruction = spec.get("instruction") or VL_DEFAULT
    min_pixels, max_pixels = spec.get("min_pixels", 4096), spec.get("max_pixels", 1310720)

    def side_text(side: dict) -> str:
        if not side.get("images") and not side.get("texts"):
            return "NULL"
        return "<|vision_start|><|image_pad|><|vision_end|>" * len(side.get("images", [])) + "".join(side.get("texts", []))

    def load(path: str):
        img = rgb(Image.open(path))
        h, w_ = _smart_resize(img.height, img.width, min_pixels, max_pixels)
        out = processor(images=[img.resize((w_, h))], return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"]

    query = spec["query"]

    def score(batch: list[dict]) -> list[float]:
        texts, pixel_values, grids = [], [], []
        for doc in batch:
            prompt = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n<Instruct>: {instruction}"
                      f"<Query>:{side_text(query)}\n<Document>:{side_text(doc)}<|im_end|>\n<|im_start|>assistant\n")
            pieces = prompt.split("<|image_pad|>")
            expanded = pieces[0]
            for path, rest in zip(query.get("images", []) + doc.get("images", []), pieces[1:]):
                pv, grid = load(path)
                pixel_values.append(pv)
                grids.append(grid)
                expanded += "<|image_pad|>" * (int(grid.prod()) // 4) + rest
            texts.append(expanded)
        enc = tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        inputs = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        if pixel_values:
            inputs["pixel_values"] = torch.cat(pixel_values)
            inputs["image_grid_thw"] = torch.cat(grids)
            inputs["mm_token_type_ids"] = (enc["input_ids"] == IMG_PAD).int()
        model.model.rope_deltas = None
        with torch.no_grad():
            hidden = model.model(**inputs).last_hidden_state[:, -1].float()
        return [1 / (1 + math.exp(-float(v))) for v in hidden @ head]

    return _timed(lambda: _run(score, spec["documents"], mode), spec)


def _smart_resize(h: int, w: int, min_pixels: int, max_pixels: int, factor: int = 32) -> tuple[int, int]:
    hb, wb = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def _run(score, items: list, mode: str) -> list[float]:
    if mode == "loop":  # the official per-pair loop: one pair per forward
        return [s for item in items for s in score([item])]
    return score(items)


def _timed(fn, spec: dict) -> dict:
    loaded_mb = reset_hwm()  # the model is loaded; everything above this is the calls' own memory
    timing = timed(fn, int(spec.get("repeats", 3)), warmup=spec.get("warmup", True))
    return {"seconds": timing.seconds, "scores": timing.result, "hwm_loaded_mb": loaded_mb,
            "hwm_peak_mb": hwm_mib(), "torch": torch.__version__,
            "transformers": transformers.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "numpy": np.__version__}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["text-rerank", "vl-rerank"])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--pairs", required=True, help="JSON file: query, documents, instruction, repeats")
    parser.add_argument("--mode", choices=["loop", "batched"], default="loop")
    args = parser.parse_args()
    spec = json.load(open(args.pairs))
    fn = text_rerank if args.task == "text-rerank" else vl_rerank
    print(json.dumps(fn(args.checkpoint, spec, args.mode)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
