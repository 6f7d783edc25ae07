"""The process decode budget held around decoding done outside the native decoders (PyAV video frames): one
budget (VLRANK_DECODE_BYTES_IN_FLIGHT) for images and videos, so concurrent requests in their own threads
never decode more than it together."""

from __future__ import annotations

import threading
import time

import numpy as np

from vlrank import _native
from vlrank.engine import videos


def test_a_hold_reserves_caps_at_the_capacity_waits_and_releases() -> None:
    capacity, in_use = _native.decode_budget()
    assert in_use == 0 and capacity >= 2**20
    with _native.DecodeHold(capacity // 2) as a:
        assert a.nbytes == capacity // 2 and _native.decode_budget()[1] == capacity // 2
        took = {}

        def second() -> None:
            t0 = time.perf_counter()
            with _native.DecodeHold(capacity // 2 + 1):  # does not fit beside a: waits for it
                took["waited"] = time.perf_counter() - t0
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        assert "waited" not in took
    t.join(5)
    assert took["waited"] >= 0.25
    big = _native.DecodeHold(capacity * 4)  # larger than the budget: holds all of it (runs alone)
    assert big.nbytes == capacity and _native.decode_budget()[1] == capacity
    big.release()
    big.release()  # idempotent
    assert big.nbytes == 0 and _native.decode_budget()[1] == 0


def test_a_file_video_decode_holds_its_peak_and_gives_it_back(tmp_path) -> None:
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=4)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(8):
            frame = np.full((48, 64, 3), 30 * i, np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    from vlrank.inputs.video_sources import VideoInput

    v = VideoInput(data=path.read_bytes(), origin="documents[0].content[0]")
    pv = videos.prepare_video(v, key="k", merge=2, max_tokens=32768, max_decode_bytes=2**30,
                              max_image_pixels=2**26)
    assert pv.frame_bytes == len(pv.plan.frames) * 48 * 64 * 3
    seen = []
    real = videos.video_io.decode_frames

    def spy(*args, **kwargs):  # records the budget in use while PyAV decodes
        seen.append(_native.decode_budget()[1])
        return real(*args, **kwargs)

    videos.video_io.decode_frames = spy
    try:
        pv.decode(max_image_pixels=2**26)
    finally:
        videos.video_io.decode_frames = real
    assert seen == [int(pv.frame_bytes * videos.DECODE_PEAK)]
    assert _native.decode_budget()[1] == 0 and pv.decoded
