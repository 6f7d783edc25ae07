"""Real video files for tests, made with PyAV in seconds.

``long_black_clip`` is issue 23's "963 KB mp4 of 18,000 black 1080p frames": encoding 18,000 frames at 1080p
takes minutes, so ONE closed group of pictures (an IDR frame, then P frames only) is encoded and its packets
are muxed again with shifted timestamps. Every copy starts at a key frame and references nothing before it,
so the file is a valid H.264 mp4 whose demuxer and decoder really see every frame (tests check the count)."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np


def long_black_clip(*, frames: int = 18_000, gop: int = 300, width: int = 1920, height: int = 1080,
                    fps: int = 30) -> bytes:
    import av

    if frames % gop:
        raise ValueError(f"frames={frames} must be a multiple of gop={gop}")
    with av.open(io.BytesIO(), "w", format="mp4") as scratch:
        enc = scratch.add_stream("libx264", rate=fps)
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.options = {"preset": "ultrafast", "tune": "stillimage",
                       "x264-params": f"keyint={gop}:min-keyint={gop}:bframes=0:scenecut=0"}
        frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        packets = []
        for i in [*range(gop), None]:  # None flushes the encoder
            if i is not None:
                frame.pts, frame.time_base = i, Fraction(1, fps)
            for p in enc.encode(frame if i is not None else None):
                packets.append((bytes(p), p.pts, p.dts, p.is_keyframe))
        time_base = Fraction(1, fps) if enc.time_base is None else enc.time_base
        out = io.BytesIO()
        with av.open(out, "w", format="mp4") as mux:
            stream = mux.add_stream_from_template(enc)
            cc = stream.codec_context
            cc.width, cc.height, cc.extradata = width, height, enc.codec_context.extradata
            stream.time_base = time_base
            step = packets[1][1] - packets[0][1]  # one frame in the stream's time base
            for copy in range(frames // gop):
                shift = copy * gop * step
                for data, pts, dts, key in packets:
                    p = av.Packet(data)
                    p.stream, p.time_base = stream, time_base
                    p.pts, p.dts, p.is_keyframe = pts + shift, dts + shift, key
                    mux.mux(p)
    return out.getvalue()
