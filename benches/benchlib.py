"""Shared plumbing of the benches: machine facts, the timing loop, the memory high-water mark, the
reference-stack subprocess, thread pinning and the RESULTS.md section writer.

Kept here so every bench measures and reports the same way. Only the standard library is imported at
module level: the reference scripts (reference_*.py, run by a separate torch venv without vlrank) import
it too, from this folder (a script's own folder is first on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCHES = REPO / "benches"
RESULTS = BENCHES / "RESULTS.md"
# Above this 1-minute load average when a bench starts (its own threads then add to it), the machine is not
# quiet and the run is not a benchmark: finish() refuses to write RESULTS.md.
QUIET_LOAD = 1.5
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


_LOAD_AT_IMPORT = load_average()  # the load before this bench's own work


def machine() -> dict:
    import numpy
    import onnxruntime

    import vlrank

    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "vlrank": vlrank.__version__, "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__}


def p50(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Timing:
    """Seconds of each timed call, and what the last call returned."""

    seconds: list[float]
    result: Any

    @property
    def best(self) -> float:
        """The least disturbed call (a shared machine's noise only ever adds time)."""
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed(fn: Callable[[], Any], repeats: int, *, warmup: bool = True, min_time: float = 0.0) -> Timing:
    """``fn()`` called ``repeats`` times (after one untimed warm-up call: first-run allocations, ONNX
    Runtime's arena growth and lazy loading are not per-call cost), each call timed on its own; with
    ``min_time``, calls go on until that many seconds passed, at most 20 x ``repeats`` calls."""
    result = fn() if warmup else None
    seconds: list[float] = []
    t_end = time.perf_counter() + min_time
    while len(seconds) < repeats or (time.perf_counter() < t_end and len(seconds) < 20 * repeats):
        t = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t)
    return Timing(seconds, result)


def status_kib(key: str, pid: int | str = "self") -> int:
    """A field of /proc/<pid>/status in KiB (VmHWM: the resident high-water mark, VmRSS, RssAnon,
    RssFile); 0 where /proc or the field is missing."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def hwm_mib() -> float:
    """This process's resident-set high-water mark (VmHWM), MiB; 0 where /proc is missing."""
    return status_kib("VmHWM") / 1024


def reset_hwm() -> float:
    """Reset VmHWM to the current RSS (Linux: ``5`` to /proc/self/clear_refs) and return it, MiB: loading
    peaks above the loaded model (weights converted, files read), which would hide the calls' own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return hwm_mib()


def rgb(img: Any) -> Any:
    """A PIL image as the Qwen reference loads it: RGBA composited on white, any other mode converted."""
    from PIL import Image

    if img.mode != "RGBA":
        return img.convert("RGB")
    bg = Image.new("RGB", img.size, (255, 255, 255))
    bg.paste(img, mask=img.split()[3])
    return bg


def scores_in_order(result: dict, n: int) -> list[float]:
    """The relevance scores of a rerank result in document order."""
    scores = [0.0] * n
    for r in result["results"]:
        scores[r["index"]] = r["relevance_score"]
    return scores


def reference_python(arg: str | None) -> Path | None:
    """--reference-python, else /work/refvenv/bin/python when it exists; None = skip the reference."""
    if arg:
        path = Path(arg)
        if not path.exists():
            raise SystemExit(f"--reference-python {arg}: no such file")
        return path
    return DEFAULT_REFERENCE_PYTHON if DEFAULT_REFERENCE_PYTHON.exists() else None


def reference_or_note(args) -> Path | None:
    """The reference Python of ``--no-reference`` / ``--reference-python``; a note on stdout when none."""
    python = None if args.no_reference else reference_python(args.reference_python)
    if python is None:
        print("note: no reference Python (torch + transformers) found; skipping the transformers columns "
              "(pass --reference-python)")
    return python


def versions_line(versions: dict, python: Path | None) -> str:
    """The reference stack's versions for a RESULTS.md section (or that it was skipped)."""
    if not versions:
        return " Reference skipped (no torch/transformers Python)."
    return f" Reference: torch {versions['torch']}, transformers {versions['transformers']} ({python})."


@contextlib.contextmanager
def json_file(doc: Any) -> Iterator[str]:
    """The path of a temporary JSON file holding ``doc`` (a spec too long for argv), removed afterwards."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(doc, fh)
    try:
        yield fh.name
    finally:
        os.unlink(fh.name)


def run_json(cmd: list[str], *, threads: int, what: str, timeout: float, clean_path: bool = False) -> dict:
    """A reference script's run pinned to ``threads`` (torch reads OMP_NUM_THREADS at start-up); its last
    stdout line as JSON, checked to have run on those threads. ``clean_path`` drops PYTHONPATH (the
    reference venv must not import this worktree's packages)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if clean_path:
        env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out.get("threads") != threads:
        raise RuntimeError(f"reference ran on {out.get('threads')} torch threads, not {threads}")
    return out


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
    with json_file(spec) as pairs:
        argv = [task, "--checkpoint", str(checkpoint), "--pairs", pairs, "--mode", mode]
        if last_token_only:
            cmd = [str(python), "-c", _LAST_TOKEN_PATCH.format(benches=str(BENCHES), argv=argv)]
        else:
            cmd = [str(python), str(BENCHES / "reference_transformers.py"), *argv]
        return run_json(cmd, threads=threads, what=f"reference ({task}, {mode})", timeout=timeout)


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


def finish(md: str, *, section: str, args, doc: dict | None = None) -> int:
    """Print a bench's markdown (and ``doc`` as one JSON line with --json); write its RESULTS.md section
    unless --no-write."""
    print(md)
    if doc is not None and getattr(args, "json", False):
        print(json.dumps(doc))
    if not args.no_write:
        load = _LOAD_AT_IMPORT
        if load > QUIET_LOAD and os.environ.get("VLRANK_BENCH_WRITE_UNDER_LOAD") != "1":
            eprint(f"load average {load:.2f} > {QUIET_LOAD} when the bench started: not writing RESULTS.md (a busy "
                   "machine's numbers are not a benchmark); rerun on a quiet machine, or set VLRANK_BENCH_WRITE_UNDER_LOAD=1 to write anyway")
            return 0
        write_section(section, md)
    return 0


def write_section(name: str, markdown: str, *, path: Path = RESULTS) -> None:
    """Replace (or append) the ``<!-- name:begin -->`` ... ``<!-- name:end -->`` section of ``path``
    (RESULTS.md): each bench owns its section, the others own the rest of the file."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


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
