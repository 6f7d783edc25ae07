"""Shared plumbing of the model benches (bench_rerank.py, bench_vl_rerank.py, bench_export.py): machine
facts, the reference-stack subprocess, thread pinning and the RESULTS.md section writer.

Kept here so the three benches measure and report the same way; nothing in it times anything itself.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHES = REPO / "benches"
RESULTS = BENCHES / "RESULTS.md"
GOLDEN_TOKENIZER = REPO.parent / "shared" / "golden" / "models" / "tokenizer.json"
DEFAULT_REFERENCE_PYTHON = Path("/work/refvenv/bin/python")


def tokenizer_json() -> Path | None:
    """The golden tokenizer.json when present (skips building the vocabulary, ~2 s), else None."""
    return GOLDEN_TOKENIZER if GOLDEN_TOKENIZER.is_file() else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def machine() -> dict:
    import numpy
    import onnxruntime

    import vlrank

    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "vlrank": vlrank.__version__, "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__}


def p50(values: list[float]) -> float:
    return statistics.median(values)


def reference_python(arg: str | None) -> Path | None:
    """--reference-python, else /work/refvenv/bin/python when it exists; None = skip the reference."""
    if arg:
        path = Path(arg)
        if not path.exists():
            raise SystemExit(f"--reference-python {arg}: no such file")
        return path
    return DEFAULT_REFERENCE_PYTHON if DEFAULT_REFERENCE_PYTHON.exists() else None


# The official text recipe computes the LM head over the whole vocabulary at every position and keeps the
# last one; this variant asks transformers for the last position only (logits_to_keep=1), so its compute
# matches vlrank's (which never builds more than the yes/no logits). Everything else is the script's own.
_LAST_TOKEN_PATCH = """
import functools, sys
sys.path.insert(0, {benches!r})
import transformers
import reference_transformers as ref
_load = transformers.AutoModelForCausalLM.from_pretrained
def _from_pretrained(*a, **k):
    model = _load(*a, **k)
    model.forward = functools.partial(model.forward, logits_to_keep=1)
    return model
transformers.AutoModelForCausalLM.from_pretrained = _from_pretrained
sys.argv = ["reference_transformers.py"] + {argv!r}
sys.exit(ref.main())
"""


def run_reference(python: Path, task: str, checkpoint: Path, spec: dict, *, mode: str, threads: int,
                  last_token_only: bool = False, timeout: float = 3600) -> dict:
    """benches/reference_transformers.py in its own venv, pinned to ``threads`` (torch reads
    OMP_NUM_THREADS at start-up); returns its JSON (per-repeat seconds, scores in document order)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
        pairs = fh.name
    argv = [task, "--checkpoint", str(checkpoint), "--pairs", pairs, "--mode", mode]
    if last_token_only:
        cmd = [str(python), "-c", _LAST_TOKEN_PATCH.format(benches=str(BENCHES), argv=argv)]
    else:
        cmd = [str(python), str(BENCHES / "reference_transformers.py"), *argv]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    finally:
        os.unlink(pairs)
    if proc.returncode != 0:
        raise RuntimeError(f"reference ({task}, {mode}) failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out.get("threads") != threads:
        raise RuntimeError(f"reference ran on {out.get('threads')} torch threads, not {threads}")
    return out


def pin_threads(task, threads: int) -> None:
    """Recreate a Reranker's / Embedder's ONNX Runtime sessions with ``threads`` intra-op threads (the
    facade lets ORT size its pool to the machine; the bench pins both stacks to the same count)."""
    import onnxruntime as ort

    def session(old):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        return ort.InferenceSession(old._model_path, sess_options=opts, providers=old.get_providers())

    task.runner.session = session(task.runner.session)
    if task.runner.manifest.has_vision:
        tower = task.tower()
        tower.session = session(tower.session)


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the ``<!-- name:begin -->`` ... ``<!-- name:end -->`` section of RESULTS.md."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def machine_line(info: dict, load_start: float, load_end: float) -> str:
    # The 1-minute load average counts this bench's own threads (and a previous bench's tail), so only the
    # load before it started says whether others were using the cores.
    busy = load_start > 0.5 * (info["nproc"] or 1)
    note = (" **The machine was busy when this bench started** (other sessions' builds/tests, or the previous "
            "bench): absolute numbers are pessimistic and ratios carry the noise of runs made one after "
            "another." if busy else "")
    return (f"Machine: {info['nproc']} x {info['cpu']}; Python {info['python']}, vlrank {info['vlrank']}, "
            f"onnxruntime {info['onnxruntime']}, numpy {info['numpy']}. Load average (1 min) {load_start} at "
            f"start, {load_end} at end (the end figure includes this bench's own threads).{note}")


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
