"""Image preprocessing speed: vlrank (native, GIL released, rayon) vs Pillow + numpy doing the
reference steps (qwen-vl-utils fetch_image + the HF Qwen2-VL processor: open, to RGB, smart_resize,
resize BICUBIC, rescale/normalise, patchify by reshape/transpose).

    python benches/bench_preprocess.py [--quick] [--out benches/RESULTS.md]

Inputs are encoded JPEG / PNG bytes of photo-like images at ~0.3, 2 and 8 megapixels; outputs are
(N, 1536) float32 pixel values under the default budget (max 1,310,720 pixels). Also times the
header-only token count against a full decode.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import benchlib
import vlrank

SIZES = {"0.3MP": (640, 480), "2MP": (1632, 1224), "8MP": (3264, 2448)}
BATCH = 16


# ---- the reference, written the way the reference code does it ----

def ref_smart_resize(h, w, factor=32, min_pixels=4096, max_pixels=1310720):
    hb = max(factor, round(h / factor) * factor)
    wb = max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt((h * w) / max_pixels)
        hb = math.floor(h / beta / factor) * factor
        wb = math.floor(w / beta / factor) * factor
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb = math.ceil(h * beta / factor) * factor
        wb = math.ceil(w * beta / factor) * factor
    return hb, wb


def ref_preprocess(data: bytes) -> np.ndarray:
    img = benchlib.rgb(Image.open(io.BytesIO(data)))
    w, h = img.size
    rh, rw = ref_smart_resize(h, w)
    img = img.resize((rw, rh), Image.BICUBIC)
    x = (np.asarray(img).astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    gh, gw = rh // 16, rw // 16
    p = np.repeat(x.transpose(2, 0, 1)[None], 2, axis=0)
    p = p.reshape(1, 2, 3, gh // 2, 2, 16, gw // 2, 2, 16).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return p.reshape(gh * gw, 1536)


def ref_tokens_full_decode(data: bytes) -> int:
    img = Image.open(io.BytesIO(data))
    img.load()
    w, h = img.size
    rh, rw = ref_smart_resize(h, w)
    return (rh // 32) * (rw // 32)


# ---- inputs ----

def photo(w: int, h: int, seed: int) -> Image.Image:
    """Smooth gradients, shapes and mild noise: compresses like a photo, not like white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([120 + 60 * yy / h + 30 * np.sin(xx / (w / 9)),
                    150 + 50 * np.cos(yy / (h / 7)) * np.sin(xx / (w / 5)),
                    200 - 80 * xx / w], -1)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(w / 30, w / 6)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    small = rng.normal(0, 8, (h // 4 + 1, w // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:h, :w]
    return Image.fromarray(np.clip(img + small + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 6}))
    return buf.getvalue()


# ---- timing ----

def timeit(fn, *, reps: int, min_time: float = 0.2) -> float:
    """Median seconds per call over `reps` timed calls (after one warm-up), for at least `min_time`."""
    return benchlib.timed(fn, reps, min_time=min_time).median


def cpu_time(fn, *, reps: int) -> float:
    """Least CPU seconds (all threads of this process) per call: robust to other load on the machine."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} µs"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--out", type=Path, default=None, help="also write the table as markdown here")
    args = ap.parse_args()
    reps = 3 if args.quick else 7

    rows = []
    header = ["input", "vlrank single", "Pillow+numpy single", "ratio",
              f"vlrank batch×{BATCH}", f"Pillow+numpy ×{BATCH}", "ratio", "CPU/img vlrank", "CPU/img Pillow", "ratio"]
    token_rows = []
    for label, (w, h) in SIZES.items():
        base = photo(w, h, seed=w)
        for fmt in ("JPEG", "PNG"):
            data = encode(base, fmt)
            datas = [encode(photo(w, h, seed=w + i), fmt) for i in range(BATCH)] if label != "8MP" or not args.quick \
                else [data] * BATCH
            ours = vlrank.preprocess_image(data).pixel_values
            ref = ref_preprocess(data)
            assert ours.shape == ref.shape
            d = np.abs(ours.astype(np.float64) - ref)
            assert d.mean() <= 0.004, (label, fmt, d.mean())
            t_ours = timeit(lambda: vlrank.preprocess_image(data), reps=reps)
            t_ref = timeit(lambda: ref_preprocess(data), reps=reps)
            t_ours_b = timeit(lambda: vlrank.preprocess_images(datas), reps=max(2, reps // 2))
            t_ref_b = timeit(lambda: [ref_preprocess(x) for x in datas], reps=max(2, reps // 2), min_time=0)
            c_ours = cpu_time(lambda: vlrank.preprocess_image(data), reps=reps)
            c_ref = cpu_time(lambda: ref_preprocess(data), reps=reps)
            name = f"{fmt} {label} {w}x{h} ({len(data) // 1024} KiB)"
            rows.append([name, fmt_ms(t_ours), fmt_ms(t_ref), f"{t_ref / t_ours:.1f}×",
                         fmt_ms(t_ours_b), fmt_ms(t_ref_b), f"{t_ref_b / t_ours_b:.1f}×",
                         fmt_ms(c_ours), fmt_ms(c_ref), f"{c_ref / c_ours:.1f}×"])
            print(" | ".join(rows[-1]), flush=True)
            if fmt == "JPEG":
                t_hdr = timeit(lambda: vlrank.count_image_tokens(data), reps=reps * 10)
                t_full = timeit(lambda: ref_tokens_full_decode(data), reps=reps)
                t_lazy = timeit(lambda: Image.open(io.BytesIO(data)).size, reps=reps * 10)
                token_rows.append([f"{fmt} {label}", fmt_ms(t_hdr), fmt_ms(t_full), f"{t_full / t_hdr:.0f}×",
                                   fmt_ms(t_lazy)])
                print(" | ".join(token_rows[-1]), flush=True)

    cpu = os.cpu_count()
    load = os.getloadavg()
    lines = [
        "# Image preprocessing benchmark",
        "",
        f"`python benches/bench_preprocess.py` on {platform.machine()} Linux, {cpu} cores, Python "
        f"{platform.python_version()}, numpy {np.__version__}, Pillow {Image.__version__} "
        "(its bundled libjpeg-turbo / zlib). Median wall time per call; encoded bytes in, (N, 1536) float32 out, "
        "default budget (max 1,310,720 px → at most 1,280 tokens). The Pillow+numpy column does the reference "
        "steps (open, to RGB, smart_resize, resize BICUBIC, rescale+normalise, patchify by reshape/transpose) "
        f"one image after another, as the HF processor does; vlrank's batch is one `preprocess_images` call "
        "(GIL released, rayon over images). The CPU/img columns are the least process CPU time of one "
        "single-image call (all threads), which other load on the machine barely moves; load average at the "
        f"end of this run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) on {cpu} cores.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "Header-only token count (`vlrank.count_image_tokens(bytes)`) vs a full decode (`Image.open(...).load()` "
        "then smart_resize, what fetch_image costs); Pillow's lazy `Image.open(...).size` for reference:",
        "",
        "| input | vlrank header-only | Pillow full decode | ratio | Pillow lazy open |",
        "|---|---|---|---|---|",
        *("| " + " | ".join(r) + " |" for r in token_rows),
        "",
    ]
    text = "\n".join(lines)
    print()
    print(text)
    if args.out:
        benchlib.write_section("bench_preprocess", text, path=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
