"""Videos are attack surface (issue 23): only real video containers reach a demuxer, each video is read under
a wall-clock bound, and every number a request carries is range-checked before anything converts it.

Through the library (the tiny VL reranker) and a real `vlrank` server on 127.0.0.1 (tests/server_fixtures.py):
an SDP text and an ffconcat list are 400s naming the field at once (nothing binds a port or opens a
file, and a missing path reads exactly like an existing one); the 310-digit / 2**64 / 2**64-1 / NaN numbers are
400s whose param names the option; MP4 / WebM / MKV / AVI / MPEG-TS / GIF still decode. A hypothesis fuzz of
the video part (bytes behind valid and invalid magic, mutated real files, random options) ends in typed errors
only, within the per-video bound.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from fractions import Fraction
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vlrank
from server_fixtures import AUTH, GOLDEN, VL_RERANK, exported_models, library, live  # noqa: F401 - fixtures
from vlrank.errors import ImageFetchError, ImageTooLargeError, InvalidInputError, VlrankError
from vlrank.inputs import FetchPolicy
from vlrank.inputs.sources import read_local
from vlrank.inputs.video import (
    ACCEPTED_CONTAINERS, MAX_DECODE_SECONDS, VideoDecodeError, VideoTooLongError, decode_all, decode_frames, probe,
    sniff_container)
from vlrank.inputs.video_sources import OPTION_RANGES

CLIP = GOLDEN / "videos" / "clip_3s_10fps_128x96.mp4"
WEBM = GOLDEN / "videos" / "clip_2s_15fps_160x120.webm"
# "At once" for a refusal: an SDP text handed to FFmpeg binds its UDP port and waits ~10 s (the issue measured it);
# a refusal from the sniffed bytes takes milliseconds. 3 s keeps the two apart with room for the delays of a loaded
# 2-core machine.
AT_ONCE_S = 3.0
SDP = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 5004 RTP/AVP 96\r\n"
       b"a=rtpmap:96 H264/90000\r\n")
FIELD = "documents[1].content[0].video_url.url"


def _url(data: bytes, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _part(data: bytes, mime: str = "video/mp4", **options) -> dict:
    return {"type": "video_url", "video_url": {"url": _url(data, mime)}, **options}


def _docs(part: dict) -> list:
    return ["a text document", {"content": [part]}]


def _ffconcat(name: str) -> bytes:
    return f"ffconcat version 1.0\nfile {name}\n".encode()


def _encode(fmt: str, codec: str, pix_fmt: str = "yuv420p", frames: int = 8) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        s = c.add_stream(codec, rate=Fraction(10))
        s.width, s.height, s.pix_fmt = 64, 48, pix_fmt
        img = np.zeros((48, 64, 3), np.uint8)
        for i in range(frames):
            img[:, :, i % 3] = 30 * i % 256
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rr(library) -> vlrank.Reranker:
    return library[VL_RERANK]


@pytest.fixture()
def client(live):
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=120) as c:
        yield c


def _raises(cls: type, field: str, fn, *words: str) -> VlrankError:
    with pytest.raises(cls) as err:
        fn()
    assert err.value.field == field, (err.value.field, str(err.value))
    for w in (field, *words):
        assert w in str(err.value), (w, str(err.value))
    return err.value


# ---- containers ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fmt", "codec", "pix_fmt", "demuxer"), [
    ("mp4", "mpeg4", "yuv420p", "mov"), ("mov", "mpeg4", "yuv420p", "mov"), ("matroska", "mpeg4", "yuv420p", "matroska"),
    ("webm", "libvpx", "yuv420p", "matroska"), ("avi", "mpeg4", "yuv420p", "avi"),
    ("mpegts", "mpeg2video", "yuv420p", "mpegts"), ("gif", "gif", "rgb8", "gif"),
])
def test_every_accepted_container_decodes_with_its_named_demuxer(fmt, codec, pix_fmt, demuxer) -> None:
    data = _encode(fmt, codec, pix_fmt)
    assert sniff_container(data) == demuxer
    frames, fps = decode_all(data)
    assert frames.shape == (8, 48, 64, 3) and fps == 10.0
    assert probe(data).width == 64


@pytest.mark.parametrize(("name", "data"), [
    ("sdp", SDP),
    ("ffconcat", _ffconcat("clip.mp4")),
    ("hls", b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nseg0.ts\n#EXT-X-ENDLIST\n"),
    ("dash", b'<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011"></MPD>'),
    ("rtsp text", b"rtsp://127.0.0.1:554/stream\n"),
    ("png (image2)", (GOLDEN / "videos" / "fl8_160x120" / "000.png").read_bytes()),
    ("plain text", b"hello, this is not a video" * 8),
])
def test_what_is_no_video_container_is_refused_before_any_demuxer(rr, name, data) -> None:
    t = time.perf_counter()
    err = _raises(VideoDecodeError, FIELD, lambda: rr.rerank("q", _docs(_part(data))), ACCEPTED_CONTAINERS)
    assert time.perf_counter() - t < AT_ONCE_S
    assert "not a readable video" in str(err)
    # the same refusal in the library's own reader (bytes and a local file alike)
    with pytest.raises(VideoDecodeError, match="accepted containers"):
        probe(data)


def test_an_sdp_data_url_is_a_400_at_once_in_the_library(rr) -> None:
    t = time.perf_counter()
    _raises(InvalidInputError, FIELD, lambda: rr.rerank("q", _docs(_part(SDP, "application/sdp"))), "not a video")
    _raises(VideoDecodeError, FIELD, lambda: rr.rerank("q", _docs(_part(SDP))), "accepted containers")
    assert time.perf_counter() - t < AT_ONCE_S


def test_a_local_ffconcat_list_opens_nothing_and_says_nothing_about_paths(tmp_path: Path) -> None:
    """A library user's file:// video is one local file, never a list that opens others: a list naming an
    existing video and one naming a missing file are refused with the same words (no path in them)."""
    (tmp_path / "clip.mp4").write_bytes(CLIP.read_bytes())
    (tmp_path / "real.ffconcat").write_bytes(_ffconcat("clip.mp4"))
    (tmp_path / "ghost.ffconcat").write_bytes(_ffconcat("missing.mp4"))
    model = vlrank.parse_documents
    messages = []
    for list_name in ("real.ffconcat", "ghost.ffconcat"):
        for src in ((tmp_path / list_name).as_uri(), str(tmp_path / list_name)):
            part = {"type": "video_url", "video_url": {"url": src}}
            err = _raises(VideoDecodeError, "documents[0].content[0].video_url.url",
                          lambda p=part: model([{"content": [p]}]), "accepted containers")
            messages.append(str(err))
        with pytest.raises(VideoDecodeError) as err:
            probe(tmp_path / list_name, name="clip")
        messages.append(str(err.value))
    assert messages[:3] == messages[3:]
    assert not any("clip.mp4" in m or "missing" in m for m in messages)


def test_a_bmff_prefix_does_not_smuggle_a_playlist() -> None:
    """Bytes that sniff as MP4 go to the MOV demuxer alone: a concat list or SDP behind an ``ftyp`` box is a
    corrupt MP4, not a playlist."""
    for tail in (_ffconcat(str(CLIP)), SDP):
        data = b"\x00\x00\x00\x10ftypisom\x00\x00\x02\x00" + tail
        t = time.perf_counter()
        with pytest.raises(VideoDecodeError, match="MP4/MOV"):
            decode_all(data)
        assert time.perf_counter() - t < AT_ONCE_S


def test_an_audio_file_is_named_as_such() -> None:
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32)
    with pytest.raises(VideoDecodeError, match="WAV audio file has no video stream"):
        probe(wav)


# ---- the wall-clock bound -------------------------------------------------------------------------------------
def test_decoding_past_the_time_bound_is_a_typed_error_saying_what_to_pass() -> None:
    data = _encode("mp4", "mpeg4", frames=200)
    t = time.perf_counter()
    err = _raises(VideoTooLongError, "v", lambda: decode_frames(data, [0, 199], name="v", max_seconds=0.001),
                  "time bound", "max_seconds", "frame list")
    # The error proves the bound fired (a whole decode of these 200 tiny frames takes ~30 ms, so no time bound could
    # tell it from a cut one); the wall clock guards against a hang, with a loaded machine's room.
    assert time.perf_counter() - t < AT_ONCE_S
    assert isinstance(err, VideoDecodeError) and isinstance(err, InvalidInputError)
    with pytest.raises(VideoTooLongError):
        probe(data, max_seconds=1e-9)
    frames, _, total = decode_frames(data, [0, 199], max_seconds=MAX_DECODE_SECONDS)
    assert frames.shape[0] == 2 and total == 200
    for bad in (0, -1, float("nan"), float("inf"), True, "5", 10**310):
        _raises(InvalidInputError, "max_seconds", lambda b=bad: decode_frames(data, [0], max_seconds=b), "seconds")


# ---- numbers --------------------------------------------------------------------------------------------------
HUGE = 10**309  # 310 digits
BAD_NUMBERS = [
    ("fps", HUGE), ("total_pixels", HUGE), ("max_frames", 2**64), ("min_pixels", 2**64), ("max_frames", 2**64 - 1),
    ("min_pixels", 2**64 - 1), ("fps", float("nan")), ("total_pixels", float("inf")), ("fps", float("-inf")),
    ("max_frames", True), ("fps", False), ("max_frames", 769), ("fps", 240.5), ("min_pixels", 8192 * 8192 + 1),
]


@pytest.mark.parametrize(("key", "value"), BAD_NUMBERS, ids=lambda v: v if isinstance(v, str) else None)
def test_out_of_range_options_name_the_option_in_the_library(rr, key, value) -> None:
    field = f"documents[1].content[0].{key}"
    for url in (_url(CLIP.read_bytes()), "x"):  # checked before the URL is looked at
        part = {"type": "video_url", "video_url": {"url": url}, key: value}
        err = _raises(InvalidInputError, field, lambda p=part: rr.rerank("q", _docs(p)), "pass")
        lo, hi = OPTION_RANGES[key]
        assert f"{hi:,}" in str(err) or str(hi) in str(err)
        assert str(HUGE) not in str(err)


def test_each_range_end_is_accepted(rr) -> None:
    data = CLIP.read_bytes()
    for key, value in (("fps", 240), ("max_frames", 768), ("min_pixels", 1), ("total_pixels", 18_000 * 1920 * 1080)):
        out = rr.rerank("q", _docs(_part(data, **{key: value})))
        assert {r["index"] for r in out["results"]} == {0, 1}


def _post(client, body: dict | str) -> httpx.Response:
    if isinstance(body, str):
        return client.post("/v1/rerank", content=body, headers={"Content-Type": "application/json"})
    return client.post("/v1/rerank", json=body)


def test_server_refuses_sdp_and_ffconcat_as_400s_at_once(client) -> None:
    here = os.path.relpath(CLIP, os.getcwd())  # a path the server (this process) could open
    cases = [_part(SDP), _part(SDP, "application/sdp"), _part(_ffconcat(here)), _part(_ffconcat("no/such/clip.mp4"))]
    answers = []
    for part in cases:
        t = time.perf_counter()
        r = _post(client, {"model": VL_RERANK, "query": "q", "documents": ["a text document", {"content": [part]}]})
        assert time.perf_counter() - t < AT_ONCE_S
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == FIELD and err["type"] == "invalid_request_error"
        assert "Traceback" not in r.text and "/work" not in r.text and "clip.mp4" not in r.text
        answers.append(err)
    assert "not a video" in answers[1]["message"]
    assert answers[2] == answers[3]  # an existing and a missing path read the same
    assert ACCEPTED_CONTAINERS in answers[0]["message"]


@pytest.mark.parametrize(("key", "value"), [
    ("fps", HUGE), ("total_pixels", HUGE), ("max_frames", 2**64), ("min_pixels", 2**64), ("max_frames", 2**64 - 1),
    ("fps", "NaN"), ("total_pixels", "Infinity"), ("max_frames", "true"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_server_out_of_range_options_are_400s_naming_the_option(client, key, value) -> None:
    for url in (_url(CLIP.read_bytes()), "x"):
        part = json.dumps({"type": "video_url", "video_url": {"url": url}})[:-1] + f', "{key}": {value}}}'
        body = f'{{"model": "{VL_RERANK}", "query": "q", "documents": ["a text document", {{"content": [{part}]}}]}}'
        r = _post(client, body)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == f"documents[1].content[0].{key}", err
        assert "pass" in err["message"] and str(HUGE) not in err["message"]


@pytest.mark.parametrize(("route", "key", "value"), [
    ("/v1/rerank", "top_n", HUGE), ("/v1/rerank", "top_n", 2**64), ("/v1/rerank", "top_n", 2**64 - 1),
    ("/v2/rerank", "top_n", 2**64), ("/v2/rerank", "max_tokens_per_doc", HUGE), ("/v2/rerank", "priority", -(2**64)),
    ("/v1/embeddings", "dimensions", HUGE), ("/v1/embeddings", "dimensions", 2**64),
    ("/score", "truncate_prompt_tokens", 2**64),
])
def test_server_top_level_numbers_are_range_checked(client, route, key, value) -> None:
    from server_fixtures import VL_EMBED

    body = {"model": VL_RERANK, "query": "q", "documents": ["a", "b"]}
    if route == "/v1/embeddings":
        body = {"model": VL_EMBED, "input": "a"}
    elif route == "/score":
        body = {"model": VL_RERANK, "text_1": "q", "text_2": ["a"]}
    r = client.post(route, json={**body, key: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == key, r.text


def test_server_valid_mp4_and_webm_still_score(client, rr) -> None:
    documents = [{"content": [_part(CLIP.read_bytes())]}, {"content": [_part(WEBM.read_bytes(), "video/webm")]}]
    r = _post(client, {"model": VL_RERANK, "query": "a small moving square", "documents": documents})
    assert r.status_code == 200, r.text
    got = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
    want = {x["index"]: x["relevance_score"] for x in rr.rerank("a small moving square", documents)["results"]}
    assert got.keys() == {0, 1} and all(abs(got[i] - want[i]) <= 1e-6 for i in got)


# ---- one capped local reader ----------------------------------------------------------------------------------
def test_one_capped_local_reader_serves_images_and_videos(tmp_path: Path) -> None:
    pol = FetchPolicy(max_bytes=100, max_video_bytes=200)
    (tmp_path / "big").write_bytes(b"\0" * 201)
    assert read_local(tmp_path / "big", cap=201, what="video", field="f", policy=pol) == b"\0" * 201
    for what, cap in (("image", 100), ("video", 200)):
        _raises(ImageTooLargeError, "f", lambda w=what, c=cap: read_local(tmp_path / "big", cap=c, what=w, field="f",
                                                                          policy=pol), f"{cap}-byte {what} cap")
        _raises(ImageFetchError, "f", lambda w=what: read_local(tmp_path, cap=10, what=w, field="f", policy=pol),
                "directory", what)
        _raises(ImageFetchError, "f", lambda w=what: read_local(tmp_path / "nope", cap=10, what=w, field="f",
                                                                policy=pol), f"no such {what} file")
        _raises(ImageFetchError, "f", lambda w=what: read_local(tmp_path / "big", cap=10, what=w, field="f",
                                                                policy=FetchPolicy(allow_local_files=False)),
                f"data:{what}/")
    part = {"type": "video_url", "video_url": {"url": str(tmp_path)}}
    _raises(ImageFetchError, "documents[0].content[0].video_url.url",
            lambda: vlrank.parse_documents([{"content": [part]}]), "directory")


# ---- fuzz -----------------------------------------------------------------------------------------------------
_MAGIC = [b"\x00\x00\x00\x18ftypisom", b"\x00\x00\x00\x08moov", b"\x00\x00\x00\x08mdat", b"\x1a\x45\xdf\xa3",
          b"RIFF\x00\x10\x00\x00AVI LIST", b"GIF89a", b"GIF87a", b"\x47" + bytes(187) + b"\x47" + bytes(187) + b"\x47",
          b"v=0\r\n", b"ffconcat version 1.0\n", b"#EXTM3U\n", b"RIFF\x00\x00\x00\x00WAVE", b"\x89PNG\r\n\x1a\n", b""]
_REAL = [CLIP.read_bytes(), WEBM.read_bytes()]


@st.composite
def _video_bytes(draw) -> bytes:
    if draw(st.booleans()):  # a real file, cut and with a few bytes flipped
        data = bytearray(draw(st.sampled_from(_REAL)))
        data = data[:draw(st.integers(1, len(data)))]
        for _ in range(draw(st.integers(0, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    return draw(st.sampled_from(_MAGIC)) + draw(st.binary(max_size=2048))


_NUMBERS = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                     st.sampled_from([HUGE, 2**64, 2**64 - 1, 0, 1, 2, 64, 768]), st.none())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=_video_bytes(), options=st.dictionaries(st.sampled_from(sorted(OPTION_RANGES)), _NUMBERS, max_size=4),
       as_url=st.booleans())
def test_fuzz_video_part_typed_errors_only_within_the_bound(rr, data, options, as_url) -> None:
    part = _part(data, **options) if as_url else {"type": "video", "video": data, **options}
    t = time.perf_counter()
    try:
        out = rr.rerank("q", _docs(part))
        assert {r["index"] for r in out["results"]} == {0, 1}
    except VlrankError as exc:
        assert exc.field and exc.field.startswith("documents[1].content[0]"), (exc.field, str(exc))
    assert time.perf_counter() - t < MAX_DECODE_SECONDS
    # the reader alone, under a 1 s bound: never past it (a little slack for a loaded machine)
    t = time.perf_counter()
    try:
        decode_frames(data, [0, 1], name="v", max_seconds=1.0)
    except VlrankError as exc:
        assert exc.field == "v", (exc.field, str(exc))
    assert time.perf_counter() - t < 3.0
