"""Precision is a property of the export and the provider: a float16 / bfloat16 export is refused, with the
export to make, wherever CUDA cannot run it (never a silent slow CPU path); with CUDA it gets the CUDA EP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vlrank
from export_support import TEXT_CKPT
from vlrank.engine.sessions import CPU, CUDA, providers_for_precision
from vlrank.errors import InvalidInputError, ModelDirectoryError
from vlrank.export import export


@pytest.fixture(scope="module")
def half_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("half") / "text-fp16"
    return export(TEXT_CKPT, out, task="rerank", dtype="float16", precision="float16", progress=False)


def test_half_export_without_cuda_is_refused_with_the_export_to_make(half_text: Path) -> None:
    import onnxruntime as ort

    assert CUDA not in ort.get_available_providers()  # this CPU test machine
    with pytest.raises(ModelDirectoryError, match=r"vlrank export SRC OUT --precision float32") as info:
        vlrank.Reranker(half_text)
    assert info.value.field == "model"
    assert "float16" in str(info.value) and "onnxruntime-gpu" in str(info.value)


@pytest.mark.parametrize("providers", ["cpu", ["CPUExecutionProvider"]])
def test_half_export_with_cpu_providers_names_the_providers_field(half_text: Path, providers) -> None:
    with pytest.raises(InvalidInputError, match="--precision float32") as info:
        vlrank.Reranker(half_text, providers=providers)
    assert info.value.field == "providers"
    assert "providers='cuda'" in str(info.value)


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
@pytest.mark.parametrize("providers", [None, "auto", "cuda", [CUDA, CPU]])
def test_half_export_with_cuda_available_runs_on_the_cuda_ep(precision: str, providers) -> None:
    assert providers_for_precision(precision, providers, available=[CUDA, CPU]) == [CUDA, CPU]


def test_half_export_refusals_without_cuda_in_the_runtime() -> None:
    with pytest.raises(ModelDirectoryError, match="--precision float32"):
        providers_for_precision("bfloat16", "cuda", available=[CPU])
    with pytest.raises(InvalidInputError) as info:
        providers_for_precision("bfloat16", "tpu", available=[CUDA, CPU])
    assert info.value.field == "providers"


def test_float32_export_keeps_the_cpu_path() -> None:
    assert providers_for_precision("float32", "cpu", available=[CPU]) == [CPU]


def _cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlrank.cli", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


def test_cli_export_precision(tmp_path: Path) -> None:
    help_text = _cli("export", "--help").stdout
    assert "--precision" in help_text and "CUDA" in help_text
    run = _cli("export", TEXT_CKPT, tmp_path / "rr16", "--precision", "float16", "--quiet")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert (summary["precision"], summary["dtype"], summary["provider"]) == ("float16", "float16", "cuda")
    # A half graph with float32 weights is not a thing: the CLI says which dtype to pass.
    bad = _cli("export", TEXT_CKPT, tmp_path / "bad", "--precision", "bfloat16", "--dtype", "float32", "--quiet")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "dtype" in bad.stderr, bad.stderr
    assert _cli("export", TEXT_CKPT, tmp_path / "x", "--precision", "int8").returncode == 2
