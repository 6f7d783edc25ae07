"""Helpers of the image tests (owner: native-image): the reference preprocessing written with
Pillow + numpy exactly as qwen-vl-utils + the HF Qwen2-VL processor do it, and tiny encoders for
files Pillow cannot write (16-bit PNGs)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

GOLDEN = Path(__file__).resolve().parent / "golden"


def reference_smart_resize(h, w, factor=32, min_pixels=4096, max_pixels=1310720):
    """qwen-vl-utils smart_resize as make_golden.py states it (Python floats, round half to even) — the
    one plain-Python statement of the rule that the tests compare the native one against."""
    import math

    if max(h, w) / min(h, w) > 200:
        raise ValueError("aspect ratio over 200")
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


def to_rgb(img: Image.Image) -> Image.Image:
    """qwen-vl-utils to_rgb."""
    if img.mode == "RGBA":
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.split()[3])
        return bg
    return img.convert("RGB")


def reference_resized(img: Image.Image, min_pixels=4096, max_pixels=1310720) -> np.ndarray:
    img = to_rgb(img)
    w, h = img.size
    rh, rw = reference_smart_resize(h, w, 32, min_pixels, max_pixels)
    return np.asarray(img.resize((rw, rh), Image.BICUBIC))


def reference_pixel_values(rgb: np.ndarray) -> np.ndarray:
    """HF Qwen2-VL processor: rescale in float64 -> float32, normalise, repeat T=2, patchify."""
    x = (rgb.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    h, w, _ = x.shape
    gh, gw = h // 16, w // 16
    p = np.repeat(x.transpose(2, 0, 1)[None], 2, axis=0)  # (T, C, H, W)
    p = p.reshape(1, 2, 3, gh // 2, 2, 16, gw // 2, 2, 16).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return p.reshape(gh * gw, 1536)


def reference_preprocess(img: Image.Image, min_pixels=4096, max_pixels=1310720) -> np.ndarray:
    return reference_pixel_values(reference_resized(img, min_pixels, max_pixels))


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png16(arr: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG (color_type 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA) from a uint16 (H, W[, C]) array."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height (IHDR only): a decompression-bomb header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
            + struct.pack(">I", 0) + b"IDAT" + struct.pack(">I", zlib.crc32(b"IDAT")))


def within_golden_tolerance(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(mean |d|, 99.9th percentile |d|) on normalised values, in float64."""
    d = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return float(d.mean()), float(np.percentile(d, 99.9))


def noise_image(rng: np.random.Generator, h: int, w: int, channels: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(1, w - 1)), (yy * 255 // max(1, h - 1)), ((xx + yy) * 7) % 256], -1)
    arr = np.clip(base + rng.integers(0, 64, size=(h, w, 3)) - 32, 0, 255).astype(np.uint8)
    if channels == 4:
        a = ((xx * 3 + yy * 5) % 256).astype(np.uint8)
        return np.dstack([arr, a])
    if channels == 1:
        return arr[..., 0].copy()
    return arr


def gif_screen_bomb(width: int = 13000, height: int = 13000) -> bytes:
    """A 35-byte GIF whose logical screen is width x height and whose one frame is 1 x 1."""
    head = b"GIF89a" + struct.pack("<HH", width, height) + bytes([0x80, 0, 0, 0, 0, 0, 255, 255, 255])
    return head + bytes([0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]) + bytes([2, 2, 0x4C, 0x01, 0, 0x3B])


def webp_lossless_bomb(width: int = 13000, height: int = 13000) -> bytes:
    """A VP8L (lossless WebP) header claiming width x height, with a few bytes of body."""
    bits = (width - 1) | ((height - 1) << 14)
    body = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 32
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def jpeg_size_bomb(width: int = 12000, height: int = 12000) -> bytes:
    """A complete small JPEG whose frame header is patched to claim width x height."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 200)).save(buf, "JPEG", quality=75)
    data = bytearray(buf.getvalue())
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)
