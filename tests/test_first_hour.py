"""The first hour of a new user (issue 21): one way to name a model (export dir, checkpoint dir, hub id)
with export options on first use, the Qwen3-Embedding trap, every error class importable from ``vlrank``,
ONNX Runtime load failures that say what failed, and the project basics (version, LICENSE, CHANGELOG).

A hub download is stood in for by a local copy (``huggingface_hub.snapshot_download`` patched to copy a
golden checkpoint): the network is replaced, the code under test is not."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.numpy import load_file, save_file

import vlrank
from export_support import TEXT_CKPT, VL_CKPT, exported
from vlrank.engine import export_cache
from vlrank.engine.sessions import load_failure
from vlrank.errors import InvalidInputError, ModelDirectoryError, RuntimeUnavailableError, VlrankError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("VLRANK_CACHE", str(root))
    return root


class Hub:
    """A stand-in for the hub: repo id -> a local checkpoint; a download is a copy, and is recorded."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repos: dict[str, Path] = {}
        self.downloads: list[str] = []

    def snapshot_download(self, repo_id: str, **_: object) -> str:
        self.downloads.append(repo_id)
        out = self.root / repo_id.replace("/", "--")
        if not out.exists():
            shutil.copytree(self.repos[repo_id], out)
        return str(out)


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hub:
    import huggingface_hub

    stand_in = Hub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", stand_in.snapshot_download)
    return stand_in


def _named_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---- one way to name a model, export options on first use -----------------------------------------------

def test_a_checkpoint_is_exported_once_per_options_and_scores_like_its_export(cache: Path) -> None:
    want = vlrank.Reranker(str(exported(TEXT_CKPT, "rerank"))).rerank("q", ["a", "b"], raw_scores=True)
    rr = vlrank.Reranker(str(TEXT_CKPT))
    assert rr.rerank("q", ["a", "b"], raw_scores=True)["results"] == want["results"]
    int8 = vlrank.Reranker(str(TEXT_CKPT), quantize="int8")
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 2 and {e.rsplit("-", 1)[1] for e in entries} == {"int8", "noquant"}
    assert json.loads((int8.runner.dir / "vlrank.json").read_text())["quantization"]["scheme"] == "int8"
    again = vlrank.Reranker(str(TEXT_CKPT), quantize="int8")  # the same options: the cached export
    assert again.runner.dir == int8.runner.dir and sorted(p.name for p in cache.iterdir()) == entries


def test_a_hub_id_is_downloaded_and_exported_with_the_options(cache: Path, hub: Hub) -> None:
    hub.repos["acme/Qwen3-VL-Embedding-tiny"] = VL_CKPT
    em = vlrank.Embedder("acme/Qwen3-VL-Embedding-tiny", dtype="float16")
    manifest = json.loads((em.runner.dir / "vlrank.json").read_text())
    assert manifest["name"] == "acme/Qwen3-VL-Embedding-tiny" and manifest["task"] == "embed"
    assert manifest["dtype"] == "float16" and manifest["precision"] == "float32"
    assert len(em.embed(["hello"])["data"][0]["embedding"]) > 0
    assert hub.downloads == ["acme/Qwen3-VL-Embedding-tiny"]


def test_export_options_are_checked_before_any_work(cache: Path) -> None:
    for kwargs, fld in (({"dtype": "int8"}, "dtype"), ({"precision": "fp16"}, "precision"),
                        ({"quantize": "int3"}, "quantize"), ({"threads": 0}, "threads")):
        with pytest.raises(InvalidInputError) as err:
            vlrank.Reranker(str(TEXT_CKPT), **kwargs)
        assert err.value.field == fld and "pass" in str(err.value)
    assert not cache.exists()


def test_threads_sets_onnx_runtimes_intra_op_pool(cache: Path) -> None:
    rr = vlrank.Reranker(str(exported(VL_CKPT, "rerank")), threads=1)
    assert rr.runner.session.get_session_options().intra_op_num_threads == 1
    assert rr.tower().session.get_session_options().intra_op_num_threads == 1


def test_a_slow_first_use_export_says_so_on_stderr(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(export_cache, "PROGRESS_AFTER_S", 0.0)
    vlrank.Reranker(str(TEXT_CKPT))
    err = capfd.readouterr().err
    assert re.search(r"vlrank: exporting tiny-qwen3-text \(rerank, float32-float32-noquant\) into .*first use",
                     err), err
    assert re.search(r"exporting tiny-qwen3-text .*: done in \d+\.\d s", err), err


# ---- the export trap --------------------------------------------------------------------------------------

def _bare_qwen3_model(src: Path, dst: Path) -> Path:
    """A Qwen3Model checkpoint (Qwen3-Embedding's layout): language-model tensors without 'model.', no head."""
    _named_copy(src, dst)
    tensors = load_file(str(src / "model.safetensors"))
    bare = {k.removeprefix("model."): v for k, v in tensors.items() if k != "lm_head.weight"}
    save_file(bare, str(dst / "model.safetensors"))
    return dst


@pytest.mark.parametrize("task", [None, "rerank"])
def test_a_qwen3_embedding_text_checkpoint_is_refused(tmp_path: Path, task: str | None) -> None:
    for ckpt in (_named_copy(TEXT_CKPT, tmp_path / "Qwen3-Embedding-tiny"),
                 _bare_qwen3_model(TEXT_CKPT, tmp_path / "tiny-bare")):
        with pytest.raises(ModelDirectoryError) as err:
            vlrank.export(ckpt, tmp_path / f"out-{ckpt.name}", task=task, progress=False)
        message = str(err.value)
        assert "Qwen3-Embedding (text)" in message and "Qwen3-VL-Embedding" in message, message
        assert "Qwen3-Reranker" in message and err.value.field == "model"
        assert not (tmp_path / f"out-{ckpt.name}" / "vlrank.json").exists()


def test_what_config_and_name_cannot_tell_asks_for_task(tmp_path: Path) -> None:
    ckpt = _named_copy(VL_CKPT, tmp_path / "my-model")
    with pytest.raises(ModelDirectoryError) as err:
        vlrank.export(ckpt, tmp_path / "out", progress=False)
    assert err.value.field == "task" and "task='rerank' or task='embed'" in str(err.value)
    # Reranker / Embedder name their task themselves; vlrank.export takes it as task=
    assert json.loads((vlrank.export(ckpt, tmp_path / "out", task="embed", progress=False) / "vlrank.json")
                      .read_text())["task"] == "embed"


# ---- errors ---------------------------------------------------------------------------------------------

def _error_classes() -> set[type]:
    import vlrank.export  # noqa: F401 - every module that defines an error class
    import vlrank.server  # noqa: F401

    seen: set[type] = set()
    todo = [VlrankError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("vlrank") and cls not in seen:
            seen.add(cls)
            todo.extend(cls.__subclasses__())
    return seen


def test_every_error_class_is_importable_from_vlrank_and_listed_in_readme() -> None:
    readme = (REPO / "README.md").read_text()
    classes = _error_classes()
    assert {"VideoDecodeError", "VideoTooLongError", "MissingExtraError", "OnnxRuntimeInstallError"} <= {
        c.__name__ for c in classes}
    for cls in classes:
        if cls.__module__ == "vlrank.ray":  # vlrank.ray.RayUnavailableError: importing vlrank.ray raises it
            assert f"`vlrank.ray.{cls.__name__}`" in readme
            continue
        assert getattr(vlrank, cls.__name__) is cls and cls.__name__ in vlrank.__all__, cls
        assert f"`{cls.__name__}`" in readme, cls.__name__


def test_a_damaged_onnx_file_says_so(tmp_path: Path) -> None:
    model = shutil.copytree(exported(TEXT_CKPT, "rerank"), tmp_path / "damaged")
    raw = (model / "decoder.onnx").read_bytes()
    (model / "decoder.onnx").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ModelDirectoryError) as err:
        vlrank.Reranker(str(model))
    assert "damaged or incomplete" in str(err.value) and "re-export" in str(err.value)


@pytest.mark.parametrize("ort_message, cls, words", [
    ("libcudnn.so.9: cannot open shared object file: No such file or directory", RuntimeUnavailableError, "CUDA"),
    ("CUDA failure 2: out of memory ; GPU=0", RuntimeUnavailableError, "out of memory"),
    ("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from m.onnx failed:Protobuf parsing failed.",
     ModelDirectoryError, "damaged"),
])
def test_load_failures_name_their_cause(ort_message: str, cls: type, words: str) -> None:
    # ONNX Runtime's own messages for a missing cuDNN, an exhausted GPU and a truncated file
    err = load_failure(Path("m.onnx"), RuntimeError(ort_message))
    assert type(err) is cls and words in str(err)
    assert ("re-export" in str(err)) == (cls is ModelDirectoryError)


# ---- basics ---------------------------------------------------------------------------------------------

def test_version_license_and_changelog() -> None:
    run = subprocess.run([sys.executable, "-m", "vlrank.cli", "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == f"vlrank {vlrank.__version__}"
    license_text = (REPO / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert f"## {vlrank.__version__}" in (REPO / "CHANGELOG.md").read_text()
    assert 'license = { text = "Apache-2.0" }' in (REPO / "pyproject.toml").read_text()


def test_task_keywords_are_keyword_only() -> None:
    params = inspect.signature(vlrank.Reranker.__init__).parameters
    for name in ("dtype", "precision", "quantize", "threads"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
