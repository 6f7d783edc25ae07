"""Video through the server and the CLI: a real `vlrank serve` app (uvicorn on 127.0.0.1) answers video
rerank and embedding requests (data URLs, frame lists, `messages`) with the library's results, refuses
a video over its byte cap (413 naming the field) and a local file (the server never reads its own
disk); `vlrank rerank --document-video` / `vlrank embed --video` print the library's results."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

from server_fixtures import (  # noqa: F401 - fixtures
    AUTH, GOLDEN, KEY, VL_EMBED, VL_RERANK, exported_models, image_part, library, live, make_facades,
    without_id)
from server_support import LiveServer

CLIP = GOLDEN / "videos" / "clip_3s_10fps_128x96.mp4"
WEBM = GOLDEN / "videos" / "clip_2s_15fps_160x120.webm"
FRAMES = [GOLDEN / "videos" / "fl8_160x120" / f"{i:03d}.png" for i in range(8)]
QUERY = "a small moving square"


def video_url_part(path, **options) -> dict:
    mime = "webm" if path.suffix == ".webm" else "mp4"
    url = f"data:video/{mime};base64," + base64.b64encode(path.read_bytes()).decode()
    return {"type": "video_url", "video_url": {"url": url}, **options}


def frame_list_part() -> dict:
    urls = ["data:image/png;base64," + base64.b64encode(p.read_bytes()).decode() for p in FRAMES]
    return {"type": "video", "video": urls}


@pytest.fixture()
def client(live):
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=120) as c:
        yield c


def test_server_video_rerank_equals_the_library(client, library):
    documents = [
        {"content": [video_url_part(CLIP), {"type": "text", "text": "a clip"}]},
        {"content": [video_url_part(WEBM, fps=2, max_frames=4)]},
        {"content": [frame_list_part()]},
        {"content": [image_part("gradient_130x97.png")]},
        "a text document about squares",
    ]
    r = client.post("/v1/rerank", json={"model": VL_RERANK, "query": QUERY, "documents": documents})
    assert r.status_code == 200, r.text
    got = r.json()
    want = library[VL_RERANK].rerank(QUERY, documents)
    assert [x["index"] for x in got["results"]] == [x["index"] for x in want["results"]]
    for a, b in zip(got["results"], want["results"]):
        assert abs(a["relevance_score"] - b["relevance_score"]) <= 1e-6
        assert a["document"] == b["document"]  # the parts echoed as given
    assert got["usage"] == want["usage"] and got["usage"]["prompt_tokens"] > 200
    # The echo holds the part as sent, options included.
    assert got["results"][[x["index"] for x in got["results"]].index(1)]["document"]["multi_modal"][0]["fps"] == 2


def test_server_video_embedding_messages_equal_the_library(client, library):
    messages = [{"role": "user", "content": [video_url_part(CLIP), {"type": "text", "text": "describe"}]}]
    r = client.post("/v1/embeddings", json={"model": VL_EMBED, "messages": messages})
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["data"][0]["embedding"])
    want = np.asarray(library[VL_EMBED].embed(messages=messages)["data"][0]["embedding"])
    assert float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want))) >= 0.999999
    r2 = client.post("/v1/embeddings", json={"model": VL_EMBED, "input": [{"content": [frame_list_part()]}]})
    assert r2.status_code == 200, r2.text
    assert r2.json()["usage"]["prompt_tokens"] > 50


def test_server_refuses_a_local_video_file(client):
    doc = {"content": [{"type": "video_url", "video_url": {"url": CLIP.as_uri()}}]}
    r = client.post("/v1/rerank", json={"model": VL_RERANK, "query": QUERY, "documents": ["text", doc]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"].startswith("documents[1].content[0]")
    assert str(CLIP.parent) not in r.text and "Traceback" not in r.text


def test_server_bad_video_options_name_the_field(client):
    doc = {"content": [video_url_part(CLIP, fps="fast")]}
    r = client.post("/v1/rerank", json={"model": VL_RERANK, "query": QUERY, "documents": [doc]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "documents[0].content[0].fps"
    corrupt = {"content": [{"type": "video_url", "video_url": {
        "url": "data:video/mp4;base64," + base64.b64encode(CLIP.read_bytes()[:600]).decode()}}]}
    r = client.post("/v1/rerank", json={"model": VL_RERANK, "query": QUERY, "documents": [corrupt]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith("documents[0].content[0]")
    assert client.get("/health").status_code == 200  # still serving


def test_server_video_byte_cap_is_a_413(exported_models):
    from vlrank.server import ServerSettings, create_app

    paths = {VL_RERANK: exported_models[VL_RERANK]}
    settings = ServerSettings(api_key=KEY, max_video_bytes=4096, warmup=False)
    assert CLIP.stat().st_size > 4096
    with LiveServer(create_app(make_facades(paths), settings=settings)) as server:
        r = httpx.post(server.url + "/v1/rerank", headers=AUTH, timeout=60,
                       json={"model": VL_RERANK, "query": QUERY, "documents": [{"content": [video_url_part(CLIP)]}]})
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["param"].startswith("documents[0].content[0]") and "max_video_bytes" in err["message"]


def _cli(*argv: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "vlrank.cli", *argv], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cli_rerank_document_video_equals_the_library(exported_models):
    import vlrank

    model = str(exported_models[VL_RERANK])
    out = _cli("rerank", "--model", model, "--query", QUERY, "--document-video", str(CLIP), "--document", "text",
               "--document-video", str(WEBM), "--fps", "2", "--max-frames", "2")

    def video(path, **options):
        return {"content": [{"type": "video_url", "video_url": {"url": path.resolve().as_uri()}, **options}]}

    rr = vlrank.Reranker(model)
    want = rr.rerank(QUERY, [video(CLIP, fps=2.0, max_frames=2), "text", video(WEBM, fps=2.0, max_frames=2)])
    assert [x["index"] for x in out["results"]] == [x["index"] for x in want["results"]]
    for a, b in zip(out["results"], want["results"]):
        assert abs(a["relevance_score"] - b["relevance_score"]) <= 1e-6
        assert a["document"] == b["document"]
    assert out["usage"] == want["usage"]
    # The options reached the sampler: two frames (one pair) per clip instead of the default's four.
    default = rr.rerank(QUERY, [video(CLIP), "text", video(WEBM)])
    assert default["usage"]["prompt_tokens"] > out["usage"]["prompt_tokens"]


def test_cli_embed_video_and_text_is_one_input(exported_models):
    model = str(exported_models[VL_EMBED])
    out = _cli("embed", "--model", model, "--video", str(CLIP), "--text", "a clip", "--max-frames", "2")
    assert len(out["data"]) == 1
    import vlrank

    want = vlrank.Embedder(model).embed([{"content": [
        {"type": "video_url", "video_url": {"url": CLIP.resolve().as_uri()}, "max_frames": 2},
        {"type": "text", "text": "a clip"}]}])
    a, b = np.asarray(out["data"][0]["embedding"]), np.asarray(want["data"][0]["embedding"])
    assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) >= 0.999999
    assert out["usage"] == want["usage"]


def test_cli_missing_video_file_is_a_usage_error(exported_models):
    proc = subprocess.run([sys.executable, "-m", "vlrank.cli", "rerank", "--model", str(exported_models[VL_RERANK]),
                           "--query", "q", "--document-video", "/nonexistent/clip.mp4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--document-video" in proc.stderr and "video file" in proc.stderr
