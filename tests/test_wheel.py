"""The release wheel as users get it: installed into fresh venvs with no Rust toolchain on PATH.

* the wheel is abi3 and manylinux_2_28 (or older): it installs on the glibc a service fleet runs;
* CPU venv, ``vlrank[demo]``: ``vlrank demo`` runs; only CPU providers; ``vlrank serve`` without the
  server extra says which extra in one line and exits 2;
* GPU venv: the bare wheel imports with no ONNX Runtime and building a model names ``vlrank[cpu]`` /
  ``vlrank[gpu]`` (exit 2); ``vlrank[gpu]`` installs onnxruntime-gpu alone and its onnxruntime lists
  CUDAExecutionProvider (compiled in, no GPU needed); adding the CPU onnxruntime on top is refused with
  the repair command.

The wheel: $VLRANK_TEST_WHEEL (scripts/test.sh sets it), else the newest dist/vlrank-*.whl, else one is
built with scripts/build-wheel.sh. pip's cache is shared, so repeated runs download nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from export_support import TEXT_CKPT, exported

REPO_ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA, AZURE = "CPUExecutionProvider", "CUDAExecutionProvider", "AzureExecutionProvider"
REPAIR = 'pip uninstall -y onnxruntime onnxruntime-gpu && pip install "vlrank[gpu]"'


def _no_rust_env(home: Path) -> dict[str, str]:
    """The environment with every PATH entry that holds cargo or rustc removed (and no rustup/cargo home)."""
    keep = [p for p in os.environ.get("PATH", "").split(os.pathsep)
            if p and not any(Path(p, tool).exists() for tool in ("cargo", "rustc"))]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=os.pathsep.join(keep), CARGO_HOME=str(home / "no-cargo"), RUSTUP_HOME=str(home / "no-rustup"),
               VLRANK_CACHE=str(home / "cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("VLRANK_TEST_WHEEL")
    if given:
        return Path(given)
    built = sorted((REPO_ROOT / "dist").glob("vlrank-*.whl"), key=lambda p: p.stat().st_mtime)
    if built:
        return built[-1]
    out = tmp_path_factory.mktemp("wheel")
    run = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "build-wheel.sh"), str(out)], capture_output=True,
                         text=True, timeout=3600)
    assert run.returncode == 0, run.stderr[-4000:]
    return Path(run.stdout.strip().splitlines()[-1])


class Venv:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = _no_rust_env(root)
        subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=300)
        self.bin = root / "venv" / "bin"
        assert shutil.which("cargo", path=self.env["PATH"]) is None
        assert shutil.which("rustc", path=self.env["PATH"]) is None

    def run(self, *args: str | Path, timeout: float = 900) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if cmd[0] in ("python", "pip", "vlrank"):
            cmd[0] = str(self.bin / cmd[0])
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout, cwd=self.root)

    def pip_install(self, *specs: str) -> None:
        # --only-binary: every dependency arrives as a wheel, so nothing could need a compiler
        run = self.run("python", "-m", "pip", "install", "-q", "--only-binary", ":all:", *specs, timeout=1800)
        assert run.returncode == 0, run.stderr[-4000:]

    def distributions(self) -> set[str]:
        run = self.run("python", "-m", "pip", "list", "--format", "json")
        assert run.returncode == 0, run.stderr
        return {d["name"].lower() for d in json.loads(run.stdout)}

    def providers(self) -> list[str]:
        run = self.run("python", "-c", "import onnxruntime, json; print(json.dumps(onnxruntime.get_available_providers()))")
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)


def one_line_error(run: subprocess.CompletedProcess, rc: int, *needles: str) -> str:
    assert run.returncode == rc, (run.returncode, run.stdout[-2000:], run.stderr[-4000:])
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_wheel_is_abi3_manylinux_2_28_or_older(wheel: Path) -> None:
    m = re.fullmatch(r"vlrank-[^-]+-cp310-abi3-(manylinux_2_(\d+)|manylinux2014)_x86_64(\..*)?\.whl", wheel.name)
    assert m, wheel.name
    assert m.group(2) is None or int(m.group(2)) <= 28, wheel.name
    assert wheel.stat().st_size < 20 * 1024 * 1024  # the Rust core and the Python package, no bundled runtime


def test_cpu_install_runs_the_demo_without_rust_and_names_missing_extras(wheel: Path, tmp_path: Path) -> None:
    venv = Venv(tmp_path)
    venv.pip_install(f"{wheel}[demo]")
    dists = venv.distributions()
    assert "onnxruntime" in dists and "onnxruntime-gpu" not in dists and "fastapi" not in dists
    providers = venv.providers()
    assert CPU in providers and CUDA not in providers and set(providers) <= {CPU, AZURE}, providers

    demo = venv.run("vlrank", "demo", "--top-n", "2")
    assert demo.returncode == 0, demo.stderr[-4000:]
    out = json.loads(demo.stdout)
    assert out["object"] == "list" and len(out["results"]) == 2
    assert all(0 <= r["relevance_score"] <= 1 for r in out["results"])

    serve = venv.run("vlrank", "serve", "--model", f"rr={tmp_path}")
    one_line_error(serve, 2, 'pip install "vlrank[server]"', "vlrank serve")

    doctor = venv.run("vlrank", "doctor", "--json")
    assert doctor.returncode == 0, doctor.stderr
    report = json.loads(doctor.stdout)
    assert set(report["onnxruntime_distributions"]) == {"onnxruntime"} and report["problems"] == []
    assert report["providers"] == providers and report["extras"]["demo"] and not report["extras"]["server"]


def test_gpu_install_has_cuda_and_never_meets_the_cpu_runtime(wheel: Path, tmp_path: Path) -> None:
    model = exported(TEXT_CKPT, "rerank")
    venv = Venv(tmp_path)
    venv.pip_install(str(wheel))
    assert not {"onnxruntime", "onnxruntime-gpu"} & venv.distributions()
    imported = venv.run("python", "-c", "import vlrank; print(vlrank.__version__)")
    assert imported.returncode == 0, imported.stderr
    bare = venv.run("vlrank", "rerank", "--model", model, "--query", "q", "--document", "d")
    one_line_error(bare, 2, 'pip install "vlrank[cpu]"', 'pip install "vlrank[gpu]"')

    venv.pip_install(f"{wheel}[gpu]")
    dists = venv.distributions()
    assert "onnxruntime-gpu" in dists and "onnxruntime" not in dists, dists
    assert CUDA in venv.providers()
    doctor = venv.run("vlrank", "doctor", "--json")
    report = json.loads(doctor.stdout)
    assert set(report["onnxruntime_distributions"]) == {"onnxruntime-gpu"} and CUDA in report["providers"]

    venv.pip_install("onnxruntime>=1.31,<1.33")  # what `pip install vlrank[gpu]` used to end in
    clash = venv.run("vlrank", "rerank", "--model", model, "--query", "q", "--document", "d")
    one_line_error(clash, 2, "onnxruntime==", "onnxruntime-gpu==", REPAIR)
    doctor = venv.run("vlrank", "doctor")
    assert doctor.returncode == 1 and REPAIR in doctor.stderr and "Traceback" not in doctor.stderr
