"""vlrank.ray on a real local Ray (2 CPUs, started here and shut down after): Ray Data embedding and
reranking of tiny golden models exported once, compared row by row with the library; Ray Serve answering
the HTTP API on 127.0.0.1 with the library's scores."""

from __future__ import annotations

import functools
import http.server
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
from export_support import TEXT_CKPT, VL_CKPT, exported
from vlrank.errors import ImageDecodeError, ImageFetchError, InvalidInputError, ModelDirectoryError
from vlrank.ray.rows import clean

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES = REPO_ROOT.parent / "shared" / "golden" / "images"
# Small images only: the point is the plumbing (paths, URLs, bytes), not the vision graph's speed.
SMALL = ["rgba_60x90.png", "gray_40x300.png", "palette_64x64.png", "rgb_noise_70x50.png",
         "gradient_130x97.png", "photo_like_200x150.jpg"]
CORRUPT_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # a PNG signature and nothing decodable after it
TOL = 1e-5


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def models() -> dict[str, Path]:
    return {"embed": exported(VL_CKPT, "embed"), "rerank": exported(VL_CKPT, "rerank"),
            "text-rerank": exported(TEXT_CKPT, "rerank")}


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


def test_embed_dataset_bytes_column_dimensions_and_the_default_fetch_policy(cluster, models, image_url):
    """Encoded image bytes in a binary column, MRL dimensions and an instruction; and, under the default
    policy (as the library's), an image URL on a private address is refused in the worker, per row."""
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

    private = [{"id": 0, "text": "a", "image": image_url + SMALL[0]}, {"id": 1, "text": "b", "image": None}]
    out = _by_id(vlrank.ray.embed_dataset(ray.data.from_items(private), model=models["embed"], column="text",
                                          image_column="image").take_all())
    assert out[0]["embedding"] is None and out[0]["error"]["type"] == "ImageFetchError"
    with pytest.raises(ImageFetchError):
        lib.embed(input={"image": image_url + SMALL[0], "text": "a"})
    assert out[1]["error"] is None
    _assert_vector(out[1]["embedding"], lib.embed(input="b")["data"][0]["embedding"])


def test_rerank_dataset_50_rows_equal_the_library(cluster, models, tmp_path):
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
        rows.append({"id": i, "query": f"what is topic {i % 7}?", "documents": docs})
    out = vlrank.ray.rerank_dataset(ray.data.from_items(rows), model=models["rerank"], query_column="query",
                                    documents_column="documents", batch_size=8, concurrency=2).take_all()
    assert len(out) == 50
    got = _by_id(out)
    lib = vlrank.Reranker(str(models["rerank"]))
    for row in rows:
        g = got[row["id"]]
        if row["id"] in (13, 37):
            assert g["scores"] is None
            assert g["error"]["type"] == "ImageDecodeError"
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


@pytest.mark.parametrize("hidden, call", [
    ("ray", "import vlrank.ray"),
    ("ray.serve", "import vlrank.ray; vlrank.ray.serve_app(models={'m': '.'})"),
])
def test_missing_ray_is_one_line_naming_the_extra(hidden, call):
    code = f"import sys; sys.modules[{hidden!r}] = None\n{call}"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("vlrank.ray.RayUnavailableError: vlrank.ray"), r.stderr
    assert 'pip install "vlrank[ray]"' in last
