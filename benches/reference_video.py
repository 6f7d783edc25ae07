"""The reference video stack, timed: qwen-vl-utils (torchvision backend on PyAV) + transformers' Qwen3-VL
video processor, driven as the official Qwen3VLReranker / Qwen3VLEmbedder drive them (golden README,
Video). Run with a Python that has torch, torchvision, transformers, qwen-vl-utils and av (a separate
venv; never vlrank dependencies); benches/bench_video.py calls it and prints ratios.

    python benches/reference_video.py preprocess --spec spec.json --out DIR
    python benches/reference_video.py rerank --spec spec.json --checkpoint DIR

preprocess spec: {"videos": [{"name": ..., "video": path} | {"name": ..., "frames": [paths]}], "repeats": 3}.
Per video: seconds of ``fetch_video`` (decode, sample, resize) and of the whole (fetch + video processor:
normalise, temporal pairs, patch rows), the grid and frame count, and a sample of the pixel rows saved to
DIR/<name>.npy (every ``step``-th row: a 60 s 720p clip has ~86,000 rows, 0.5 GB).

rerank spec: {"query": side, "documents": [side], "repeats": 3}, a side {"texts": [...], "videos": [path or
[frame paths]]} with absolute paths; the official loop, one pair per forward (decode and processor
included, as the official code runs them per pair).

The conventions (the torchvision 0.23 ``read_video`` stand-in on PyAV, the processor built from its
parts, prompt rendering, the forward) are imported from ../shared/golden/make_video_golden.py, the
script that made the golden cases, so this measures exactly that reference.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
from pathlib import Path

os.environ["FORCE_QWENVL_VIDEO_READER"] = "torchvision"  # qwen-vl-utils reads it at import time

from benchlib import hwm_mib, reset_hwm, timed  # noqa: E402 - this folder's; imports only the standard library

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
MAX_ROWS_SAVED = 4096


def _golden():
    sys.path.insert(0, str(GOLDEN))
    import make_video_golden as mvg  # noqa: PLC0415

    mvg.install_backend()
    return mvg


def _element(item: dict) -> dict:
    """The content element the official format_mm_content builds (file: fps 1 / max_frames 64; frame list:
    the first 64 by linspace, total_pixels 7,864,320)."""
    if "video" in item:
        return {"type": "video", "video": "file://" + str(item["video"]), "fps": item.get("fps", 1),
                "max_frames": item.get("max_frames", 64)}
    frames = item["frames"]
    if len(frames) > 64:
        import numpy as np  # noqa: PLC0415

        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, 64, dtype=int).tolist()]
    return {"type": "video", "video": ["file://" + str(f) for f in frames],
            "total_pixels": item.get("total_pixels", 7864320)}


def preprocess(spec: dict, out: Path) -> dict:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from qwen_vl_utils import vision_process as vpu  # noqa: PLC0415
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor  # noqa: PLC0415

    mvg = _golden()
    vp = Qwen3VLVideoProcessor(patch_size=16, temporal_patch_size=2, merge_size=2,
                               image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    results = {}
    for item in spec["videos"]:
        ele = _element(item)

        def fetch():
            return vpu.fetch_video(copy.deepcopy(ele), image_patch_size=16, return_video_sample_fps=True,
                                   return_video_metadata=True)

        def full():
            (video, meta), _ = fetch()
            return vp(videos=[video], video_metadata=[dict(meta)], do_resize=False, do_sample_frames=False,
                      return_tensors="pt")

        base_mb = reset_hwm()
        repeats = int(spec.get("repeats", 3))
        fetch_s = timed(lambda: fetch() and None, repeats).seconds  # keeps no frames: peak_mb stays full()'s
        timing = timed(full, repeats, warmup=False)  # fetch's warm-up warmed it
        full_s, bf = timing.seconds, timing.result
        pv = bf["pixel_values_videos"].numpy()
        step = max(1, math.ceil(pv.shape[0] / MAX_ROWS_SAVED))
        np.save(out / f"{item['name']}.npy", np.ascontiguousarray(pv[::step]))
        results[item["name"]] = dict(fetch_s=fetch_s, full_s=full_s, peak_mb=hwm_mib() - base_mb, grid=bf["video_grid_thw"][0].tolist(),
                                     shape=list(pv.shape), step=step, mean=float(pv.mean(dtype=np.float64)))
        del bf, pv, timing
    return dict(videos=results, torch=torch.__version__, threads=torch.get_num_threads(),
                python=platform.python_version(), backend=mvg.BACKEND)


def rerank(spec: dict, checkpoint: str) -> dict:
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415
    from qwen_vl_utils import process_vision_info  # noqa: PLC0415
    from transformers import Qwen3VLForConditionalGeneration  # noqa: PLC0415

    mvg = _golden()
    proc, _ = mvg.build_processor(str(GOLDEN / "models" / "tokenizer.json"))
    model = Qwen3VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    w = model.lm_head.weight.detach().float()
    head = w[mvg.YES] - w[mvg.NO]

    def score(doc: dict) -> float:
        conv, text = mvg.rerank_conversation(spec.get("instruction"), spec["query"], doc, "/")
        images, videos, video_kwargs = process_vision_info([conv], image_patch_size=16, return_video_kwargs=True,
                                                           return_video_metadata=True)
        metas = None
        if videos is not None:
            videos, metas = (list(x) for x in zip(*videos))
        bf = proc(text=[text], images=images, videos=videos, video_metadata=metas, truncation=False,
                  padding=False, do_resize=False, **video_kwargs)
        ids = [int(t) for t in bf["input_ids"][0]]
        pv_img = torch.as_tensor(bf["pixel_values"]) if images else None
        g_img = torch.as_tensor(bf["image_grid_thw"]) if images else None
        pv_vid = torch.as_tensor(bf["pixel_values_videos"]) if videos else None
        g_vid = torch.as_tensor(bf["video_grid_thw"]) if videos else None
        h, _ = mvg.forward(model, ids, pv_img, g_img, pv_vid, g_vid)
        return 1 / (1 + math.exp(-float(h @ head)))

    def run_all() -> list[float]:
        return [score(d) for d in spec["documents"]]

    timing = timed(run_all, int(spec.get("repeats", 3)))
    return dict(seconds=timing.seconds, scores=timing.result, torch=torch.__version__, transformers=transformers.__version__,
                threads=torch.get_num_threads(), backend=mvg.BACKEND)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=["preprocess", "rerank"])
    ap.add_argument("--spec", required=True, type=Path)
    ap.add_argument("--out", type=Path, help="preprocess: folder for the sampled pixel rows")
    ap.add_argument("--checkpoint", help="rerank: the transformers checkpoint")
    args = ap.parse_args()
    spec = json.loads(args.spec.read_text())
    res = preprocess(spec, args.out) if args.task == "preprocess" else rerank(spec, args.checkpoint)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
