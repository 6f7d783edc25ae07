"""transformers on the GPU, as a user would run the Qwen3-VL-Reranker there: bfloat16 weights, SDPA
attention, one left-padded forward per call of all documents (chunks of --chunk), the official
yes-minus-no head on the last token. Prints docs/s and p50 for the text and the image documents.

    python benches/gpu/reference_gpu.py --checkpoint DIR --spec spec.json

``spec.json``: {"query", "texts": [...], "images": [paths], "repeats", "max_pixels", "device"}
(written by gpu_checks.py throughput). Run with a Python that has torch (CUDA) and transformers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_transformers import IMG_PAD, NO, SYSTEM, VL_DEFAULT, YES, _smart_resize  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--chunk", type=int, default=16)
    args = ap.parse_args()
    spec = json.loads(Path(args.spec).read_text())
    device = "cuda" if spec.get("device", "cuda") == "cuda" else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = AutoTokenizer.from_pretrained(args.checkpoint, padding_side="left")
    model = Qwen3VLForConditionalGeneration.from_pretrained(args.checkpoint, dtype=dtype,
                                                            attn_implementation="sdpa").to(device).eval()
    processor = Qwen2VLImageProcessorPil(patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3,
                                         image_std=[0.5] * 3, do_resize=False)
    w = model.lm_head.weight.detach().float()
    head = (w[YES] - w[NO]).to(device)
    query = spec["query"]

    def prompt(doc: str, n_image_tokens: int) -> str:
        image = ("<|vision_start|>" + "<|image_pad|>" * n_image_tokens + "<|vision_end|>") if n_image_tokens else ""
        return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n<Instruct>: {VL_DEFAULT}"
                f"<Query>:{query}\n<Document>:{image}{doc}<|im_end|>\n<|im_start|>assistant\n")

    def load(path: str):
        img = Image.open(path).convert("RGB")
        h, w_ = _smart_resize(img.height, img.width, 4096, spec.get("max_pixels", 1310720))
        out = processor(images=[img.resize((w_, h))], return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"]

    def score(texts: list[str], images: list[str]) -> list[float]:
        scores = []
        for start in range(0, max(len(texts), len(images)), args.chunk):
            batch_t = texts[start : start + args.chunk]
            batch_i = images[start : start + args.chunk]
            pixel_values, grids, prompts = [], [], []
            if batch_i:
                for i, path in enumerate(batch_i):
                    pv, grid = load(path)
                    pixel_values.append(pv)
                    grids.append(grid)
                    prompts.append(prompt(f"figure {start + i}", int(grid.prod()) // 4))
            else:
                prompts = [prompt(t, 0) for t in batch_t]
            enc = tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
            inputs = {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
            if pixel_values:
                inputs["pixel_values"] = torch.cat(pixel_values).to(device, dtype)
                inputs["image_grid_thw"] = torch.cat(grids).to(device)
                inputs["mm_token_type_ids"] = (inputs["input_ids"] == IMG_PAD).int()
            model.model.rope_deltas = None
            with torch.no_grad():
                hidden = model.model(**inputs).last_hidden_state[:, -1].float()
            scores += torch.sigmoid(hidden @ head).tolist()
        if device == "cuda":
            torch.cuda.synchronize()
        return scores

    out = {"torch": torch.__version__, "transformers": transformers.__version__, "dtype": str(dtype),
           "attention": "sdpa", "device": device}
    for name, texts, images in (("text", spec["texts"], []), ("images", [], spec["images"])):
        if not texts and not images:
            continue
        n = len(texts) or len(images)
        score(texts, images)  # warm-up
        seconds = []
        for _ in range(int(spec.get("repeats", 5))):
            start = time.perf_counter()
            score(texts, images)
            seconds.append(time.perf_counter() - start)
        p50 = statistics.median(seconds)
        out[name] = {"p50_s": p50, "docs_per_s": n / p50}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
