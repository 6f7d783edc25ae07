"""The server under load: many concurrent mixed requests (every answer equal to the library's), a burst
against a tiny queue (only 200 / 429 / 503, never a hang), and schemathesis fuzzing from /openapi.json
(no 500). Real server, real facades over the tiny golden models, real HTTP."""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

import httpx
import pytest

from server_fixtures import (  # noqa: F401 - fixtures
    AUTH,
    TEXT_RERANK,
    VL_EMBED,
    VL_RERANK,
    exported_models,
    image_part,
    library,
    live,
    make_facades,
    without_id,
)
from server_support import LiveServer

from vlrank.server.tei import EXACT_ROUTES as TEI_EXACT_ROUTES
from vlrank.server.tei import ROUTES as TEI_ROUTES


def close(a: Any, b: Any, path: str = "") -> None:
    """Equal, except floats may differ in the last bits (rows padded differently in a shared batch)."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), (path, a, b)
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), (path, a.keys(), b.keys())
        for k in a:
            close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def request_pool() -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(7)
    words = "paris berlin france germany capital river museum tower bread cheese train map".split()
    pool: list[tuple[str, dict[str, Any]]] = []
    for i in range(14):
        docs = [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(rng.randint(1, 4))]
        body: dict[str, Any] = {"model": TEXT_RERANK if i % 2 else VL_RERANK, "query": f"query {i} about {words[i % 12]}",
                                "documents": docs}
        if i % 3 == 0:
            body["top_n"] = 1
        if i % 4 == 0:
            body["return_documents"] = False
        if i % 5 == 0:
            body["instruction"] = "Find the matching passage"
        pool.append(("/v1/rerank", body))
    for name in ("palette_64x64.png", "rgb_noise_70x50.png", "gray_40x300.png"):
        pool.append(("/v1/rerank", {"model": VL_RERANK, "query": f"what is in {name}?",
                                    "documents": [{"content": [image_part(name)]}, "a text", {"text": "other"}]}))
        pool.append(("/v1/embeddings", {"model": VL_EMBED, "input": [{"content": [image_part(name),
                                                                                    {"type": "text", "text": name}]}]}))
    for i in range(8):
        body = {"model": VL_EMBED, "input": [" ".join(rng.choices(words, k=rng.randint(1, 10))) for _ in range(i % 3 + 1)]}
        if i % 2:
            body["dimensions"] = 8
        if i % 3 == 0:
            body["encoding_format"] = "base64"
        pool.append(("/v1/embeddings", body))
    return pool


def library_result(library: dict[str, Any], route: str, body: dict[str, Any]) -> dict[str, Any]:
    args = {k: v for k, v in body.items() if k != "model"}
    model = library[body["model"]]
    return without_id(model.rerank(**args) if route == "/v1/rerank" else model.embed(**args))


def test_load_600_mixed_requests_at_concurrency_48_all_equal_to_the_library(live, library):
    pool = request_pool()
    expected = [library_result(library, route, body) for route, body in pool]
    rng = random.Random(11)
    order = [rng.randrange(len(pool)) for _ in range(600)]
    concurrency = 48

    async def main() -> list[tuple[int, httpx.Response]]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=live.url, headers=AUTH, timeout=120, limits=limits) as client:
            todo = iter(order)
            out: list[tuple[int, httpx.Response]] = []

            async def worker() -> None:
                for k in todo:
                    route, body = pool[k]
                    out.append((k, await client.post(route, json=body)))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return out

    t0 = time.perf_counter()
    responses = asyncio.run(main())
    elapsed = time.perf_counter() - t0
    assert len(responses) == 600
    bad = [(k, r.status_code, r.text[:200]) for k, r in responses if r.status_code != 200]
    assert not bad, bad[:5]
    for k, r in responses:
        close(without_id(r.json()), expected[k], f"pool[{k}]")
    metrics = httpx.get(live.url + "/metrics").text
    # Concurrent requests really shared model batches: some batches held more than one request.
    lines = metrics.splitlines()
    count = sum(float(x.split()[-1]) for x in lines if x.startswith("vlrank_batch_requests_count"))
    singles = sum(float(x.split()[-1]) for x in lines if x.startswith('vlrank_batch_requests_bucket{le="1.0"'))
    total = sum(float(x.split()[-1]) for x in lines if x.startswith("vlrank_batch_requests_sum"))
    assert count - singles >= 10, (count, singles)
    print(f"600 mixed requests in {elapsed:.1f} s, {total / count:.1f} requests per model batch")


def test_burst_against_a_tiny_queue_gets_only_200_429_503_and_never_hangs(exported_models):
    from vlrank.server import ServerSettings, create_app

    app = create_app(make_facades({TEXT_RERANK: exported_models[TEXT_RERANK]}),
                     settings=ServerSettings(max_queue=2, max_batch_requests=1, retry_after_s=2))
    body = {"model": TEXT_RERANK, "query": "q", "documents": [f"document {i} " * 10 for i in range(30)]}

    async def burst(url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post("/v1/rerank", json=body) for _ in range(64)))

    with LiveServer(app) as server:
        t0 = time.perf_counter()
        responses = asyncio.run(asyncio.wait_for(burst(server.url), timeout=90))
        elapsed = time.perf_counter() - t0
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 429, 503}, statuses
        assert 200 in statuses and 429 in statuses, statuses
        for r in responses:
            body_json = r.json()  # every answer is valid JSON
            if r.status_code != 200:
                assert body_json["error"]["code"] in ("queue_full", "shutting_down", "model_not_ready")
                assert r.headers["retry-after"] == "2"
        rejected = httpx.get(server.url + "/metrics").text
        assert f'vlrank_rejected_requests_total{{model="{TEXT_RERANK}"}} {statuses.count(429)}.0' in rejected
        # afterwards the server is healthy and serves normally
        assert httpx.get(server.url + "/health").status_code == 200
        assert httpx.post(server.url + "/v1/rerank", json=body).status_code == 200
    assert elapsed < 60


def test_schemathesis_fuzzing_from_openapi_finds_no_500(live):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/rerank", "/v1/embeddings", "/v1/models", "/health", "/metrics"}
    served = {"/v1/rerank": [VL_RERANK, TEXT_RERANK], "/v1/embeddings": [VL_EMBED]}
    failures: list[str] = []
    seen: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + 60  # the whole fuzz run is bounded

    for op in operations:
        # GETs without parameters have no invalid form to generate, so they are fuzzed positively only.
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if op.method.upper() == "POST" else (
            GenerationMode.POSITIVE,)
        for mode in modes:
            strategy = st.tuples(op.as_strategy(generation_mode=mode), st.integers(0, 3))
            examples = 120 if op.method.upper() == "POST" else 10

            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(drawn=strategy)
            def check(drawn: tuple[Any, int]) -> None:
                case, pick = drawn
                if time.monotonic() > deadline:
                    return
                # Most random model ids are unknown (404); point most bodies at a served model so the fuzzer
                # reaches the input parser, the scheduler and the model.
                if isinstance(case.body, dict) and op.path in served and pick:
                    case.body["model"] = served[op.path][pick % len(served[op.path])]
                response = case.call(base_url=live.url, headers=AUTH, timeout=60)
                key = (op.path, response.status_code)
                seen[key] = seen.get(key, 0) + 1
                if response.status_code >= 500:
                    failures.append(f"{op.method} {op.path} {case.body!r:.300} -> {response.status_code} "
                                    f"{response.text[:300]}")
                elif response.status_code >= 400:
                    body = response.json()
                    err = body["error"]
                    if isinstance(err, str):  # TEI's own error body: {"error": str, "error_type": str}
                        assert op.path in TEI_ROUTES | TEI_EXACT_ROUTES and isinstance(body["error_type"], str), body
                    else:  # the server's (also before routing: 401 / 413 / 408 from the middleware)
                        assert isinstance(err["message"], str)
                    assert "Traceback" not in response.text

            check()
    assert not failures, failures[:5]
    assert seen.get(("/v1/rerank", 200), 0) > 5 and seen.get(("/v1/embeddings", 200), 0) > 5, seen
    assert seen.get(("/v1/rerank", 400), 0) > 5, seen
