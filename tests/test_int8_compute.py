"""int8-compute exports (``precision="int8"``, export/quantize.py): the Linears multiply int8 activations.

- One DynamicQuantizeMatMul node as the export builds it computes ``x @ dequantize(w).T`` up to the
  activation's 8-bit rounding; the per-channel weight layout is checked exactly.
- What the export holds: int8 weights -> DynamicQuantizeMatMul for every Linear but the guarded ones
  (``down_proj``, the vision ``linear_fc2`` and mergers: MatMulNBits at accuracy level 4, per-block
  activation scales); int4 weights -> MatMulNBits at level 4 everywhere; the score rows, norms and the
  pooled embedding float32; the manifest records precision "int8" on the CPU.
- Golden cases through the public API within stated bounds (measured on these tiny models, this file's
  runs: see INT8_* / INT4_* below and docs/precision.md).
- ``vlrank compare`` between a float32 and an int8-compute export: its numbers equal a direct computation.
- Bad input: typed errors naming the argument.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from export_support import TEXT_CKPT, VL_CKPT, exported
from test_compare import RERANK_LINES, _assert_report, _direct_rerank, _write
from test_quantized import _cos, _embeddings, _rerank_scores

import vlrank
from vlrank.engine.manifest import read_manifest
from vlrank.errors import InvalidInputError, ModelDirectoryError
from vlrank.export.graph import FLOAT, Graph
from vlrank.export.quantize import Quantization, quantize_channels, quantized_linear

# Bounds on |Δscore| against the golden reference and on the embedding cosine. Measured on these models
# (52 rerank scores, AMD EPYC AVX2 without VNNI; docs/precision.md): int8 compute max |Δscore| 1.4e-2 (median
# 6.3e-3), cosine >= 0.99918; int4 + int8 compute 5.9e-2 (median 8.6e-3), cosine >= 0.9539. The issue's
# bound for int8 compute on the tiny models is 2e-2.
INT8_SCORE, INT8_COS = 2e-2, 0.998
INT4_SCORE, INT4_COS = 1e-1, 0.93

_EXPORTS: dict[tuple, Path] = {}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("int8c")


def int8c(root: Path, ckpt: Path, task: str, scheme: str = "int8") -> Path:
    key = (ckpt.name, task, scheme)
    if key not in _EXPORTS:
        out = root / f"{ckpt.name}-{task}-{scheme}-int8c"
        _EXPORTS[key] = vlrank.export(ckpt, out, task=task, quantize=scheme, precision="int8", progress=False)
    return _EXPORTS[key]


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


# ---- one node ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k, n", [(64, 48), (16, 24), (300, 8), (1024, 40)])
def test_dynamic_quantize_matmul_node_is_x_times_per_channel_weight(k, n):
    rng = np.random.default_rng(k + n)
    w = rng.normal(size=(n, k)).astype(np.float32)
    w[1] = 0.0  # an all-zero channel: scale 0, stored as 0
    q, scales = quantize_channels(w)
    assert q.shape == (k, n) and q.dtype == np.int8 and scales.shape == (n,)
    assert np.abs(q.astype(np.int32)).max() == 63  # 7 bits used: no int16 saturation on AVX2 (quantize.py)
    deq = q.T.astype(np.float64) * scales[:, None]
    # symmetric per channel: the channel's largest magnitude is exact (±63), every weight within half a step
    peak = np.abs(w).argmax(axis=1)
    np.testing.assert_allclose(np.abs(deq[np.arange(n), peak]), np.abs(w[np.arange(n), peak]), rtol=1e-6)
    assert np.all(np.abs(deq - w) <= scales[:, None] / 2 * (1 + 1e-5))
    assert np.all(deq[1] == 0.0) and scales[1] == 0.0
    g = Graph("t")
    x = g.input("x", FLOAT, ["M", k])
    y = quantized_linear(g, x, "layers.0.mlp.gate_proj", w, Quantization("int8", compute="int8"))
    g.output(y, "y", FLOAT, ["M", n])
    model = g.to_model()
    assert [nd.op_type for nd in model.graph.node if nd.op_type != "Identity"] == ["DynamicQuantizeMatMul"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    xs = rng.normal(size=(7, k)).astype(np.float32)
    expected = xs.astype(np.float64) @ deq.T
    got = sess.run(None, {"x": xs})[0]
    # the activation's uint8 rounding: one step is range / 255 per element, ~sqrt(k) steps summed at random
    assert np.abs(got - expected).max() <= 2e-2 * np.abs(expected).max()


def test_guarded_linears_keep_per_block_activation_scales():
    q = Quantization("int8", compute="int8", accuracy_level=4)
    for name in ("layers.0.mlp.down_proj", "blocks.3.mlp.linear_fc2", "merger.linear_fc1",
                 "deepstack_merger_list.0.linear_fc2"):
        assert q.compute_op(name) == "MatMulNBits", name
    for name in ("layers.0.self_attn.q_proj", "layers.1.mlp.gate_proj", "blocks.0.attn.qkv", "blocks.0.attn.proj"):
        assert q.compute_op(name) == "DynamicQuantizeMatMul", name
    assert Quantization("int4", compute="int8").compute_op("layers.0.mlp.gate_proj") == "MatMulNBits"
    assert Quantization("int8").compute_op("layers.0.mlp.gate_proj") == "MatMulNBits"  # weight-only


# ---- what the export holds ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_export_ops_manifest_and_float32_head(root, scheme):
    model = int8c(root, VL_CKPT, "rerank", scheme)
    m = read_manifest(model)
    assert (m.dtype, m.precision, m.provider, m.int8_compute) == ("float32", "int8", "cpu", True)
    default = "DynamicQuantizeMatMul" if scheme == "int8" else "MatMulNBits"
    assert m.quantization["compute"] == "int8" and m.quantization["accuracy_level"] == 4
    assert m.quantization["ops"] == {"default": "com.microsoft." + default, "guarded": "com.microsoft.MatMulNBits"}
    cfg = json.loads((VL_CKPT / "config.json").read_text())
    layers, depth = cfg["text_config"]["num_hidden_layers"], cfg["vision_config"]["depth"]
    mergers = 1 + len(cfg["vision_config"]["deepstack_visual_indexes"])
    for graph_file, total, guarded in (("decoder.onnx", 7 * layers, layers),
                                       ("vision.onnx", 4 * depth + 2 * mergers, depth + 2 * mergers)):
        proto = onnx.load(str(model / graph_file), load_external_data=False)
        nbits = [nd for nd in proto.graph.node if nd.op_type == "MatMulNBits"]
        dqmm = [nd for nd in proto.graph.node if nd.op_type == "DynamicQuantizeMatMul"]
        assert len(nbits) + len(dqmm) == total
        assert len(nbits) == (guarded if scheme == "int8" else total)
        assert all(_attrs(nd)["accuracy_level"] == 4 for nd in nbits)
        weights = {t.name: t for t in proto.graph.initializer}
        for nd in dqmm:  # int8 [K, N] weights, one float32 scale per output channel
            b, s = weights[nd.input[1]], weights[nd.input[2]]
            assert b.data_type == onnx.TensorProto.INT8 and list(s.dims) == [b.dims[1]]
        if scheme == "int8" and graph_file == "decoder.onnx":
            assert all("down_proj" in nd.input[1] for nd in nbits)
        for nd in (x for x in proto.graph.node if x.op_type == "MatMul"):  # only float32 weights remain
            for name in (i for i in nd.input if i in weights):
                assert name in ("patch_embed.proj.weight", "score_weight"), name
                assert weights[name].data_type == onnx.TensorProto.FLOAT


def test_manifest_int8_is_never_a_cuda_graph(root, tmp_path):
    src = int8c(root, TEXT_CKPT, "rerank")
    for change in ({"provider": "cuda"}, {"quantization": None}):
        bad = tmp_path / f"bad-{next(iter(change))}"
        bad.mkdir()  # the manifest alone: read_manifest reads no graph
        data = json.loads((src / "vlrank.json").read_text())
        data.update(change)
        (bad / "vlrank.json").write_text(json.dumps(data))
        with pytest.raises(ModelDirectoryError) as info:
            read_manifest(bad)
        assert info.value.field == "model" and "precision = 'int8'" in str(info.value)


# ---- golden cases ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme, bound", [("int8", INT8_SCORE), ("int4", INT4_SCORE)])
@pytest.mark.parametrize("ckpt, name", [(TEXT_CKPT, "text_rerank"), (VL_CKPT, "vl_rerank")])
def test_golden_rerank_within_bound(root, ckpt, name, scheme, bound):
    pairs = _rerank_scores(int8c(root, ckpt, "rerank", scheme), name)
    deltas = [abs(a - b) for a, b in pairs]
    assert len(deltas) > 0 and max(deltas) <= bound
    assert max(deltas) > 0  # the int8 kernels really ran: the scores moved


@pytest.mark.parametrize("scheme, bound", [("int8", INT8_COS), ("int4", INT4_COS)])
def test_golden_embeddings_within_bound(root, scheme, bound):
    pairs = _embeddings(int8c(root, VL_CKPT, "embed", scheme))
    assert len(pairs) > 0 and min(_cos(a, b) for a, b in pairs) >= bound
    for vec, _ in pairs:  # the pooled vector is still unit length (normalised in float32)
        assert abs(np.linalg.norm(vec) - 1.0) <= 1e-5


# ---- vlrank compare ----------------------------------------------------------------------------------------
def test_compare_float32_against_int8_compute_equals_direct(root):
    ref, cand = exported(VL_CKPT, "rerank"), int8c(root, VL_CKPT, "rerank")
    queries = _write(root, "int8c.jsonl", RERANK_LINES)
    report = vlrank.compare(ref, cand, queries=queries)
    _assert_report(report, _direct_rerank(ref, cand, RERANK_LINES))
    assert report["candidate"]["precision"] == "int8" and report["reference"]["precision"] == "float32"
    assert 0 < report["max_abs_diff"] <= INT8_SCORE


# ---- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, field, needle", [
    ({"precision": "int8"}, "quantize", "pass quantize='int8'"),
    ({"precision": "int8", "quantize": "int8", "dtype": "float16"}, "dtype", "pass dtype='float32'"),
    ({"precision": "int8", "quantize": "int8", "dtype": "bfloat16"}, "dtype", "pass dtype='float32'"),
    ({"precision": "int8", "quantize": "int8", "accuracy_level": 0}, "accuracy_level", "leave accuracy_level unset"),
    ({"precision": "int4", "quantize": "int4"}, "precision", "int8"),
    ({"precision": "float16", "dtype": "float16", "quantize": "int8"}, "precision", "precision='int8'"),
])
def test_bad_int8_arguments(kw, field, needle, tmp_path):
    with pytest.raises(InvalidInputError) as info:
        vlrank.export(TEXT_CKPT, tmp_path / "out", task="rerank", progress=False, **kw)
    assert info.value.field == field
    assert needle in str(info.value)
    assert not (tmp_path / "out").exists()  # refused before anything is written


@pytest.mark.parametrize("providers", ["cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"],
                                       ["CUDAExecutionProvider"]])
def test_int8_compute_refuses_cuda(root, providers):
    with pytest.raises(InvalidInputError) as info:
        vlrank.Reranker(int8c(root, TEXT_CKPT, "rerank"), providers=providers)
    assert info.value.field == "providers" and "built for the CPU" in str(info.value)
    assert "providers='cpu'" in str(info.value)


def test_cli_precision_int8(tmp_path):
    run = subprocess.run([sys.executable, "-m", "vlrank.cli", "export", str(TEXT_CKPT), str(tmp_path / "q"),
                          "--task", "rerank", "--quantize", "int8", "--precision", "int8", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert (summary["precision"], summary["provider"], summary["dtype"]) == ("int8", "cpu", "float32")
    assert summary["quantization"]["compute"] == "int8"
    bad = subprocess.run([sys.executable, "-m", "vlrank.cli", "export", str(TEXT_CKPT), str(tmp_path / "bad"),
                          "--task", "rerank", "--precision", "int8", "--quiet"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr, bad.stderr  # usage error
    assert "--quantize int8 --precision int8" in bad.stderr and not (tmp_path / "bad").exists()


def test_first_use_export_takes_int8_compute(tmp_path, monkeypatch):
    """A raw checkpoint given to Reranker with precision="int8" is exported once as int8 compute (the export
    cache's options), scores like a direct int8-compute export; without quantize it is a typed error."""
    monkeypatch.setenv("VLRANK_CACHE", str(tmp_path / "cache"))
    rr = vlrank.Reranker(TEXT_CKPT, precision="int8", quantize="int8", providers="cpu")
    assert rr.runner.manifest.precision == "int8" and rr.runner.manifest.quantization["compute"] == "int8"
    direct = vlrank.Reranker(vlrank.export(TEXT_CKPT, tmp_path / "direct", task="rerank", precision="int8",
                                           quantize="int8", progress=False), providers="cpu")
    call = {"query": "What is the capital of France?", "documents": ["Paris", "Berlin", "a cat"]}
    assert rr.rerank(**call)["results"] == direct.rerank(**call)["results"]
    with pytest.raises(InvalidInputError) as err:
        vlrank.Reranker(TEXT_CKPT, precision="int8", providers="cpu")
    assert err.value.field == "quantize" and "quantize='int8'" in str(err.value)
