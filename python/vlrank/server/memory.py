"""Giving decoded media back to the operating system (glibc only; elsewhere these are no-ops).

A served request's images and videos become tens to hundreds of MiB of buffers that live for one request.
glibc's default raises its mmap threshold after the first large free, so later buffers of that size come
from the heap arenas of whichever thread made them and stay in the process after they are freed: measured
(tiny VL reranker, 6 requests of four 1600x1200 PNGs + a 24 s clip, twice, 2-core machine) RSS 2.97 / 4.26 GB
after each round from a 376 MB warm baseline. A fixed 1 MiB threshold keeps every large buffer in its own
mapping, unmapped on free (2.16 / 3.28 GB on the same load); ``trim`` after a batch that held media returns
what the arenas still keep free. What remains is not freed memory: see docs/notes.md, Round 4.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("vlrank.server")

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
_MMAP_THRESHOLD = 1 << 20


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def map_large_buffers() -> bool:
    """Fix glibc's mmap threshold at 1 MiB for this process (a server owns its process); True if applied."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD))


def trim() -> None:
    """Return the free memory of every malloc arena to the system (a few ms after a media batch)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


__all__ = ["map_large_buffers", "trim"]
