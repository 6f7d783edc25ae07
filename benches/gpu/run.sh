#!/usr/bin/env bash
# Every GPU check of vlrank in one go (budget: under 8 minutes on one GPU):
#   1. the golden rerank cases on CUDA from float16 and bfloat16 exports: |Δscore| <= 1e-2 vs float32 golden
#   2. docs/s and p50 for 100 documents of ~500 tokens and for 16 image documents on a full-depth
#      Qwen3-VL-2B-shaped random checkpoint (bfloat16), vs transformers bf16 + SDPA on the same GPU
#   3. GPU memory above the loaded model for one 32k-token pair
#   4. the shared prompt prefix: a query image against 16 text documents, share_prefix off vs on (same scores
#      within the tolerance; the speed-up)
# It fails (exit 2) when no CUDA is present. --cpu runs the same checks on ONNX Runtime's CPU EP with
# float32 exports and tiny shapes: what tests/test_gpu_script.py runs on machines without a GPU.
#
#   benches/gpu/run.sh [--cpu] [--reference-python PY] [--workdir DIR] [--write]
# Environment: PYTHON (default python3) runs vlrank. Results: DIR/results.jsonl and a markdown table on
# stdout; --write also replaces the bench_gpu section of benches/RESULTS.md.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
MODE=cuda
REF=""
WORKDIR=/tmp/vlrank-gpu
WRITE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) MODE=cpu ;;
    --reference-python) REF="$2"; shift ;;
    --workdir) WORKDIR="$2"; shift ;;
    --write) WRITE=--write ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$MODE" = cuda ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "run.sh: no CUDA GPU here (nvidia-smi finds none); run it on a CUDA machine, or pass --cpu" >&2
    exit 2
  fi
  if ! "$PY" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'; then
    echo "run.sh: this onnxruntime has no CUDAExecutionProvider; pip install 'vlrank[gpu]' (onnxruntime-gpu)" >&2
    exit 2
  fi
  GOLDEN_ARGS=(--precisions float16,bfloat16 --tolerance 1e-2)
  SIZE_ARGS=(--full-depth --precision bfloat16)
  THROUGHPUT_ARGS=(--docs 100 --doc-tokens 500 --image-docs 16 --repeats 5)
  MEMORY_ARGS=(--tokens 32768)
  PREFIX_ARGS=(--docs 16 --doc-tokens 150 --max-pixels 1310720 --repeats 5 --tolerance 1e-2)
else
  GOLDEN_ARGS=(--precisions float32 --tolerance 1e-3)
  SIZE_ARGS=(--tiny --precision float32)
  THROUGHPUT_ARGS=(--docs 6 --doc-tokens 60 --image-docs 2 --repeats 1)
  MEMORY_ARGS=(--tokens 1024)
  PREFIX_ARGS=(--docs 3 --doc-tokens 40 --repeats 1 --tolerance 1e-4)
fi
REF_ARGS=()
[ -n "$REF" ] && REF_ARGS=(--reference-python "$REF")

mkdir -p "$WORKDIR"
RESULTS="$WORKDIR/results.jsonl"
: > "$RESULTS"
START=$(date +%s)
export PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}"
status=0
step() {  # step NAME ARGS...: one gpu_checks.py check; its JSON line goes to results.jsonl
  local name="$1"; shift
  local t0; t0=$(date +%s)
  echo "== $name" >&2
  if out=$("$PY" "$HERE/gpu_checks.py" "$@" --provider "$MODE" --workdir "$WORKDIR"); then :; else status=1; fi
  echo "$out" | tail -n 1 | "$PY" -c 'import json,sys; d=json.loads(sys.stdin.read()); d["check"]=sys.argv[1]; d["elapsed_s"]=int(sys.argv[2]); print(json.dumps(d))' \
    "$name" "$(( $(date +%s) - t0 ))" >> "$RESULTS" || { echo "run.sh: $name printed no result" >&2; status=1; }
}
step golden golden "${GOLDEN_ARGS[@]}"
step throughput throughput "${SIZE_ARGS[@]}" "${THROUGHPUT_ARGS[@]}" "${REF_ARGS[@]}"
step memory memory "${SIZE_ARGS[@]}" "${MEMORY_ARGS[@]}"
step prefix prefix "${SIZE_ARGS[@]}" "${PREFIX_ARGS[@]}"
ELAPSED=$(( $(date +%s) - START ))
"$PY" "$HERE/gpu_report.py" "$RESULTS" --mode "$MODE" --elapsed "$ELAPSED" $WRITE
if [ "$MODE" = cuda ] && [ "$ELAPSED" -gt 480 ]; then
  echo "run.sh: took ${ELAPSED}s, over the 8-minute budget" >&2
  status=1
fi
exit $status
