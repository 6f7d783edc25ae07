"""Which ONNX Runtime kernel multiplies a Linear with int8 activations fastest, and at what error (issue 25).

One GEMM per shape (``x [M, K] @ w.T``, w an nn.Linear's ``[N, K]``), each candidate its own one-node graph
(plus the ops it needs), ``--threads`` intra-op threads, the best of ``--repeats`` runs:

- ``fp32``: MatMul (the reference speed).
- ``nbits8-L0`` / ``nbits8-L4`` / ``nbits4-L4``: com.microsoft.MatMulNBits, block 32, accuracy level 0
  (dequantize, float32 GEMM) or 4 (activations quantized to int8 per block of 32 along K, per row).
- ``dqmm``: com.microsoft.DynamicQuantizeMatMul, weights int8 per output channel (symmetric, ±127),
  activations uint8 with one dynamic scale / zero point per tensor.
- ``dqmm7``: the same with 7-bit weights (±63): no int16 saturation in the AVX2 u8·s8 kernel (vpmaddubsw)
  on a CPU without VNNI.
- ``rowq``: per-row activation scales by hand: int8 QuantizeLinear per row (scale = row absmax / 127),
  MatMulInteger (int8 · int8 -> int32), Cast, · row scale · column scale.

Error: max |y − y_ref| / max |y_ref| against float64 ``x @ w.T`` with the unquantized weights, on Gaussian
activations (``gauss``) and on Gaussian activations with 4 of K channels scaled ×100 (``outlier``: the
massive-activation channels of Qwen3, ORT #29849), and ``sink``: one row (token) ×100, the error
measured on the other rows (what a per-tensor activation scale costs every token beside an attention
sink).

End to end (``--e2e``): a random Qwen3-Reranker checkpoint of Qwen3-0.6B's widths (hidden 1024, 16 / 8
heads, FFN 3072, ``--layers`` layers) exported as float32, int8 weight-only (level 0), int8 MatMulNBits
level 4 everywhere, ``precision="int8"`` with int8 and int4 weights; docs/s reranking ``--docs`` documents
of ~``--doc-tokens`` tokens, and max |Δscore| against the float32 export.

    python benches/bench_int8_kernels.py [--m 512] [--threads 2] [--repeats 5] [--shapes 0.6b,2b]
    python benches/bench_int8_kernels.py --e2e [--layers 2] [--docs 16] [--doc-tokens 300] [--threads 2]

Prints a markdown table; writes nothing (the numbers go to docs/notes.md by hand).
"""

from __future__ import annotations

import argparse
import os
import sys

import benchlib
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SHAPES = {  # (name, K, N) of the Linears whose int8 speed matters
    "0.6b": [("0.6B gate/up", 1024, 3072), ("0.6B down", 3072, 1024), ("0.6B q", 1024, 2048)],
    "2b": [("2B gate/up", 2048, 6144), ("2B down", 6144, 2048)],
}


def _model(nodes, inits, k: int, n: int, *, ms: bool = True) -> bytes:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", n])],
                              [numpy_helper.from_array(v, name) for name, v in inits.items()])
    opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=10).SerializeToString()


def fp32(w):
    n, k = w.shape
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"w": np.ascontiguousarray(w.T)}, k, n, ms=False)


def nbits(w, bits: int, level: int, block: int = 32):
    sys.path.insert(0, str(benchlib.REPO / "python"))
    from vlrank.export.quantize import quantize_blocks

    n, k = w.shape
    packed, scales = quantize_blocks(w, bits=bits, block_size=block)
    node = helper.make_node("MatMulNBits", ["x", "b", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=bits,
                            block_size=block, accuracy_level=level)
    return _model([node], {"b": packed, "s": scales.reshape(-1)}, k, n)


def _per_channel(w, qmax: int):
    scale = (np.abs(w).max(axis=1) / qmax).astype(np.float32)
    q = np.clip(np.rint(w / np.where(scale == 0, 1, scale)[:, None]), -qmax, qmax).astype(np.int8)
    return np.ascontiguousarray(q.T), scale  # [K, N] int8, [N]


def dqmm(w, qmax: int = 127):
    n, k = w.shape
    q, scale = _per_channel(w, qmax)
    node = helper.make_node("DynamicQuantizeMatMul", ["x", "b", "bs"], ["y"], domain="com.microsoft")
    return _model([node], {"b": q, "bs": scale}, k, n)


def rowq(w):
    n, k = w.shape
    q, scale = _per_channel(w, 127)
    nodes = [
        helper.make_node("Abs", ["x"], ["ax"]),
        helper.make_node("ReduceMax", ["ax", "axes"], ["amax"], keepdims=0),  # [M]
        helper.make_node("Max", ["amax", "tiny"], ["amax1"]),
        helper.make_node("Div", ["amax1", "q127"], ["rs"]),  # one scale per row
        helper.make_node("Shape", ["rs"], ["shape_rs"]),
        helper.make_node("Expand", ["zp", "shape_rs"], ["zp_rs"]),  # per-axis zero point: the scale's shape
        helper.make_node("QuantizeLinear", ["x", "rs", "zp_rs"], ["xq"], axis=0),
        helper.make_node("MatMulInteger", ["xq", "b"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["rs", "axes"], ["rs2"]),
        helper.make_node("Mul", ["rs2", "bs"], ["outer"]),
        helper.make_node("Mul", ["accf", "outer"], ["y"]),
    ]
    inits = {"b": q, "bs": scale, "tiny": np.array(1e-30, np.float32), "q127": np.array(127, np.float32),
             "zp": np.array(0, np.int8), "axes": np.array([1], np.int64)}
    return _model(nodes, inits, k, n, ms=False)


CANDIDATES = {
    "fp32": fp32,
    "nbits8-L0": lambda w: nbits(w, 8, 0),
    "nbits8-L4": lambda w: nbits(w, 8, 4),
    "nbits4-L4": lambda w: nbits(w, 4, 4),
    "dqmm": dqmm,
    "dqmm7": lambda w: dqmm(w, 63),
    "rowq": rowq,
}


def _session(model: bytes, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


E2E_CONFIGS = [  # label, vlrank.export options
    ("float32", {}),
    ("int8 weight-only (L0)", {"quantize": "int8"}),
    ("int8 MatMulNBits L4 everywhere", {"quantize": "int8", "accuracy_level": 4}),
    ("int8 compute (precision int8)", {"quantize": "int8", "precision": "int8"}),
    ("int4 + int8 compute", {"quantize": "int4", "precision": "int8"}),
]
WORDS = ("retrieval ranking model document query score relevant answer paris france capital river mountain "
         "engine weight block scale graph tensor kernel memory speed the of and a to in is for on with").split()


def e2e(args) -> list[str]:
    import tempfile
    from pathlib import Path

    import vlrank
    from vlrank.synthetic import TextShape, write_random_qwen3

    work = Path(tempfile.mkdtemp(prefix="int8k-"))
    ckpt = write_random_qwen3(work / "ckpt", shape=TextShape(hidden=1024, layers=args.layers, heads=16, kv_heads=8,
                                                             head_dim=128, intermediate=3072),
                              tokenizer_json=benchlib.tokenizer_json())
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, args.doc_tokens)) for _ in range(args.docs)]
    rows, ref = [], None
    for label, opts in E2E_CONFIGS:
        model = vlrank.export(ckpt, work / label.split()[0] / str(len(rows)), task="rerank", progress=False, **opts)
        rr = vlrank.Reranker(model, providers="cpu", threads=args.threads)
        t = benchlib.timed(lambda: rr.rerank("which document is relevant?", docs), args.repeats)
        scores = np.array(benchlib.scores_in_order(t.result, len(docs)))
        ref = scores if ref is None else ref
        rows.append(f"| {label} | {len(docs) / t.best:.2f} | {t.best:.2f} | {np.abs(scores - ref).max():.1e} |")
        benchlib.eprint(rows[-1])
        del rr
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--m", type=int, default=512, help="rows (tokens) of the activation")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--shapes", default="0.6b,2b")
    p.add_argument("--candidates", default=",".join(CANDIDATES))
    p.add_argument("--e2e", action="store_true", help="the end-to-end section instead of the GEMMs")
    p.add_argument("--no-write", action="store_true", help="accepted for symmetry: this bench never writes files")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--docs", type=int, default=16)
    p.add_argument("--doc-tokens", type=int, default=300)
    args = p.parse_args(argv)
    if args.e2e:
        rows = e2e(args)
        info = benchlib.machine()
        print(f"CPU: {info['cpu']}, onnxruntime {info['onnxruntime']}, {args.threads} threads, load "
              f"{benchlib.load_average()}; 0.6B widths, {args.layers} layers, {args.docs} docs x ~{args.doc_tokens} "
              "words\n")
        print("| export | docs/s | s per call | max \\|Δscore\\| vs float32 |\n|---|---|---|---|")
        print("\n".join(rows))
        return 0
    rng = np.random.default_rng(0)
    names = args.candidates.split(",")
    rows = []
    for group in args.shapes.split(","):
        for label, k, n in SHAPES[group]:
            w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
            x = rng.standard_normal((args.m, k)).astype(np.float32)
            xo = x.copy()
            xo[:, rng.choice(k, 4, replace=False)] *= 100.0
            xs = x.copy()
            xs[0] *= 100.0  # one "attention sink" token with massive activations
            inputs = {"gauss": x, "outlier": xo, "sink": xs}
            refs = {kind: data.astype(np.float64) @ w.T.astype(np.float64) for kind, data in inputs.items()}
            base = None
            for name in names:
                sess = _session(CANDIDATES[name](w), args.threads)
                t = benchlib.timed(lambda: sess.run(None, {"x": x})[0], args.repeats)
                err = {}
                for kind, data in inputs.items():
                    ref, got = refs[kind], sess.run(None, {"x": data})[0]
                    if kind == "sink":  # the error the other tokens get from sharing a tensor with the sink
                        ref, got = ref[1:], got[1:]
                    err[kind] = float(np.abs(got - ref).max() / np.abs(ref).max())
                base = base or t.best
                rows.append(f"| {label} ({args.m}×{k}×{n}) | {name} | {t.best * 1e3:.1f} | {base / t.best:.2f}× | "
                            f"{err['gauss']:.1e} | {err['outlier']:.1e} | {err['sink']:.1e} |")
                benchlib.eprint(rows[-1])
    info = benchlib.machine()
    print(f"CPU: {info['cpu']} ({os.cpu_count()} cores), onnxruntime {info['onnxruntime']}, {args.threads} threads, "
          f"load {benchlib.load_average()}\n")
    print("| GEMM | kernel | ms | vs fp32 | max rel err (gauss) | max rel err (outlier) | (sink) |\n|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
