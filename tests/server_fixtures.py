"""Session fixtures of the server tests (owner: server): tiny golden models exported once, facades,
and a live server over them. Imported by tests/test_server*.py with ``from server_fixtures import *``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from server_support import LiveServer

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN = REPO_ROOT / "tests" / "golden"
KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
# Names the served models get (and the library facades used as the expected results).
VL_RERANK, TEXT_RERANK, VL_EMBED = "vl-rerank", "text-rerank", "vl-embed"


def data_url(name: str) -> str:
    path = GOLDEN / "images" / name
    mime = "jpeg" if path.suffix == ".jpg" else path.suffix[1:]
    return f"data:image/{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def image_part(name: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": data_url(name)}}


def without_id(result: dict[str, Any]) -> dict[str, Any]:
    """Rerank ids are random per call; everything else must be equal."""
    return {k: v for k, v in result.items() if k != "id"}


@pytest.fixture(scope="session")
def exported_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from vlrank.export import export

    root = tmp_path_factory.mktemp("server-models")
    models = GOLDEN / "models"
    return {
        VL_RERANK: export(models / "tiny-qwen3-vl", root / VL_RERANK, task="rerank", progress=False),
        TEXT_RERANK: export(models / "tiny-qwen3-text", root / TEXT_RERANK, task="rerank", progress=False),
        VL_EMBED: export(models / "tiny-qwen3-vl", root / VL_EMBED, task="embed", progress=False),
    }


def make_facades(paths: dict[str, Path]) -> dict[str, Any]:
    """Fresh vlrank.Reranker / vlrank.Embedder objects named like the served ids."""
    import vlrank
    from vlrank.server import manifest_task
    from vlrank.server.models import facade_kwargs
    from vlrank.inputs import FetchPolicy

    out = {}
    for name, path in paths.items():
        cls = vlrank.Reranker if manifest_task(path) == "rerank" else vlrank.Embedder
        out[name] = cls(str(path), **facade_kwargs(name=name, policy=FetchPolicy(allow_local_files=False)))
    return out


@pytest.fixture(scope="session")
def library(exported_models: dict[str, Path]) -> dict[str, Any]:
    """The library facades the server's answers are compared with (separate objects from the server's)."""
    return make_facades(exported_models)


@pytest.fixture(scope="session")
def live(exported_models: dict[str, Path]) -> LiveServer:
    """A real server (auth on, 50 documents max, 1 MiB bodies) over the three tiny models."""
    from vlrank.server import ServerSettings, create_app

    app = create_app(make_facades(exported_models),
                     settings=ServerSettings(api_key=KEY, max_documents=50, max_body_bytes=1024 * 1024))
    server = LiveServer(app).start()
    yield server
    server.stop()
