"""Video preprocessing speed: vlrank (PyAV decode of the sampled frames only, then the native resize /
normalise / pair layout, GIL released, parallel over frames) vs qwen-vl-utils ``fetch_video`` (torchvision
backend on PyAV) + transformers' Qwen3-VL video processor, the reference stack, with the same options
(file videos fps 1 / max_frames 64; frame lists as the official code passes them, total_pixels 7,864,320).

Inputs: the golden clips (../shared/golden/videos), a 60 s 1280x720 10 fps H.264 clip generated here with
PyAV (600 frames, 60 sampled), the golden 70-frame list and a 32-frame 1280x720 JPEG list cut from the
long clip. The reference runs benches/reference_video.py in its own venv (torch pinned to the same thread
count); in the same run the outputs are compared: same grid, pixel rows within the golden README's decode
tolerance (file videos: max |Δ| <= 6/127.5, mean <= 0.5/127.5, the decoders' spread; PNG frame lists
exact; JPEG frame lists the image tolerance, mean <= 0.004 and 99.9th percentile <= 3/127.5).

``--e2e``: end-to-end video rerank through ``vlrank.Reranker`` vs transformers' Qwen3-VL (the official
loop, one pair per forward) on the tiny golden checkpoint (``tiny-qwen3-vl``), scores compared.

    python benches/bench_video.py [--quick] [--reference-python PATH] [--threads 2] [--e2e] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import benchlib
from vlrank.preprocess import video as pv

GOLDEN = benchlib.REPO.parent / "shared" / "golden"
VIDEOS = GOLDEN / "videos"
DEFAULT_REFERENCE = Path("/work/tfvenv/bin/python")
FILE_TOL_MAX, FILE_TOL_MEAN = 6 / 127.5, 0.5 / 127.5


# ---- inputs ----

def long_clip(path: Path, *, seconds: int = 60, fps: int = 10, width: int = 1280, height: int = 720) -> Path:
    """A moving-pattern H.264 clip (yuv420p, the common case), made once and kept in the workdir.

    10 fps, not 30: the reference (qwen-vl-utils' torchvision backend) decodes every frame to RGB before it
    samples: at 30 fps that is 1,800 RGB frames of 2.8 MB, held and then stacked (~10 GB by that count; a
    run was killed on this 24 GB shared machine); 600 frames keep it near 4 GB, and the sampled frames (60)
    and the work after sampling are the same."""
    if path.exists():
        return path
    import av

    tmp = path.with_suffix(".part.mp4")
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(tmp), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.options = {"preset": "veryfast", "crf": "23"}
        for k in range(seconds * fps):
            t = k / fps
            img = np.stack([127 + 100 * np.sin(xx / 90 + t * 1.3), 127 + 100 * np.sin(yy / 70 - t * 0.7),
                            127 + 100 * np.sin((xx + yy) / 130 + t)], -1)
            cx, cy = int((0.1 + 0.8 * (t / seconds)) * width), int(height / 2 + height / 4 * np.sin(t))
            img[max(cy - 60, 0):cy + 60, max(cx - 60, 0):cx + 60] = (230, 40, 40)
            frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            for packet in st.encode(frame):
                out.mux(packet)
        for packet in st.encode():
            out.mux(packet)
    tmp.rename(path)
    return path


def jpeg_frames(clip: Path, folder: Path, n: int = 32) -> list[Path]:
    """``n`` frames of the long clip as JPEG files (a frame list as a user has it on disk)."""
    from PIL import Image

    paths = [folder / f"{i:03d}.jpg" for i in range(n)]
    if all(p.exists() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    from vlrank.inputs import video as video_io

    info = video_io.probe(clip)
    idx = np.linspace(0, info.frames - 1, n).round().astype(int).tolist()
    frames, _, _ = video_io.decode_frames(clip, idx)
    for p, f in zip(paths, frames):
        Image.fromarray(f).save(p, quality=90)
    return paths


def inputs(work: Path, quick: bool) -> list[dict]:
    items = [dict(name=p.stem, video=str(p)) for p in sorted(VIDEOS.iterdir()) if p.is_file()]
    clip = long_clip(work / "long_60s_1280x720_10fps.mp4")
    items.append(dict(name=clip.stem, video=str(clip)))
    items.append(dict(name="fl70_576x448", frames=[str(p) for p in sorted((VIDEOS / "fl70_576x448").iterdir())]))
    if not quick:
        items.append(dict(name="fl32_jpeg_1280x720", frames=[str(p) for p in jpeg_frames(clip, work / "fl32_jpeg")]))
    return items


# ---- vlrank side ----

def ours(item: dict):
    if "video" in item:
        return pv.preprocess_video_file(item["video"])
    return pv.preprocess_frame_list(item["frames"])


def decoded_frames(item: dict) -> int:
    """Frames the decoder has to go through: file videos up to the last sampled one (decoding is
    sequential), frame lists the kept images."""
    if "video" in item:
        from vlrank.inputs import video as video_io

        info = video_io.probe(item["video"])
        plan = pv.plan_file(total_frames=info.frames, video_fps=info.fps, height=info.height, width=info.width)
        return max(plan.frames) + 1
    return min(len(item["frames"]), 64)


# ---- reference side ----

def run_reference(python: Path, task: str, spec: dict, threads: int, *, extra: list[str], timeout: float = 3600) -> dict:
    with benchlib.json_file(spec) as spec_path:
        return benchlib.run_json([str(python), str(benchlib.BENCHES / "reference_video.py"), task, "--spec", spec_path,
                                  *extra], threads=threads, what=f"reference_video.py {task}", timeout=timeout,
                                 clean_path=True)


def compare(item: dict, got, ref: dict, rows: np.ndarray) -> tuple[float, float]:
    """Same grid and shape; (max |Δ|, mean |Δ|) over the reference's sampled rows, within tolerance."""
    assert list(got.grid_thw) == ref["grid"], (item["name"], got.grid_thw, ref["grid"])
    assert list(got.pixel_values.shape) == ref["shape"], (item["name"], got.pixel_values.shape, ref["shape"])
    d = np.abs(got.pixel_values[::ref["step"]] - rows)
    mx, mean = float(d.max()), float(d.mean())
    if "video" in item:
        assert mx <= FILE_TOL_MAX and mean <= FILE_TOL_MEAN, (item["name"], mx, mean)
    elif all(f.lower().endswith(".png") for f in item["frames"]):
        assert mx == 0.0, (item["name"], mx)  # PNG decodes are exact; the resizes are the reference's
    else:  # JPEG decoders differ by a level or so: the golden image tolerance
        assert mean <= 0.004 and float(np.percentile(d, 99.9)) <= 3 / 127.5, (item["name"], mx, mean)
    return mx, mean


def preprocess_bench(args, info: dict, load_start: float) -> str:
    work = args.workdir or Path(tempfile.gettempdir()) / "vlrank-bench-video"
    work.mkdir(parents=True, exist_ok=True)
    items = inputs(work, args.quick)
    repeats = 2 if args.quick else 3
    ref_out = Path(tempfile.mkdtemp(prefix="vidref-", dir=work))
    benchlib.eprint(f"reference: {args.reference_python}")
    ref = run_reference(args.reference_python, "preprocess", dict(videos=items, repeats=repeats), args.threads,
                        extra=["--out", str(ref_out)])
    rows = []
    for item in items:
        base_mb = benchlib.reset_hwm()
        got = ours(item)
        peak_mb = benchlib.hwm_mib() - base_mb
        r = ref["videos"][item["name"]]
        mx, mean = compare(item, got, r, np.load(ref_out / f"{item['name']}.npy"))
        del got
        t_ours = benchlib.timed(lambda: ours(item), repeats).median
        t_fetch, t_full = benchlib.p50(r["fetch_s"]), benchlib.p50(r["full_s"])
        n = r["grid"][0] * 2
        kind = "file" if "video" in item else "frames"
        rows.append([item["name"], kind, f"{decoded_frames(item)} → {n}", "x".join(map(str, r["grid"])),
                     f"{t_ours * 1e3:.0f} ms", f"{n / t_ours:.0f}", f"{t_fetch * 1e3:.0f} ms",
                     f"{t_full * 1e3:.0f} ms", f"{n / t_full:.0f}", f"{t_full / t_ours:.1f}×",
                     f"{t_fetch / t_ours:.1f}×", f"{peak_mb:.0f} / {r['peak_mb']:.0f} MB",
                     f"{mx * 127.5:.1f} / {mean * 127.5:.3f}"])
        benchlib.eprint(" | ".join(rows[-1]))
    load_end = benchlib.load_average()
    header = ["video", "kind", "frames decoded → sampled", "grid", "vlrank", "vlrank frames/s",
              "qwen-vl-utils fetch_video", "fetch + processor", "reference frames/s", "ratio (whole)",
              "ratio (vs fetch only)", "peak RSS above start (vlrank / reference)", "max / mean Δ (levels)"]
    text = "\n".join([
        "## Video preprocessing (bench_video)",
        "",
        f"`python benches/bench_video.py{' --quick' if args.quick else ''}`: one video in, the video processor's "
        "(N, 1536) float32 rows out, median wall time of "
        f"{repeats} calls after a warm-up. vlrank: `preprocess_video_file` / `preprocess_frame_list` (probe, plan, "
        "PyAV decode keeping only the sampled frames, native resize + rows, "
        f"RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']}). Reference (benches/reference_video.py, "
        f"{ref['backend']}; torch {ref['torch']}, {ref['threads']} threads): qwen-vl-utils 0.0.14 `fetch_video` "
        "(decode every frame, sample, torchvision bicubic+antialias resize) then transformers 5.24 "
        "`Qwen3VLVideoProcessor`. Frames/s counts sampled frames (the frames the model sees). Options: the "
        "official ones (file: fps 1, max_frames 64; frame list: first 64 by linspace, total_pixels 7,864,320). "
        "Outputs checked in the same run: same grid and shape, rows (every k-th, ≤ 4,096 per video) within "
        "the golden tolerance (Δ in uint8 levels; PNG frame lists must be exact, JPEG ones differ by the JPEG "
        "decoders' level or so).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        benchlib.machine_line(info, load_start, load_end)
        + " Another long benchmark of a different session was running on this machine during the run "
        "(load average 4-6 on 2 cores): absolute times are pessimistic for both stacks.",
    ])
    return text


# ---- end to end ----

def _abs(side: dict) -> dict:
    """A golden side with absolute paths (golden paths are relative to the golden folder)."""
    vids = [str(GOLDEN / v) if isinstance(v, str) else [str(GOLDEN / f) for f in v] for v in side.get("videos", [])]
    return {**side, "videos": vids, "images": [str(GOLDEN / p) for p in side.get("images", [])]}


def _content(side: dict) -> list[dict]:
    """The request's content parts for a golden side: videos, then images, then texts (the official order)."""
    parts = [{"type": "video", "video": v} if isinstance(v, list) else
             {"type": "video_url", "video_url": {"url": f"file://{v}"}} for v in side["videos"]]
    parts += [{"type": "image_url", "image_url": {"url": f"file://{p}"}} for p in side["images"]]
    return parts + [{"type": "text", "text": t} for t in side.get("texts", [])]


def e2e_bench(args, info: dict, load_start: float) -> str:
    import vlrank

    ckpt = args.checkpoint or GOLDEN / "models" / "tiny-qwen3-vl"
    golden_model = args.checkpoint is None  # a random checkpoint's scores are not the golden ones
    # The first golden video rerank case: a text query against an 8-frame list, an H.264 clip, a VP8 clip
    # and a text document; both stacks are also checked against its golden scores.
    case = json.loads((GOLDEN / "cases" / "video_rerank.json").read_text())[0]
    golden = [r["score"] for r in case["results"]]
    ref_docs = [_abs(d) for d in case["documents"]]
    docs = [{"content": _content(d)} for d in ref_docs]
    query = case["query"]["texts"][0]
    repeats = 2 if args.quick else 3
    ref = run_reference(args.reference_python, "rerank", dict(query=case["query"], documents=ref_docs, repeats=repeats),
                        args.threads, extra=["--checkpoint", str(ckpt)])
    work = args.workdir or Path(tempfile.gettempdir()) / "vlrank-bench-video"
    model_dir = vlrank.export(ckpt, work / f"exported-{ckpt.name}-float32", task="rerank", dtype="float32",
                              progress=False)
    rr = vlrank.Reranker(model_dir, providers="cpu")
    benchlib.pin_threads(rr, args.threads)

    def call():
        return rr.rerank(query, docs)

    scores = [0.0] * len(docs)
    for r in call()["results"]:
        scores[r["index"]] = r["relevance_score"]
    diff = max(abs(a - b) for a, b in zip(scores, ref["scores"]))
    ref_vs_golden = max(abs(a - b) for a, b in zip(ref["scores"], golden))
    ours_vs_golden = max(abs(a - b) for a, b in zip(scores, golden))
    assert diff <= 1e-3, (scores, ref["scores"])
    if golden_model:
        assert ref_vs_golden <= 1e-3 and ours_vs_golden <= 1e-3, (ref_vs_golden, ours_vs_golden)
    else:
        ours_vs_golden = ref_vs_golden = float("nan")
    t_ours = benchlib.timed(call, repeats).median
    t_ref = benchlib.p50(ref["seconds"])
    load_end = benchlib.load_average()
    return "\n".join([
        "## Video rerank end to end (bench_video --e2e" + ("" if golden_model else f" --checkpoint {ckpt.name}") + ")",
        "",
        (f"Tiny golden checkpoint (tiny-qwen3-vl), float32" if golden_model else
         f"Random checkpoint `{ckpt.name}` (vlrank.synthetic; see its config for the widths), float32 (golden "
         "scores do not apply: the columns against them read nan)") +
        f", {args.threads} threads both sides; one call of "
        f"the {len(docs)} documents of golden video_rerank case 0 (an 8-frame list, an H.264 and a VP8 clip, a "
        "text) against its text query; " + ("both stacks' scores within 1e-3 of the golden ones" if golden_model
                                            else "vlrank's scores within 1e-3 of transformers'") + ". vlrank: "
        "`Reranker.rerank` (one batched call); transformers (benches/reference_video.py): the official loop, one "
        "pair per forward, decode and processor per pair.",
        "",
        "| vlrank | transformers | ratio | max Δscore vlrank vs transformers | max Δscore vs golden (vlrank / transformers) |",
        "|---|---|---|---|---|",
        f"| {t_ours * 1e3:.0f} ms | {t_ref * 1e3:.0f} ms | {t_ref / t_ours:.1f}× | {diff:.1e} | "
        f"{ours_vs_golden:.1e} / {ref_vs_golden:.1e} |",
        "",
        benchlib.machine_line(info, load_start, load_end),
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no JPEG frame list")
    ap.add_argument("--reference-python", type=Path, default=DEFAULT_REFERENCE,
                    help=f"a Python with torch, torchvision, transformers, qwen-vl-utils, av (default {DEFAULT_REFERENCE})")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the generated clip and frames here")
    ap.add_argument("--e2e", action="store_true", help="end-to-end video rerank instead of preprocessing")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="--e2e on this Qwen3-VL checkpoint (e.g. a real-width one from vlrank.synthetic) instead of "
                         "the tiny golden one")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md as it is")
    args = ap.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))  # before the native pool first starts
    if not args.reference_python.exists():
        raise SystemExit(f"--reference-python {args.reference_python}: no such file")
    info = benchlib.machine()
    load_start = benchlib.load_average()
    text = e2e_bench(args, info, load_start) if args.e2e else preprocess_bench(args, info, load_start)
    print(text)
    if not args.no_write:
        section = "bench_video" if not args.e2e else "bench_video_e2e" if args.checkpoint is None else "bench_video_e2e_real"
        benchlib.write_section(section, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
