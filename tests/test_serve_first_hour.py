"""`vlrank serve` for a new user (issue 21): a checkpoint directory and a hub id served like an export, the
loading flags reaching every model, --help listing every route and what --api-key guards, and a model that
fails to load ending the process with a one-line reason (unless --keep-going). Real servers on 127.0.0.1;
the hub download is a local copy (the network stood in for, not the code under test)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from export_support import TEXT_CKPT, VL_CKPT, exported
from server_support import LiveServer
from test_first_hour import Hub, hub  # noqa: F401 - the hub stand-in fixture
from vlrank.cli import build_parser
from vlrank.errors import ModelDirectoryError
from vlrank.inputs import FetchPolicy
from vlrank.server import ServerSettings, create_app, spec_from_path
from vlrank.server.models import LoadOptions

POLICY = FetchPolicy(allow_local_files=False)


def _serve(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vlrank.cli", "serve", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _url(proc: subprocess.Popen, lines: list[str]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if m := re.search(r"running on (http://127\.0\.0\.1:\d+)", line):
            return m.group(1)
        if not line and proc.poll() is not None:
            break
    raise AssertionError("".join(lines))


def test_serve_a_checkpoint_directory_with_the_loading_flags(tmp_path: Path) -> None:
    env = {**os.environ, "VLRANK_CACHE": str(tmp_path / "cache")}
    proc = _serve("--model", f"rr={TEXT_CKPT}", "--intra-op-threads", "1",
                  "--max-length", "64", "--providers", "cpu", env=env)
    lines: list[str] = []
    try:
        url = _url(proc, lines)
        deadline = time.monotonic() + 120
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            time.sleep(0.1)
        r = httpx.post(url + "/v1/rerank", json={"model": "rr", "query": "q", "documents": ["a", "b " * 200]})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["total_tokens"] <= 2 * 64  # --max-length truncates each pair
    finally:
        proc.send_signal(2)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + out
    assert len(list((tmp_path / "cache").iterdir())) == 1  # exported once into the cache


def test_loading_options_reach_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLRANK_CACHE", str(tmp_path / "cache"))
    args = build_parser().parse_args(["serve", "--model", "x=y", "--providers", "cpu", "--max-length", "64",
                                      "--min-pixels", "8192", "--max-pixels", "200000", "--intra-op-threads", "2",
                                      "--quantize", "int8", "--keep-going"])
    assert args.keep_going and args.threads == 2
    options = LoadOptions(providers=args.providers, max_length=args.max_length, min_pixels=args.min_pixels,
                          max_pixels=args.max_pixels, threads=args.threads, dtype=args.dtype,
                          precision=args.precision, quantize=args.quantize)
    with pytest.raises(ModelDirectoryError, match="serve --task NAME=TASK"):
        spec_from_path("vl", VL_CKPT, policy=POLICY, options=options)  # "tiny-qwen3-vl": rerank or embed?
    model = spec_from_path("vl", VL_CKPT, policy=POLICY, options=options, task="rerank")
    assert model.kind == "rerank"
    loaded = model.loader()
    assert (loaded.max_length, loaded.min_pixels, loaded.max_pixels) == (64, 8192, 200000)
    assert loaded.runner.session.get_session_options().intra_op_num_threads == 2
    assert loaded.runner.manifest.quantization is not None


def test_serve_a_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: Hub) -> None:
    monkeypatch.setenv("VLRANK_CACHE", str(tmp_path / "cache"))
    hub.repos["acme/Qwen3-Reranker-tiny"] = TEXT_CKPT
    spec = spec_from_path("rr", "acme/Qwen3-Reranker-tiny", policy=POLICY)
    assert hub.downloads == []  # nothing is downloaded before the server starts
    with LiveServer(create_app({"rr": spec}, settings=ServerSettings())) as server:
        r = httpx.post(server.url + "/v1/rerank", json={"model": "rr", "query": "q", "documents": ["a", "b"]})
        assert r.status_code == 200 and len(r.json()["results"]) == 2
    assert hub.downloads[0] == "acme/Qwen3-Reranker-tiny"


def test_a_path_that_is_no_model_fails_before_the_port(tmp_path: Path) -> None:
    with pytest.raises(ModelDirectoryError, match="neither an exported model directory"):
        spec_from_path("x", tmp_path, policy=POLICY)
    with pytest.raises(ModelDirectoryError, match="not a hub id"):
        spec_from_path("x", tmp_path / "missing" / "deeper", policy=POLICY)


def _damaged_export(tmp_path: Path) -> Path:
    model = shutil.copytree(exported(TEXT_CKPT, "rerank"), tmp_path / "damaged")
    raw = (model / "decoder.onnx").read_bytes()
    (model / "decoder.onnx").write_bytes(raw[: len(raw) // 3])
    return model


def test_a_model_that_fails_to_load_ends_serve_with_one_line(tmp_path: Path) -> None:
    proc = _serve("--model", f"bad={_damaged_export(tmp_path)}", env=dict(os.environ))
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 1, out
    reason = [line for line in out.splitlines() if line.startswith("vlrank serve: error:")]
    assert len(reason) == 1 and "model 'bad' failed to load" in reason[0] and "damaged" in reason[0], out


def test_keep_going_serves_on_with_health_failed(tmp_path: Path) -> None:
    proc = _serve("--model", f"bad={_damaged_export(tmp_path)}", "--keep-going", env=dict(os.environ))
    lines: list[str] = []
    try:
        url = _url(proc, lines)
        deadline = time.monotonic() + 120
        while (health := httpx.get(url + "/health")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert health.status_code == 503 and health.json()["models"] == {"bad": "failed"}
        assert proc.poll() is None
    finally:
        proc.send_signal(2)
        proc.communicate(timeout=60)


def test_help_lists_every_route_and_what_the_api_key_guards() -> None:
    from vlrank.server.middleware import AuthMiddleware

    helped = subprocess.run([sys.executable, "-m", "vlrank.cli", "serve", "--help"], capture_output=True, text=True)
    text = helped.stdout
    app = create_app({"rr": spec_from_path("rr", exported(TEXT_CKPT, "rerank"), policy=POLICY)},
                     settings=ServerSettings(api_key="k"))
    guarded = next(m.kwargs["protected_prefix"] for m in app.user_middleware if m.cls is AuthMiddleware)
    routes = set(app.openapi()["paths"]) | {"/openapi.json"}  # routers included whole have no .path of their own
    listing = text[text.index("\nroutes ("):].splitlines()
    for path in routes:
        line = next((ln for ln in listing if re.search(rf"\s{re.escape(path)}(\s|$)", ln)), None)
        assert line is not None, f"{path} is not in serve --help"
        marked = line.lstrip().startswith("*") or f"{path} *" in line
        assert marked == path.startswith(guarded), (path, line)
    for flag in ("--providers", "--max-length", "--min-pixels", "--max-pixels", "--max-image-pixels",
                 "--intra-op-threads", "--keep-going", "--dtype", "--precision", "--quantize"):
        assert flag in text
