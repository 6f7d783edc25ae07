"""Video frame memory is allocated fallibly and read in place (issue 23, finding 2).

Two black 8192 x 8192 frames (the frames of the mp4 that aborted a server under ``prlimit --as``) go
through ``_native.preprocess_video_frames`` in a child process whose address space is capped a little
above what it holds once the frames are decoded: the plan's resize must fit in that room (the frames
are read where they lie, not copied), and a resize whose rows cannot be allocated must be a typed
``ImageTooLargeError`` — never "memory allocation of N bytes failed" and an aborted process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

# Room above the child's address space once its frames are held: enough for the plan's resize (width
# pass temporaries of 8192 x 864 x 3 float32 per frame in flight, rows), far less than one more copy of
# the frames (402 MiB) or the 8192 x 8192 rows (1.6 GB).
HEADROOM = 512 << 20

CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from vlrank import _native
    from vlrank.errors import VlrankError

    def vm_size():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

    # Start the thread pool (thread stacks, per-thread malloc arenas) before measuring.
    _native.preprocess_video_frames(np.zeros((2, 64, 64, 3), np.uint8), resized_height=32, resized_width=32)
    frames = np.empty((2, 8192, 8192, 3), np.uint8)
    frames.fill(0)
    if sys.argv[1] == "measure":
        print(json.dumps({"vm_size": vm_size()}))
        sys.exit(0)
    plan = _native.video_plan_file(total_frames=2, video_fps=2.0, height=8192, width=8192, fps=2.0)
    out = {}
    for name, (h, w) in {"plan": (plan["resized_height"], plan["resized_width"]), "full": (8192, 8192)}.items():
        try:
            pv, grid = _native.preprocess_video_frames(frames, resized_height=h, resized_width=w)
            out[name] = {"rows": list(pv.shape), "grid": list(grid), "max": float(abs(pv).max())}
            del pv
        except VlrankError as exc:
            out[name] = {"error": type(exc).__name__, "field": exc.field, "message": str(exc)}
    print(json.dumps(out))
""")


def _child(mode: str, *prefix: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MALLOC_ARENA_MAX="2")  # arenas reserve address space per thread
    return subprocess.run([*prefix, sys.executable, "-c", CHILD, mode], capture_output=True, text=True, env=env,
                          timeout=600)


def test_8192_frames_under_an_address_space_cap_give_a_typed_error_not_an_abort() -> None:
    measured = _child("measure")
    assert measured.returncode == 0, measured.stderr
    cap = json.loads(measured.stdout)["vm_size"] + HEADROOM
    run = _child("run", "prlimit", f"--as={cap}")
    assert "memory allocation of" not in run.stderr
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    # The plan's size fits beside the frames: they are read in place.
    assert got["plan"]["rows"] == [got["plan"]["grid"][1] * got["plan"]["grid"][2] * 1, 1536]
    assert got["plan"]["grid"][0] == 1 and got["plan"]["max"] == 1.0  # black frames: (0 - 127.5) / 127.5
    # 8192 x 8192 rows (1.6 GB of float32) cannot be allocated under the cap: a typed error.
    assert got["full"]["error"] == "ImageTooLargeError", got["full"]
    assert "cannot allocate" in got["full"]["message"] and "bytes" in got["full"]["message"]
    assert got["full"]["field"]


def test_a_strided_frame_array_gives_the_rows_of_its_contiguous_copy() -> None:
    import numpy as np

    from vlrank import _native

    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, size=(2, 96, 128, 3), dtype=np.uint8)
    strided = frames[:, ::2, ::2]  # (2, 48, 64, 3), not C-contiguous: copied once, not refused
    assert not strided.flags.c_contiguous
    got, grid = _native.preprocess_video_frames(strided, resized_height=64, resized_width=64)
    want, want_grid = _native.preprocess_video_frames(np.ascontiguousarray(strided), resized_height=64, resized_width=64)
    assert grid == want_grid == (1, 4, 4)
    np.testing.assert_array_equal(got, want)
    resized = _native.resize_video_frames(strided, resized_height=32, resized_width=96)
    assert resized.shape == (2, 32, 96, 3) and resized.flags.c_contiguous
