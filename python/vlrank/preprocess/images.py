"""Image geometry, token counting and preprocessing, exact to the Qwen3-VL reference.

``smart_resize`` / ``image_tokens`` are the qwen-vl-utils resize rule (factor 32, Python's
round-half-to-even); ``count_image_tokens`` reads only an image's header; ``preprocess_image(s)``
decode, convert to RGB (only true RGBA is composited on white), resize with Pillow's bicubic,
normalise and patchify in native code with the GIL released.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence, Union

import numpy as np

from vlrank import _native
from vlrank.errors import ImageTooLargeError, InvalidInputError, VlrankError, named_field

DEFAULT_MIN_PIXELS = int(_native.DEFAULT_MIN_PIXELS)
DEFAULT_MAX_PIXELS = int(_native.DEFAULT_MAX_PIXELS)
IMAGE_FACTOR = int(_native.IMAGE_FACTOR)  # pixels per image-token side: 16-pixel patches merged 2 x 2
# Pillow's decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS), checked from the header.
DEFAULT_MAX_DECODE_PIXELS = int(_native.DEFAULT_MAX_DECODE_PIXELS)
# Decoded bytes (decoder output + resize buffers) one call holds at once, estimated from headers.
DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT = int(_native.DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT)
# Source pixels one image of a model call may have (checked from its header, before any decode). The model
# sees at most max_pixels (1.3 MP by default) of an image, so a larger source only costs decode memory and
# time: 64 MiP (8192 x 8192, ~200 MB of RGB) still takes 48-64 MP phone and 61 MP camera photos whole,
# while a 13000 x 13000 canvas (a 35-byte GIF can claim one) is refused instead of decoded (~700 MB, ~2.5 s).
DEFAULT_MAX_IMAGE_PIXELS = 64 * 1024 * 1024

# A path (str / os.PathLike), encoded bytes, a PIL.Image.Image, or a uint8 numpy array
# (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA.
ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, np.ndarray, Any]


class ResizedSize(NamedTuple):
    height: int
    width: int


class ImageTokenCount(NamedTuple):
    """Header-only token count of one image."""

    height: int
    width: int
    resized_height: int
    resized_width: int
    tokens: int
    format: str


class PreprocessedImage(NamedTuple):
    """What the vision tower takes for one image."""

    pixel_values: np.ndarray  # (N, 1536) float32
    grid_thw: np.ndarray  # (1, 3) int64: (t, h, w) in 16-pixel patches, as the HF processor returns
    num_tokens: int  # N / 4: the <|image_pad|> tokens of the prompt
    height: int  # original size
    width: int
    resized_height: int
    resized_width: int


def _check_budget(min_pixels: int, max_pixels: int) -> None:
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise InvalidInputError(f"{name} must be a positive int, got {value!r}", field=name)


def _check_size(height: Any, width: Any) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise InvalidInputError(f"{name} must be a positive int (pixels), got {value!r}", field=name)
        if value >= 2**32:
            raise InvalidInputError(f"{name}={value} is not an image size; pass a size below 2**32", field=name)


def smart_resize(
    *, height: int, width: int, min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ResizedSize:
    """The size the reference resizes a (height, width) image to: multiples of 32 within the budget."""
    _check_size(height, width)
    _check_budget(min_pixels, max_pixels)
    h, w = _native.smart_resize(int(height), int(width), min_pixels=int(min_pixels), max_pixels=int(max_pixels))
    return ResizedSize(h, w)


def image_tokens(
    *, width: int, height: int, min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS
) -> int:
    """Image tokens (``<|image_pad|>`` count) of a width x height image under the budget."""
    h, w = smart_resize(height=height, width=width, min_pixels=min_pixels, max_pixels=max_pixels)
    return (h // IMAGE_FACTOR) * (w // IMAGE_FACTOR)


def _is_pil(src: Any) -> bool:
    # Pillow is optional: only look for it when the object could be one of its images.
    mod = type(src).__module__ or ""
    if not mod.startswith("PIL."):
        return False
    from PIL import Image  # noqa: PLC0415 (lazy: Pillow is an optional dependency)

    return isinstance(src, Image.Image)


def _pil_to_array(img: Any) -> np.ndarray:
    """A PIL image as the array the reference would see: RGBA keeps its alpha (composited on
    white natively), L stays gray, every other mode goes through ``convert("RGB")``."""
    if img.mode == "RGBA":
        return np.asarray(img, dtype=np.uint8)
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _native_source(src: Any, field: str) -> Any:
    """Turn a public source into what the native layer takes: bytes, a path str, or a uint8 array."""
    if isinstance(src, (bytes, bytearray)):
        return src
    if isinstance(src, memoryview):
        return src.tobytes()
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not isinstance(path, str):
            path = os.fsdecode(path)
        if not Path(path).is_file():
            raise InvalidInputError(f"no image file at {path!r}; pass an existing file path, bytes or an array", field=field)
        return path
    if isinstance(src, np.ndarray):
        if src.dtype != np.uint8:
            raise InvalidInputError(
                f"image array of dtype {src.dtype}; pass uint8 (e.g. arr.astype(numpy.uint8) for 0-255 values)",
                field=field,
            )
        return src
    if _is_pil(src):
        return _pil_to_array(src)
    raise InvalidInputError(
        f"got {type(src).__name__}; pass a file path, encoded image bytes, a PIL image or a uint8 numpy array",
        field=field,
    )


def count_image_tokens(
    src: ImageInput,
    *,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageTokenCount:
    """Token count of an image from its header alone (never decodes pixels)."""
    _check_budget(min_pixels, max_pixels)
    if _is_pil(src):  # a PIL image knows its size: no conversion needed
        width, height = src.size
        h, w = smart_resize(height=height, width=width, min_pixels=min_pixels, max_pixels=max_pixels)
        return ImageTokenCount(height, width, h, w, (h // IMAGE_FACTOR) * (w // IMAGE_FACTOR), "pil")
    native = _native_source(src, "src")
    if isinstance(native, np.ndarray):
        if native.ndim not in (2, 3):
            raise InvalidInputError(f"image array of shape {native.shape}; pass (H, W) or (H, W, C)", field="src")
        fmt, width, height = "array", int(native.shape[1]), int(native.shape[0])
    else:
        fmt, width, height = _native.probe_image(native)
    h, w = smart_resize(height=height, width=width, min_pixels=min_pixels, max_pixels=max_pixels)
    return ImageTokenCount(height, width, h, w, (h // IMAGE_FACTOR) * (w // IMAGE_FACTOR), fmt)


def _wrap(result: tuple) -> PreprocessedImage:
    pixel_values, (t, gh, gw), num_tokens, (oh, ow), (rh, rw) = result
    return PreprocessedImage(
        pixel_values=pixel_values,
        grid_thw=np.array([[t, gh, gw]], dtype=np.int64),
        num_tokens=int(num_tokens),
        height=oh,
        width=ow,
        resized_height=rh,
        resized_width=rw,
    )


def preprocess_images(
    srcs: Sequence[ImageInput],
    *,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
    max_decode_bytes_in_flight: int = DEFAULT_MAX_DECODE_BYTES_IN_FLIGHT,
) -> list[PreprocessedImage]:
    """Preprocess many images in one native call (GIL released, parallel over images, in waves
    whose decoded bytes fit ``max_decode_bytes_in_flight``)."""
    _check_budget(min_pixels, max_pixels)
    if isinstance(max_decode_bytes_in_flight, bool) or not isinstance(max_decode_bytes_in_flight, (int, np.integer)) \
            or max_decode_bytes_in_flight <= 0:
        raise InvalidInputError(
            f"max_decode_bytes_in_flight must be a positive int (bytes), got {max_decode_bytes_in_flight!r}",
            field="max_decode_bytes_in_flight",
        )
    if isinstance(srcs, (str, bytes, bytearray, np.ndarray)) or _is_pil(srcs):
        raise InvalidInputError("pass a list of images (e.g. [src]); for one image use preprocess_image", field="srcs")
    items = [_native_source(s, f"srcs[{i}]") for i, s in enumerate(srcs)]
    names = [s if isinstance(s, str) else f"srcs[{i}]" for i, s in enumerate(items)]
    out = _native.preprocess_images(
        items,
        min_pixels=int(min_pixels),
        max_pixels=int(max_pixels),
        max_decode_pixels=int(max_decode_pixels),
        max_decode_bytes_in_flight=int(max_decode_bytes_in_flight),
        names=names,
    )
    return [_wrap(r) for r in out]


def preprocess_image(
    src: ImageInput,
    *,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
) -> PreprocessedImage:
    """Preprocess one image: ``.pixel_values`` (N, 1536) float32, ``.grid_thw`` (1, 3), ``.num_tokens``."""
    _check_budget(min_pixels, max_pixels)
    item = _native_source(src, "src")
    name = item if isinstance(item, str) else "src"
    (out,) = _native.preprocess_images(
        [item],
        min_pixels=int(min_pixels),
        max_pixels=int(max_pixels),
        max_decode_pixels=int(max_decode_pixels),
        names=[name],
    )
    return _wrap(out)


def probe_native_items(items: Sequence[bytes], *, names: Sequence[str]) -> list[tuple[str, int, int]]:
    """Header-only ``(format, width, height)`` of encoded images, one native call. A bad header raises a
    typed error that names its item by ``names[i]`` (the caller's field path) in ``.field``."""
    items = list(items)
    try:
        return _native.probe_images(items, field="images")
    except VlrankError:
        # The batch probe names a bad image by its list position; probe one by one to name its field.
        for item, name in zip(items, names):
            with named_field(name):
                _native.probe_image(item, name=name)
        raise


def check_image_pixels(*, height: int, width: int, max_image_pixels: int, max_pixels: int, name: str) -> None:
    """Refuse (ImageTooLargeError naming ``name``) a source of more than ``max_image_pixels`` pixels."""
    if height * width <= max_image_pixels:
        return
    scale = (max_image_pixels / (height * width)) ** 0.5
    fit_w, fit_h = max(1, int(width * scale)), max(1, int(height * scale))
    raise ImageTooLargeError(
        f"{name}: a {width} x {height} image ({height * width / 1e6:.1f} megapixels) is over the decode limit "
        f"max_image_pixels = {max_image_pixels} ({max_image_pixels / 1e6:.1f} megapixels); the model sees at most "
        f"max_pixels = {max_pixels} of it, so downscale it first (e.g. to {fit_w} x {fit_h} or smaller) or raise "
        "max_image_pixels", field=name)


def check_max_image_pixels(value: Any) -> int:
    """``max_image_pixels`` as a positive int (InvalidInputError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InvalidInputError(f"max_image_pixels must be a positive int (pixels of one source image), got "
                                f"{value!r}", field="max_image_pixels")
    return int(value)


def resized_size(*, height: int, width: int, min_pixels: int, max_pixels: int, name: str) -> ResizedSize:
    """``smart_resize`` whose errors (e.g. an extreme aspect ratio) name the image's field ``name``."""
    with named_field(name):
        return smart_resize(height=height, width=width, min_pixels=min_pixels, max_pixels=max_pixels)


def preprocess_native_items(
    items: Sequence[bytes | np.ndarray],
    *,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
    names: Sequence[str] | None = None,
) -> list[PreprocessedImage]:
    """For the facade: items already resolved to encoded bytes or uint8 arrays (one native call).
    ``names`` label the items in errors (e.g. ``documents[2].content[0].image_url.url``): the message
    names the bad item and ``.field`` is set to its name."""
    _check_budget(min_pixels, max_pixels)
    try:
        out = _native.preprocess_images(
            list(items),
            min_pixels=int(min_pixels),
            max_pixels=int(max_pixels),
            max_decode_pixels=int(max_decode_pixels),
            names=list(names) if names is not None else None,
        )
    except VlrankError as exc:
        # Native decode errors name the item in the message only: set .field to the name the message
        # holds (the longest: "documents[1]" is a prefix of "documents[1].content[0]...").
        if names is not None and exc.field not in set(names):
            hits = [n for n in names if n and n in str(exc)]
            exc.field = max(hits, key=len) if hits else None
        raise
    return [_wrap(r) for r in out]


__all__ = [
    "DEFAULT_MIN_PIXELS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_DECODE_PIXELS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_FACTOR",
    "ResizedSize",
    "ImageTokenCount",
    "PreprocessedImage",
    "smart_resize",
    "image_tokens",
    "count_image_tokens",
    "preprocess_image",
    "preprocess_images",
    "probe_native_items",
    "check_image_pixels",
    "check_max_image_pixels",
    "resized_size",
    "preprocess_native_items",
]
