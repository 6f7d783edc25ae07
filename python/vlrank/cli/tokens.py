"""``vlrank tokens FILE... [--video-frames DIR_OR_GLOB] [--json] [--samples]``: the tokens each image,
video and PDF page costs, read from headers only (no pixel or frame is decoded and no page rendered, so it
is instant even for huge files).

Images: original size, resized size under the pixel budget, image tokens. PDFs: one image row per page
(``FILE#page=N``, format ``pdf``), its size the one ``vlrank.pdf_pages`` renders at ``--dpi``, from the page
sizes alone. Videos (files and frame lists): duration, fps, size, sampled frames, resized size, grid and
tokens in the transformers 5.24 layout (timestamps and the vision wrappers included, as the model sees them), from the same plan that
``vlrank.preprocess.video`` follows when it decodes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path

from vlrank import _native
from vlrank.cli.common import add_command
from vlrank.errors import ImageDecodeError, InvalidInputError
from vlrank.inputs.pdf import DEFAULT_DPI, DEFAULT_MAX_PAGES, pdf_page_sizes
from vlrank.preprocess.images import (DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, count_image_tokens, image_tokens,
                                     smart_resize)
from vlrank.preprocess.video import DEFAULT_FPS, DEFAULT_MAX_FRAMES, VideoPlan, plan_file, plan_frame_list

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"


def sample_images() -> list[Path]:
    """The small images shipped with the package (photo, screenshot, chart, receipt)."""
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in {".jpg", ".png", ".webp", ".gif"})


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "tokens",
        help="count the tokens of images, PDF pages and videos from their headers (no decoding)",
        description="Print each image's size, its resized size under the pixel budget and its image tokens; "
                    "for each PDF page the same (its size at --dpi, nothing rendered); "
                    "for each video its duration, fps, size, sampled frames, resized size, grid and tokens "
                    "(timestamps and vision wrappers included), and the total.",
        examples="""examples:
  vlrank tokens --samples                        # the sample images shipped with vlrank
  vlrank tokens photo.jpg scan.png --json        # JSON on stdout, one object per image plus the total
  vlrank tokens photo.jpg --max-pixels 1843200   # the official Qwen budget instead of the hosted one
  vlrank tokens report.pdf --dpi 100           # PDF pages: sizes at 100 dpi, nothing rendered
  vlrank tokens clip.mp4 talk.webm               # videos: sampled at 1 fps, at most 64 frames
  vlrank tokens clip.mp4 --fps 2 --max-frames 32 # the per-video options a request can pass
  vlrank tokens --video-frames 'shots/*.png'     # a frame list (the request's {"type": "video", "video": [...]})
  vlrank tokens --video-frames shots/ --total-pixels 3932160
""",
        run=run,
    )
    # A FILE is an image or a video by its content, not its name: its header is read as an image first
    # (the image decoders recognise their own signatures), and a file no image decoder recognises is
    # probed as a video container. One positional list keeps `vlrank tokens a.jpg b.mp4` as simple as
    # for images, and a file that is neither gets one error naming both readings.
    p.add_argument("files", nargs="*", type=Path, metavar="FILE",
                   help="image files (PNG, JPEG, WebP, GIF, BMP, TIFF), PDF files (a row per page) and video files "
                        "(MP4, WebM, MKV, AVI, ...)")
    p.add_argument("--video-frames", action="append", default=[], metavar="DIR_OR_GLOB",
                   help="a video given as its frames: a folder (its files in name order) or a quoted glob "
                        "(matches in name order); repeat for several videos")
    p.add_argument("--min-pixels", type=int, default=DEFAULT_MIN_PIXELS, help=f"images: default {DEFAULT_MIN_PIXELS}")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"images: default {DEFAULT_MAX_PIXELS} (1,280 tokens); the official Qwen default is 1843200")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS,
                   help=f"video files: frames sampled per second, default {DEFAULT_FPS:g}")
    p.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES,
                   help=f"video files: at most this many sampled frames, default {DEFAULT_MAX_FRAMES}")
    # Separate from --min-pixels: the image and the video budgets have different defaults and meanings
    # (per image vs per frame), as the request's image_url / video_url parts do.
    p.add_argument("--video-min-pixels", type=int, default=None,
                   help="videos: least pixels per frame after the resize, default 131072 (128 tokens a frame pair)")
    p.add_argument("--total-pixels", type=float, default=None,
                   help="videos: pixel budget of all frames together, default 117964800 for files and "
                        "7864320 for frame lists (the official values); each frame is also capped at 786432")
    p.add_argument("--dpi", type=float, default=DEFAULT_DPI,
                   help=f"PDFs: the resolution pages render at, default {DEFAULT_DPI:g} (as vlrank.pdf_pages)")
    p.add_argument("--max-pages", type=int, default=DEFAULT_MAX_PAGES,
                   help=f"PDFs: refuse a PDF of more pages than this, default {DEFAULT_MAX_PAGES}")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--samples", action="store_true", help="also count the sample images shipped with vlrank")


# ---- classification and counting ----

def _is_image(path: Path) -> bool:
    """True when an image decoder recognises the header; unrecognised files are video candidates, and any
    other image error (a truncated PNG header) is the image's own error."""
    try:
        _native.probe_image(str(path))
    except ImageDecodeError as exc:
        if "unrecognised image format" in str(exc):
            return False
        raise
    return True


def _is_pdf(path: Path) -> bool:
    """True when the file starts like a PDF: ``%PDF-`` within its first 1,024 bytes (where readers look)."""
    with path.open("rb") as f:
        return b"%PDF-" in f.read(1024)


def _pdf_rows(path: Path, args: argparse.Namespace) -> list[dict]:
    """One image row per page at ``--dpi``, from the page sizes (the limits checked as pdf_pages checks them)."""
    rows = []
    for size in pdf_page_sizes(path, dpi=args.dpi, max_pages=args.max_pages, name=str(path)):
        h, w = smart_resize(height=size.height, width=size.width, min_pixels=args.min_pixels,
                            max_pixels=args.max_pixels)
        rows.append(dict(image=f"{path}#page={size.page}", format="pdf", width=size.width, height=size.height,
                         resized_width=w, resized_height=h,
                         tokens=image_tokens(width=size.width, height=size.height, min_pixels=args.min_pixels,
                                             max_pixels=args.max_pixels),
                         file=str(path), page=size.page))
    return rows


def _image_row(path: Path, args: argparse.Namespace) -> dict:
    c = count_image_tokens(path, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    return dict(image=str(path), format=c.format, width=c.width, height=c.height,
                resized_width=c.resized_width, resized_height=c.resized_height, tokens=c.tokens)


def _plan_fields(plan: VideoPlan) -> dict:
    return dict(sampled_frames=len(plan.frames), resized_width=plan.resized_width,
                resized_height=plan.resized_height, grid_thw=list(plan.grid_thw),
                tokens_per_frame_pair=plan.tokens_per_group, tokens=plan.num_tokens,
                timestamps=plan.timestamp_text, min_pixels=plan.min_pixels, total_pixels=plan.total_pixels,
                max_pixels=plan.max_pixels)


def _video_file_row(path: Path, args: argparse.Namespace) -> dict:
    from vlrank.inputs import video as video_io

    name = str(path)
    try:
        info = video_io.probe(path, name=name)
    except InvalidInputError as exc:
        why = str(exc).removeprefix(f"{name}: ")
        raise type(exc)(f"{name}: neither an image (unrecognised image format: pass PNG, JPEG, WebP, GIF, BMP or "
                        f"TIFF) nor a readable video ({why})", field=name) from exc
    plan = plan_file(total_frames=info.frames, video_fps=info.fps, height=info.height, width=info.width,
                     fps=args.fps, max_frames=args.max_frames, min_pixels=args.video_min_pixels,
                     total_pixels=args.total_pixels)
    return dict(video=name, kind="file", codec=info.codec, duration=round(info.duration, 3), fps=info.fps,
                frames=info.frames, frames_exact=info.frames_exact, width=info.width, height=info.height,
                **_plan_fields(plan))


def _frame_paths(spec: str) -> list[Path]:
    field = "--video-frames"
    if os.path.isdir(spec):
        paths = sorted(p for p in Path(spec).iterdir() if p.is_file() and not p.name.startswith("."))
        if not paths:
            raise InvalidInputError(f"{field} {spec}: the folder has no files; pass a folder of frame images",
                                    field=field)
        return paths
    paths = sorted(Path(p) for p in glob.glob(spec) if os.path.isfile(p))
    if not paths:
        raise InvalidInputError(f"{field} {spec}: neither a folder nor a glob that matches files; pass a folder "
                                "of frames or a quoted pattern such as 'frames/*.png'", field=field)
    return paths


def _video_frames_row(spec: str, args: argparse.Namespace) -> dict:
    paths = _frame_paths(spec)
    field = f"--video-frames {spec}"
    _, width, height = _native.probe_images([str(paths[0])], field=field)[0]
    plan = plan_frame_list(num_frames=len(paths), height=height, width=width, min_pixels=args.video_min_pixels,
                           total_pixels=args.total_pixels)
    kept = sorted(set(plan.frames))
    # Every kept frame must land on the first frame's fetched size (the decoder refuses a mix), and that
    # only needs their headers.
    for i, (_, w, h) in zip(kept, _native.probe_images([str(paths[i]) for i in kept], field=field)):
        if (w, h) != (width, height):
            other = plan_frame_list(num_frames=len(paths), height=h, width=w, min_pixels=args.video_min_pixels,
                                    total_pixels=args.total_pixels)
            if (other.pre_height, other.pre_width) != (plan.pre_height, plan.pre_width):
                raise InvalidInputError(
                    f"{field}: frame {paths[i].name} ({w}x{h}) resizes to {other.pre_width}x{other.pre_height}, "
                    f"frame {paths[0].name} ({width}x{height}) to {plan.pre_width}x{plan.pre_height}; pass frames "
                    "of one size (or one aspect ratio)", field="--video-frames")
    return dict(video=spec, kind="frames", codec=None, duration=None, fps=plan.metadata_fps, frames=len(paths),
                frames_exact=True, width=width, height=height, **_plan_fields(plan))


# ---- output ----

def _table(images: list[dict], videos: list[dict], total: int) -> str:
    out = []
    if images:
        name_w = max(5, *(len(r["image"]) for r in images))
        out.append(f"{'image':<{name_w}}  {'format':<6}  {'size':>11}  {'resized':>11}  {'tokens':>6}")
        for r in images:
            size, resized = f"{r['width']}x{r['height']}", f"{r['resized_width']}x{r['resized_height']}"
            out.append(f"{r['image']:<{name_w}}  {r['format']:<6}  {size:>11}  {resized:>11}  {r['tokens']:>6}")
    if videos:
        if out:
            out.append("")
        name_w = max(5, *(len(r["video"]) for r in videos))
        out.append(f"{'video':<{name_w}}  {'codec':<6}  {'seconds':>7}  {'fps':>6}  {'size':>11}  {'frames':>9}  "
                   f"{'resized':>11}  {'grid':>10}  {'tokens':>6}")
        for r in videos:
            secs = "-" if r["duration"] is None else f"{r['duration']:.1f}"
            frames = f"{r['sampled_frames']}/{r['frames']}{'' if r['frames_exact'] else '~'}"
            grid = "x".join(map(str, r["grid_thw"]))
            size, resized = f"{r['width']}x{r['height']}", f"{r['resized_width']}x{r['resized_height']}"
            out.append(f"{r['video']:<{name_w}}  {r['codec'] or 'frames':<6}  {secs:>7}  {r['fps']:>6g}  "
                       f"{size:>11}  {frames:>9}  {resized:>11}  {grid:>10}  {r['tokens']:>6}")
        if any(not r["frames_exact"] for r in videos):
            out.append("~ the container records no frame count: estimated from duration x fps; decoding can "
                       "find a different count and so different tokens")
    out.append(f"{'total':<5}  {total}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    paths = list(args.files) + (sample_images() if args.samples else [])
    if not paths and not args.video_frames:
        raise InvalidInputError("no inputs: pass image, PDF or video FILEs, --video-frames DIR_OR_GLOB, or --samples",
                                field="files")
    images, videos = [], []
    for path in paths:
        if not path.is_file():
            raise InvalidInputError(f"{path}: no such file; pass an existing image, PDF or video file", field=str(path))
        if _is_pdf(path):
            images += _pdf_rows(path, args)
        elif _is_image(path):
            images.append(_image_row(path, args))
        else:
            videos.append(_video_file_row(path, args))
    videos += [_video_frames_row(spec, args) for spec in args.video_frames]
    total = sum(r["tokens"] for r in images) + sum(r["tokens"] for r in videos)
    if args.json:
        doc = dict(images=images, videos=videos, total_tokens=total, min_pixels=args.min_pixels,
                   max_pixels=args.max_pixels,
                   video_options=dict(fps=args.fps, max_frames=args.max_frames, min_pixels=args.video_min_pixels,
                                      total_pixels=args.total_pixels))
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(_table(images, videos, total))
    return 0
