"""benches/gpu/run.sh: on a machine without CUDA it refuses clearly; its --cpu mode runs every check
(golden cases, throughput, memory at length) on the CPU EP with tiny shapes and reports them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "benches" / "gpu" / "run.sh"


def _run(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, **(env_extra or {})}
    return subprocess.run(["bash", str(RUN), *args], capture_output=True, text=True, env=env, timeout=1800)


def test_without_cuda_it_fails_clearly(tmp_path: Path) -> None:
    import onnxruntime as ort

    has_gpu = shutil.which("nvidia-smi") is not None and "CUDAExecutionProvider" in ort.get_available_providers()
    if has_gpu:
        pytest.skip("this test describes a machine without CUDA; this one has it")
    run = _run("--workdir", str(tmp_path))
    assert run.returncode == 2
    assert "no CUDA" in run.stderr and "--cpu" in run.stderr, run.stderr
    assert run.stdout == ""
    assert _run("--bogus").returncode == 2


def test_cpu_mode_runs_every_check(tmp_path: Path) -> None:
    results_md = (REPO / "benches" / "RESULTS.md").read_text()
    run = _run("--cpu", "--workdir", str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    by = {r["check"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert set(by) == {"golden", "throughput", "memory", "prefix"}
    golden = by["golden"]
    assert golden["passed"] and golden["provider"] == "cpu"
    f32 = golden["precisions"]["float32"]
    assert f32["scores"] >= 40 and f32["max_abs_delta"] <= 1e-4  # every text and image golden rerank score
    tp = by["throughput"]
    assert tp["vlrank"]["text"]["docs_per_s"] > 0 and tp["vlrank"]["images"]["docs_per_s"] > 0
    assert tp["vlrank"]["text"]["tokens"] > 60
    mem = by["memory"]
    assert mem["tokens"] > 900 and mem["rss_mib_above_loaded"] >= 0 and mem["estimate_mib"] > 0
    prefix = by["prefix"]
    assert prefix["passed"] and prefix["max_abs_delta"] <= 1e-4 and prefix["on"]["docs_per_s"] > 0
    assert "## bench_gpu" in run.stdout and "Shared prompt prefix" in run.stdout and "float32 export on cpu" in run.stdout
    assert (REPO / "benches" / "RESULTS.md").read_text() == results_md  # a CPU run writes no GPU numbers
