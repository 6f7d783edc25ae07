"""vlrank.ray on a real local Ray (2 CPUs, started here and shut down after): Ray Data embedding and
reranking of tiny golden models exported once, compared row by row with the library; Ray Serve answering
the HTTP API on 127.0.0.1 with the library's scores."""

from __future__ import annotations

import functools
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray

import vlrank
import vlrank.ray
from export_support import VL_CKPT, exported
from vlrank.errors import ImageDecodeError, ImageFetchError, InvalidInputError, ModelDirectoryError
from vlrank.ray.rows import clean

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES = REPO_ROOT / "tests" / "golden" / "images"
# Small images only: the point is the plumbing (paths, URLs, bytes), not the vision graph's speed.
SMALL = ["rgba_60x90.png", "gray_40x300.png", "palette_64x64.png", "rgb_noise_70x50.png",
         "gradient_130x97.png", "photo_like_200x150.jpg"]
CORRUPT_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # a PNG signature and nothing decodable after it
TOL = 1e-5
# Ray's own deprecation notices (pydantic, DataContext) are not about vlrank.
pytestmark = pytest.mark.filterwarnings("ignore:::ray")


@pytest.fixture(scope="module")
def cluster():
    # Serve kills an HTTP proxy that is not ready within 5 s (RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S); on a
    # loaded 2-core machine starting its process takes longer. Set before ray.init: Ray's processes
    # inherit the environment.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "120")
    os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "60")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def models() -> dict[str, Path]:
    return {"embed": exported(VL_CKPT, "embed"), "rerank": exported(VL_CKPT, "rerank")}


@pytest.fixture(scope="module")
def image_url():
    """A real HTTP server on 127.0.0.1 serving the golden images; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(IMAGES))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join(10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output to the assertions
        pass


def _embed_rows(url: str, corrupt: Path) -> list[dict]:
    """500 rows with a string image column: texts, image paths, http URLs, file:// URLs, text+image pairs,
    and images that are corrupt or missing."""
    rows = []
    for i in range(500):
        name = SMALL[i % len(SMALL)]
        kind = i % 10
        text, image = f"row {i}: a short passage about item {i % 37}", None
        if kind == 1:
            text, image = None, str(IMAGES / name)
        elif kind == 2:
            image = str(IMAGES / name)
        elif kind == 3:
            text, image = None, url + name
        elif kind == 4:
            text, image = None, (IMAGES / name).as_uri()
        elif kind == 5 and i % 50 == 5:
            image = str(corrupt)
        elif kind == 6 and i % 100 == 6:
            text, image = None, str(IMAGES / "no-such-image.png")
        rows.append({"id": i, "text": text, "image": image})
    return rows


def _side(text, image):
    """The library input of one row, as the docs of embed_dataset define it."""
    if image is None:
        return text
    return {"image": image} if text is None else {"image": image, "text": text}


def _by_id(rows: list[dict]) -> dict[int, dict]:
    out = {r["id"]: r for r in rows}
    assert len(out) == len(rows)
    return out


def _assert_vector(got, want: list[float]) -> None:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= TOL


# ---- Ray Data --------------------------------------------------------------------------------------------

def test_embed_dataset_500_mixed_rows_equal_the_library(cluster, models, image_url, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(CORRUPT_PNG)
    rows = _embed_rows(image_url, corrupt)
    policy = vlrank.FetchPolicy(allow_private_urls=True)  # the image server is on 127.0.0.1
    ds = ray.data.from_items(rows)
    out = vlrank.ray.embed_dataset(ds, model=models["embed"], column="text", image_column="image",
                                   batch_size=32, fetch_policy=policy).take_all()
    assert len(out) == 500
    got = _by_id(out)
    lib = vlrank.Embedder(str(models["embed"]), fetch_policy=policy)
    failed = set()
    for row in rows:
        g = got[row["id"]]
        assert g["text"] == row["text"] and g["image"] == row["image"]
        try:
            want = lib.embed(input=_side(row["text"], row["image"]))["data"][0]["embedding"]
        except vlrank.VlrankError as exc:
            assert g["embedding"] is None
            assert g["error"] == {"type": type(exc).__name__, "message": exc.message, "field": exc.field}
            failed.add(row["id"])
            continue
        assert g["error"] is None, g["error"]
        _assert_vector(g["embedding"], want)
    corrupt_ids = {i for i in range(500) if i % 50 == 5}
    missing_ids = {i for i in range(500) if i % 100 == 6}
    assert failed == corrupt_ids | missing_ids
    assert {got[i]["error"]["type"] for i in corrupt_ids} == {"ImageDecodeError"}
    assert {got[i]["error"]["field"] for i in corrupt_ids} == {"input.image"}
    assert {got[i]["error"]["type"] for i in missing_ids} == {"ImageFetchError"}
    assert sum(r["image"] is not None and r["id"] not in failed for r in rows) >= 200


def test_embed_dataset_bytes_column_with_dimensions_and_instruction(cluster, models):
    """Encoded image bytes in a binary column (some corrupt), MRL dimensions and an instruction."""
    names = SMALL * 4
    rows = [{"id": i, "image": (IMAGES / n).read_bytes() if i % 8 else CORRUPT_PNG} for i, n in enumerate(names)]
    out = vlrank.ray.embed_dataset(ray.data.from_items(rows), model=models["embed"], image_column="image",
                                   dimensions=16, instruction="Represent the picture", batch_size=5,
                                   output_column="vec", error_column="problem").take_all()
    lib = vlrank.Embedder(str(models["embed"]))
    got = _by_id(out)
    for row in rows:
        g = got[row["id"]]
        if row["id"] % 8 == 0:
            assert g["vec"] is None and g["problem"]["type"] == "ImageDecodeError"
            with pytest.raises(ImageDecodeError):
                lib.embed(input={"image": row["image"]})
            continue
        assert g["problem"] is None
        assert len(g["vec"]) == 16
        want = lib.embed(input={"image": row["image"]}, dimensions=16,
                         instruction="Represent the picture")["data"][0]["embedding"]
        _assert_vector(g["vec"], want)



def test_rerank_dataset_50_rows_equal_the_library(cluster, models, image_url, tmp_path):
    """Text and image documents from paths; corrupt images, and (under the default policy, as the
    library's) an image URL on a private address refused in the worker: those rows carry the error."""
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(CORRUPT_PNG)
    rows = []
    for i in range(50):
        docs = [{"text": f"passage {i}.{j} about topic {(i + j) % 7}"} for j in range(1 + i % 4)]
        if i % 5 == 1:
            docs.append({"image": str(IMAGES / SMALL[i % len(SMALL)])})
        if i % 5 == 2:
            docs.append({"image": str(IMAGES / SMALL[i % len(SMALL)]), "text": "a caption"})
        if i in (13, 37):
            docs.append({"image": str(corrupt)})
        if i == 21:
            docs.append({"image": image_url + SMALL[0]})
        rows.append({"id": i, "query": f"what is topic {i % 7}?", "documents": docs})
    out = vlrank.ray.rerank_dataset(ray.data.from_items(rows), model=models["rerank"], query_column="query",
                                    documents_column="documents", batch_size=8, concurrency=2).take_all()
    assert len(out) == 50
    got = _by_id(out)
    lib = vlrank.Reranker(str(models["rerank"]))
    for row in rows:
        g = got[row["id"]]
        if row["id"] in (13, 21, 37):
            assert g["scores"] is None
            with pytest.raises(ImageDecodeError if row["id"] != 21 else ImageFetchError) as err:
                lib.rerank(row["query"], row["documents"])
            assert g["error"] == {"type": type(err.value).__name__, "message": err.value.message,
                                  "field": err.value.field}
            assert re.match(r"documents\[\d+\]\.image", g["error"]["field"]), g["error"]
            continue
        assert g["error"] is None, g["error"]
        want = lib.rerank(row["query"], row["documents"])
        scores = [0.0] * len(row["documents"])
        for item in want["results"]:
            scores[item["index"]] = item["relevance_score"]
        assert len(g["scores"]) == len(scores)
        assert np.max(np.abs(np.asarray(g["scores"]) - np.asarray(scores))) <= TOL


def test_arguments_are_checked_on_the_driver(cluster, models, tmp_path):
    ds = ray.data.from_items([{"text": "a"}])
    with pytest.raises(ModelDirectoryError, match="vlrank export"):
        vlrank.ray.embed_dataset(ds, model=tmp_path, column="text")
    with pytest.raises(ModelDirectoryError, match="rerank_dataset"):
        vlrank.ray.embed_dataset(ds, model=models["rerank"], column="text")
    with pytest.raises(InvalidInputError, match="no such column") as err:
        vlrank.ray.embed_dataset(ds, model=models["embed"], column="body")
    assert err.value.field == "body"
    with pytest.raises(InvalidInputError, match="already has this column"):
        vlrank.ray.embed_dataset(ds, model=models["embed"], column="text", output_column="text")
    with pytest.raises(InvalidInputError, match="column="):
        vlrank.ray.embed_dataset(ds, model=models["embed"])
    with pytest.raises(InvalidInputError, match="batch_size"):
        vlrank.ray.embed_dataset(ds, model=models["embed"], column="text", batch_size=0)
    with pytest.raises(InvalidInputError, match="concurrency"):
        vlrank.ray.embed_dataset(ds, model=models["embed"], column="text", concurrency=(3, 1))
    with pytest.raises(InvalidInputError, match="ray.data.Dataset"):
        vlrank.ray.rerank_dataset([{"q": "a"}], model=models["rerank"], query_column="q", documents_column="d")


def test_clean_drops_the_nulls_of_struct_columns():
    assert clean({"text": None, "image": "a.png"}) == {"image": "a.png"}
    assert clean([{"text": "t", "image": None}, "s"]) == [{"text": "t"}, "s"]


def test_missing_ray_is_one_line_naming_the_extra():
    code = "import sys; sys.modules['ray'] = None\nimport vlrank.ray"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last == 'vlrank.ray.RayUnavailableError: vlrank.ray needs Ray; pip install "vlrank[ray]"', r.stderr


def test_missing_ray_serve_is_named_when_serve_app_is_called(monkeypatch, models):
    monkeypatch.setitem(sys.modules, "ray.serve", None)
    monkeypatch.delattr(ray, "serve", raising=False)
    with pytest.raises(vlrank.ray.RayUnavailableError, match=r'needs Ray Serve; pip install "vlrank\[ray\]"'):
        vlrank.ray.serve_app(models={"m": models["rerank"]})


# ---- Ray Serve -------------------------------------------------------------------------------------------

KEY = "ray-test-key-0123456789"
SEED_QUERY = "What is the capital of France?"
SEED_DOCUMENTS = ["Paris is the capital of France.", "London is the capital of England.",
                  "Berlin is the capital of Germany."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(cluster, models):
    from ray import serve

    from vlrank.server import ServerSettings

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = vlrank.ray.serve_app(models={"vl-rerank": models["rerank"]}, num_replicas=1,
                               settings=ServerSettings(api_key=KEY, max_documents=50))
    serve.run(app, name="vlrank", route_prefix="/")  # returns once the replica's models are loaded and warm
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def _without_id(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "id"}


def test_serve_answers_the_seed_rerank_example_with_the_library_scores(served, models):
    lib = vlrank.Reranker(str(models["rerank"]), name="vl-rerank")
    want = lib.rerank(SEED_QUERY, SEED_DOCUMENTS, top_n=2)
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=served, headers=auth, timeout=60) as client:
        assert client.get("/health").json() == {"status": "ok", "models": {"vl-rerank": "ok"}}
        r = client.post("/v1/rerank", json={"model": "vl-rerank", "query": SEED_QUERY,
                                            "documents": SEED_DOCUMENTS, "top_n": 2})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["id"].startswith("rerank-")
        assert _without_id(got) == _without_id(want)
        r = httpx.post(served + "/v1/rerank", json={"model": "vl-rerank", "query": "q", "documents": ["d"]})
        assert r.status_code == 401 and r.json()["error"]["code"]
        r = client.post("/v1/rerank", json={"model": "nope", "query": "q", "documents": ["d"]})
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_serve_batches_concurrent_requests_inside_the_replica(served, models):
    lib = vlrank.Reranker(str(models["rerank"]), name="vl-rerank")
    auth = {"Authorization": f"Bearer {KEY}"}
    bodies = [{"model": "vl-rerank", "query": f"{SEED_QUERY} ({i})", "documents": SEED_DOCUMENTS}
              for i in range(32)]
    with httpx.Client(base_url=served, headers=auth, timeout=120,
                      limits=httpx.Limits(max_connections=32)) as client:
        before = _batch_counts(client)
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda b: client.post("/v1/rerank", json=b), bodies))
        after = _batch_counts(client)
    for body, r in zip(bodies, answers):
        assert r.status_code == 200, r.text
        assert _without_id(r.json()) == _without_id(lib.rerank(body["query"], body["documents"]))
    batches, requests = after[0] - before[0], after[1] - before[1]
    assert requests == 32
    assert batches < 32  # some model batches held several requests


def _batch_counts(client: httpx.Client) -> tuple[float, float]:
    """(batches run, requests they held) for vl-rerank, from the replica's Prometheus metrics."""
    text = client.get("/metrics").text
    count = re.search(r'^vlrank_batch_requests_count\{model="vl-rerank"\} (\S+)$', text, re.M)
    total = re.search(r'^vlrank_batch_requests_sum\{model="vl-rerank"\} (\S+)$', text, re.M)
    assert count and total, text[:2000]
    return float(count.group(1)), float(total.group(1))
