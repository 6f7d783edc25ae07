"""``vlrank tokens IMAGE... [--min-pixels N] [--max-pixels N] [--json] [--samples]``: each image's
original size, resized size and image-token count, and the total, read from the headers only
(no pixel is decoded, so it is instant even for huge files)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vlrank.errors import InvalidInputError
from vlrank.preprocess.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, count_image_tokens

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"


def sample_images() -> list[Path]:
    """The small images shipped with the package (photo, screenshot, chart, receipt)."""
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in {".jpg", ".png", ".webp", ".gif"})


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tokens",
        help="count the image tokens of images from their headers (no decoding)",
        description="Print each image's size, its resized size under the pixel budget, and its image tokens.",
        epilog="""examples:
  vlrank tokens --samples                        # the sample images shipped with vlrank
  vlrank tokens photo.jpg scan.png --json        # JSON on stdout, one object per image plus the total
  vlrank tokens photo.jpg --max-pixels 1843200   # the official Qwen budget instead of the hosted one
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="image files (PNG, JPEG, WebP, GIF, BMP, TIFF)")
    p.add_argument("--min-pixels", type=int, default=DEFAULT_MIN_PIXELS, help=f"default {DEFAULT_MIN_PIXELS}")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"default {DEFAULT_MAX_PIXELS} (1,280 tokens); the official Qwen default is 1843200")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--samples", action="store_true", help="also count the sample images shipped with vlrank")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = list(args.images) + (sample_images() if args.samples else [])
    if not paths:
        raise InvalidInputError("no images: pass one or more IMAGE paths, or --samples", field="images")
    rows = []
    for path in paths:
        c = count_image_tokens(path, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
        rows.append(dict(image=str(path), format=c.format, width=c.width, height=c.height,
                         resized_width=c.resized_width, resized_height=c.resized_height, tokens=c.tokens))
    total = sum(r["tokens"] for r in rows)
    if args.json:
        json.dump(dict(images=rows, total_tokens=total, min_pixels=args.min_pixels, max_pixels=args.max_pixels),
                  sys.stdout)
        sys.stdout.write("\n")
        return 0
    name_w = max(5, *(len(r["image"]) for r in rows))
    out = [f"{'image':<{name_w}}  {'format':<6}  {'size':>11}  {'resized':>11}  {'tokens':>6}"]
    for r in rows:
        size = f"{r['width']}x{r['height']}"
        resized = f"{r['resized_width']}x{r['resized_height']}"
        out.append(f"{r['image']:<{name_w}}  {r['format']:<6}  {size:>11}  {resized:>11}  {r['tokens']:>6}")
    out.append(f"{'total':<{name_w}}  {'':<6}  {'':>11}  {'':>11}  {total:>6}")
    print("\n".join(out))
    return 0
