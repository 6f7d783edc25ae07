"""The command line as users run it: ``python -m vlrank.cli ...`` in a subprocess. Success prints JSON on
stdout; every failure exits non-zero with one ``vlrank: error: <field>...`` line on stderr, no traceback and
nothing on stdout; every sub-command's ``--help`` shows examples.

Owner: QA. Cases marked "regression" crashed with a traceback before the QA fixes.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from export_support import TEXT_CKPT, VL_CKPT, exported
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str | Path, env_extra: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    # The installed vlrank runs (CI installs a wheel; the source tree has no compiled extension).
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "vlrank.cli", *map(str, args)], capture_output=True, env=env,
                          timeout=timeout)


def assert_fails(run: subprocess.CompletedProcess, *needles: str, rc: int = 1) -> str:
    out, err = run.stdout.decode(), run.stderr.decode("utf-8", "replace")
    assert run.returncode == rc, (run.returncode, err)
    assert "Traceback" not in err, err
    assert out == "", out
    for needle in needles:
        assert needle in err, err
    return err


def ok_json(run: subprocess.CompletedProcess) -> dict:
    err = run.stderr.decode("utf-8", "replace")
    assert run.returncode == 0, err
    assert "Traceback" not in err
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def text_model() -> Path:
    return exported(TEXT_CKPT, "rerank")


@pytest.fixture(scope="module")
def vl_model() -> Path:
    return exported(VL_CKPT, "rerank")


@pytest.fixture(scope="module")
def embed_model() -> Path:
    return exported(VL_CKPT, "embed")


# ---- help ------------------------------------------------------------------------------------------------------
def test_top_level_help_lists_commands() -> None:
    run = cli("--help")
    assert run.returncode == 0
    for name in ("demo", "rerank", "embed", "export", "serve"):
        assert name in run.stdout.decode()
    bare = cli()  # no sub-command: usage on stderr, exit 2
    assert bare.returncode == 2 and b"Traceback" not in bare.stderr


@pytest.mark.parametrize("command", ["demo", "rerank", "embed", "export", "serve", "tokens"])
def test_subcommand_help_has_examples(command: str) -> None:
    """regression (rerank, embed, export): their --help had no examples."""
    run = cli(command, "--help")
    text = run.stdout.decode()
    assert run.returncode == 0, run.stderr
    assert "examples:" in text and f"vlrank {command}" in text.split("examples:", 1)[1], text


# ---- success ----------------------------------------------------------------------------------------------------
def test_rerank_texts_and_jsonl_with_image(tmp_path: Path, vl_model: Path) -> None:
    png = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (220, 20, 20)).save(png)
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (20, 20, 220)).save(buf, format="PNG")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps(d) for d in [
        "plain text document",
        {"content": [{"type": "image_url", "image_url": {"url": png.as_uri()}}]},
        {"content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                          + base64.b64encode(buf.getvalue()).decode()}},
                     {"type": "text", "text": "a blue square"}]},
    ]) + "\n\n", encoding="utf-8")
    out = ok_json(cli("rerank", "--model", vl_model, "--query", "a red image", "--document", "é東京",
                      "--documents", docs, "--top-n", "3"))
    assert out["object"] == "list" and len(out["results"]) == 3
    scores = [r["relevance_score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    full = ok_json(cli("rerank", "--model", vl_model, "--query", "a red image", "--document", "é東京",
                       "--documents", docs, "--no-documents"))
    assert sorted(r["index"] for r in full["results"]) == [0, 1, 2, 3]
    assert all("document" not in r for r in full["results"])
    # the CLI reports exactly what the library returns for the same inputs (image tokens included)
    import vlrank

    docs_list = ["é東京"] + [json.loads(line) for line in docs.read_text(encoding="utf-8").splitlines() if line]
    lib = vlrank.Reranker(vl_model).rerank("a red image", docs_list)
    assert full["usage"] == lib["usage"]
    assert [(r["index"], round(r["relevance_score"], 6)) for r in full["results"]] == [
        (r["index"], round(r["relevance_score"], 6)) for r in lib["results"]]


def test_embed_float_and_base64(embed_model: Path) -> None:
    out = ok_json(cli("embed", "--model", embed_model, "first", "", "third", "--dimensions", "8"))
    assert [d["index"] for d in out["data"]] == [0, 1, 2]
    assert all(len(d["embedding"]) == 8 for d in out["data"])
    b64 = ok_json(cli("embed", "--model", embed_model, "first", "--encoding-format", "base64"))
    assert len(base64.b64decode(b64["data"][0]["embedding"])) % 4 == 0


# ---- failures ---------------------------------------------------------------------------------------------------
def test_rerank_failures(tmp_path: Path, text_model: Path, vl_model: Path) -> None:
    m = text_model
    assert_fails(cli("rerank", "--model", m, "--query", "q"), "vlrank: error:", "--document")
    assert_fails(cli("rerank", "--model", m, "--query", "q", "--document", "a", "--top-n", "0"), "top_n")
    assert_fails(cli("rerank", "--model", m, "--query", "q", "--document", "a", "--top-n", "x"), "--top-n", rc=2)
    assert_fails(cli("rerank", "--model", tmp_path / "nope", "--query", "q", "--document", "a"), "no such directory")
    (tmp_path / "file").write_text("x")
    # regression: a model path that is a file crashed with NotADirectoryError
    assert_fails(cli("rerank", "--model", tmp_path / "file", "--query", "q", "--document", "a",
                     env_extra={"VLRANK_CACHE": str(tmp_path / "cache")}), "not a directory")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\nnot json\n')
    assert_fails(cli("rerank", "--model", m, "--query", "q", "--documents", bad), "--documents", "bad.jsonl:2")
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('"café"\n'.encode("latin-1"))
    # regression: a non-UTF-8 JSON-lines file crashed with UnicodeDecodeError
    assert_fails(cli("rerank", "--model", m, "--query", "q", "--documents", latin1), "--documents", "UTF-8")
    objs = tmp_path / "objs.jsonl"
    objs.write_text('"fine"\n{"foo": 1}\n')
    assert_fails(cli("rerank", "--model", m, "--query", "q", "--documents", objs), "documents[1]")
    broken = tmp_path / "broken.png"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
    broken.write_bytes(buf.getvalue()[:60])
    imgs = tmp_path / "imgs.jsonl"
    imgs.write_text(json.dumps({"content": [{"type": "image_url", "image_url": {"url": str(broken)}}]}) + "\n")
    assert_fails(cli("rerank", "--model", vl_model, "--query", "q", "--documents", imgs),
                 "documents[0].content[0].image_url.url")
    # a non-UTF-8 argv byte arrives as a lone surrogate: refused, named
    run = subprocess.run([sys.executable, "-m", "vlrank.cli", "rerank", "--model", str(m), "--query", b"caf\xe9",
                          "--document", "a"], capture_output=True, env=dict(os.environ))
    assert_fails(run, "query")


def test_embed_failures(embed_model: Path, text_model: Path) -> None:
    assert_fails(cli("embed", "--model", embed_model), "input")
    assert_fails(cli("embed", "--model", embed_model, "a", "--dimensions", "0"), "dimensions")
    assert_fails(cli("embed", "--model", embed_model, "a", "--encoding-format", "hex"), "--encoding-format", rc=2)
    assert_fails(cli("embed", "--model", embed_model, "a", "--max-length", "0"), "max_length")
    assert_fails(cli("embed", "--model", text_model, "a"), "Reranker")
    assert_fails(cli("embed", "--model", embed_model, "a", "--providers", "tpu"), "providers")


def test_export_failures(tmp_path: Path) -> None:
    assert_fails(cli("export", tmp_path / "nope", tmp_path / "out"), "no such directory")
    (tmp_path / "file").write_text("x")
    # regression: exporting under a path whose parent is a file crashed with NotADirectoryError
    assert_fails(cli("export", TEXT_CKPT, tmp_path / "file" / "out", "--quiet"), "out_dir")
    assert_fails(cli("export", TEXT_CKPT, tmp_path / "out", "--task", "embed", "--quiet"), "task")
    assert_fails(cli("export", TEXT_CKPT, tmp_path / "out", "--dtype", "int8"), "--dtype", rc=2)


def test_export_success_prints_summary(tmp_path: Path) -> None:
    out = ok_json(cli("export", TEXT_CKPT, tmp_path / "rr", "--quiet", "--name", "my-rr"))
    assert out["name"] == "my-rr" and out["task"] == "rerank" and (tmp_path / "rr" / "vlrank.json").is_file()


def test_closed_stdout_and_full_disk(tmp_path: Path, text_model: Path) -> None:
    """regression: `vlrank rerank ... | head` and a full disk ended in a BrokenPipeError / OSError traceback."""
    docs = tmp_path / "long.jsonl"
    docs.write_text("\n".join(json.dumps(f"{i} " + "long text " * 2000) for i in range(20)) + "\n")
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "vlrank.cli", "rerank", "--model", str(text_model), "--query", "q",
                             "--documents", str(docs), "--max-length", "64"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10) == b'{"id": "re'
    proc.stdout.close()  # the reader goes away after 10 bytes of a ~400 KB answer
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "Exception ignored" not in err, err
    if Path("/dev/full").exists():
        with open("/dev/full", "wb") as full:
            run = subprocess.run([sys.executable, "-m", "vlrank.cli", "embed", "--model", str(exported(VL_CKPT, "embed")),
                                  "a"], stdout=full, stderr=subprocess.PIPE, env=env, timeout=120)
        err = run.stderr.decode()
        assert run.returncode == 1 and "Traceback" not in err and "Exception ignored" not in err, err
        assert "vlrank: error: stdout" in err
