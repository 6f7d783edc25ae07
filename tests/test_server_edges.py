"""Protocol edges of a real server on 127.0.0.1: a client that writes its whole oversize body before it reads
gets its JSON 413 (not a connection reset), with Python's own http.client."""

from __future__ import annotations

import http.client
import json

import pytest

from server_fixtures import TEXT_RERANK, exported_models, make_facades  # noqa: F401 - fixtures
from server_support import LiveServer

LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def server(exported_models) -> LiveServer:  # noqa: F811 - the fixture
    from vlrank.server import ServerSettings, create_app

    app = create_app(make_facades({TEXT_RERANK: exported_models[TEXT_RERANK]}),
                     settings=ServerSettings(max_body_bytes=LIMIT, warmup=False))
    with LiveServer(app) as live:
        yield live


@pytest.mark.parametrize("size", [LIMIT + 1, 3 * LIMIT // 2, 2 * LIMIT])
def test_an_oversize_content_length_gets_a_413_the_client_can_read(server: LiveServer, size: int) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"model": TEXT_RERANK, "query": "q", "documents": ["x" * size]}).encode()
    assert len(body) > LIMIT
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/v1/rerank", body=body, headers={"content-type": "application/json"})
        r = conn.getresponse()
        answer = json.loads(r.read())
    finally:
        conn.close()
    assert r.status == 413
    assert answer["error"]["code"] == "request_too_large"
    assert r.getheader("connection") == "close"
