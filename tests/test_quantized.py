"""int8 / int4 weight-only quantized exports (``quantize=``, export/quantize.py).

- The MatMulNBits layout: one node built by ``matmul_nbits`` computes exactly ``x @ dequantize(w).T`` in
  ORT's own kernel (both bit widths, K a multiple of the block or not, every block size).
- Exactness of the export: a quantized export scores exactly like a float32 export of the checkpoint whose
  Linear weights were replaced by their dequantized values (every Linear is quantized; nothing else moves).
- Golden cases through the public API within stated bounds (measured by benches/bench_quantized.py on these
  models: int8 max |Δscore| 5.1e-3, embedding cosine >= 0.99987; int4 max |Δscore| 5.8e-2, cosine >= 0.953
  — the tiny models' 16 / 32-wide layers make one block per column, the worst case for int4).
- Bad input: typed errors naming the field and what to pass.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from export_support import GOLDEN, TEXT_CKPT, VL_CKPT, cases

import vlrank
from vlrank.engine.manifest import read_manifest
from vlrank.errors import InvalidInputError, ModelDirectoryError
from vlrank.export.checkpoint import open_checkpoint
from vlrank.export.graph import FLOAT, Graph
from vlrank.export.quantize import Quantization, dequantize_blocks, matmul_nbits, quantize_blocks

# Bounds on |Δscore| against the golden reference and on the embedding cosine (module docstring).
INT8_SCORE, INT8_COS = 1e-2, 0.9995
INT4_SCORE, INT4_COS = 1e-1, 0.93
LINEAR_SUFFIXES = ("_proj.weight", "attn.qkv.weight", "attn.proj.weight", "linear_fc1.weight", "linear_fc2.weight")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quant")


_EXPORTS: dict[tuple, Path] = {}


def quantized(root: Path, ckpt: Path, task: str, scheme: str, **kw) -> Path:
    key = (ckpt.name, task, scheme, tuple(sorted(kw.items())))
    if key not in _EXPORTS:
        out = root / "-".join(map(str, (ckpt.name, task, scheme, *kw.values())))
        _EXPORTS[key] = vlrank.export(ckpt, out, task=task, quantize=scheme, progress=False, **kw)
    return _EXPORTS[key]


def _side(spec: dict) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": str(GOLDEN / p)}} for p in spec.get("images", [])]
    parts += [{"type": "text", "text": t} for t in spec.get("texts", [])]
    return {"content": parts}


def _rerank_scores(model: Path, name: str) -> list[tuple[float, float]]:
    """(got, reference) for every result of golden ``name`` (text_rerank / vl_rerank, images included)."""
    pairs = []
    for case in cases(name + ".json"):
        kw = {} if name == "text_rerank" else {"min_pixels": case["min_pixels"], "max_pixels": case["max_pixels"]}
        rr = vlrank.Reranker(model, max_length=case["max_length"], providers="cpu", **kw)
        if name == "text_rerank":
            out = rr.rerank(case["query"], case["documents"], instruction=case["instruction"])
        else:
            out = rr.rerank(_side(case["query"]), [_side(d) for d in case["documents"]], instruction=case["instruction"])
        got = {r["index"]: r["relevance_score"] for r in out["results"]}
        pairs += [(got[i], ref["score"]) for i, ref in enumerate(case["results"])]
    return pairs


def _embeddings(model: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    em = vlrank.Embedder(model, providers="cpu")
    return [(np.asarray(em.embed(_side(c["input"]), instruction=c["instruction"])["data"][0]["embedding"]),
             np.asarray(c["embedding"])) for c in cases("vl_embed.json")]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---- the MatMulNBits layout --------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("k, n, block", [(64, 48, 32), (80, 40, 32), (16, 24, 32), (96, 32, 16), (300, 8, 256),
                                         (4304, 16, 32), (128, 16, 64), (256, 8, 128)])
def test_matmul_nbits_node_is_x_times_dequantized_weight(bits, k, n, block):
    rng = np.random.default_rng(k * n + bits)
    w = rng.normal(size=(n, k)).astype(np.float32)
    w[0, :block] = 0.0  # an all-zero block: scale 0, stored as the zero point
    g = Graph("t")
    x = g.input("x", FLOAT, ["M", k])
    g.output(matmul_nbits(g, x, "w", w, Quantization("int4" if bits == 4 else "int8", block)), "y", FLOAT, ["M", n])
    sess = ort.InferenceSession(g.to_model().SerializeToString(), providers=["CPUExecutionProvider"])
    xs = rng.normal(size=(5, k)).astype(np.float32)
    packed, scales = quantize_blocks(w, bits=bits, block_size=block)
    blocks = -(-k // block)
    assert packed.shape == (n, blocks, block * bits // 8) and packed.dtype == np.uint8
    assert scales.shape == (n, blocks)
    deq = dequantize_blocks(packed, scales, bits=bits, k=k)
    expected = xs.astype(np.float64) @ deq.T.astype(np.float64)
    got = sess.run(None, {"x": xs})[0]
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    # symmetric: each block's largest-magnitude weight is exact, every weight within one step of its value
    step = np.repeat(np.abs(scales), block, axis=1)[:, :k]
    assert np.all(np.abs(deq - w) <= step * (1 + 1e-6))
    padded = np.pad(w, ((0, 0), (0, blocks * block - k))).reshape(n, blocks, block)
    idx = np.abs(padded).argmax(-1)
    peak = np.take_along_axis(padded, idx[..., None], -1)[..., 0]
    deq_padded = np.pad(deq, ((0, 0), (0, blocks * block - k))).reshape(n, blocks, block)
    np.testing.assert_allclose(np.take_along_axis(deq_padded, idx[..., None], -1)[..., 0], peak, rtol=1e-6)
    assert np.all(deq[0, :block] == 0.0)


# ---- exactness: quantized export == float32 export of the dequantized weights ------------------------------
def _write_f32_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        blob = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(encoded)) + encoded)
        for blob in blobs:
            fh.write(blob)


def _dequantized_checkpoint(src: Path, out: Path, q: Quantization) -> Path:
    """A copy of ``src`` whose Linear weights are their quantize -> dequantize round trip (float32 file);
    the token embedding table (the golden checkpoints are bf16, which a quantized export keeps) unchanged."""
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("*.safetensors"))
    ck = open_checkpoint(src)
    tensors = {}
    for name in ck.tensors:
        w = ck.tensor(name)
        if name.endswith(LINEAR_SUFFIXES) and "patch_embed" not in name:
            packed, scales = quantize_blocks(w, bits=q.bits, block_size=q.block_size)
            w = dequantize_blocks(packed, scales, bits=q.bits, k=w.shape[1])
        tensors[name] = w
    ck.close()
    _write_f32_safetensors(out / "model.safetensors", tensors)
    return out


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_export_scores_as_its_dequantized_weights(scheme, root):
    q = Quantization(scheme)
    deq = _dequantized_checkpoint(VL_CKPT, root / f"deq-vl-{scheme}", q)
    reference = vlrank.export(deq, root / f"deq-vl-{scheme}-f32", task="rerank", progress=False, name="tiny-qwen3-vl")
    got = _rerank_scores(quantized(root, VL_CKPT, "rerank", scheme), "vl_rerank")
    want = _rerank_scores(reference, "vl_rerank")
    assert len(got) == 28
    # float32 kernels summing in another order: the same float32 noise as the unquantized golden tests
    assert max(abs(a[0] - b[0]) for a, b in zip(got, want)) <= 1e-5


def test_text_int4_export_scores_as_its_dequantized_weights(root):
    q = Quantization("int4")
    deq = _dequantized_checkpoint(TEXT_CKPT, root / "deq-text-int4", q)
    reference = vlrank.export(deq, root / "deq-text-int4-f32", task="rerank", progress=False)
    got = _rerank_scores(quantized(root, TEXT_CKPT, "rerank", "int4"), "text_rerank")
    want = _rerank_scores(reference, "text_rerank")
    assert max(abs(a[0] - b[0]) for a, b in zip(got, want)) <= 1e-5


# ---- golden cases within the stated bounds --------------------------------------------------------------
@pytest.mark.parametrize("scheme, bound", [("int8", INT8_SCORE), ("int4", INT4_SCORE)])
@pytest.mark.parametrize("name, ckpt", [("text_rerank", TEXT_CKPT), ("vl_rerank", VL_CKPT)])
def test_golden_rerank_within_bound(scheme, bound, name, ckpt, root):
    pairs = _rerank_scores(quantized(root, ckpt, "rerank", scheme), name)
    deltas = [abs(a - b) for a, b in pairs]
    assert len(deltas) == {"text_rerank": 24, "vl_rerank": 28}[name]
    assert max(deltas) <= bound
    assert max(deltas) > 0.0  # really quantized: the float32 exports match the reference to ~1e-7


@pytest.mark.parametrize("scheme, bound", [("int8", INT8_COS), ("int4", INT4_COS)])
def test_golden_embed_within_bound(scheme, bound, root):
    pairs = _embeddings(quantized(root, VL_CKPT, "embed", scheme))
    assert len(pairs) == 12
    cosines = [_cos(a, b) for a, b in pairs]
    assert min(cosines) >= bound
    for vec, _ in pairs:  # the pooled vector is still unit length (normalised in float32)
        assert abs(np.linalg.norm(vec) - 1.0) <= 1e-5


def test_accuracy_level_4_runs_and_is_recorded(root):
    model = quantized(root, TEXT_CKPT, "rerank", "int8", accuracy_level=4)
    assert read_manifest(model).quantization["accuracy_level"] == 4
    deltas = [abs(a - b) for a, b in _rerank_scores(model, "text_rerank")]
    assert max(deltas) <= INT8_SCORE


# ---- what the export holds ---------------------------------------------------------------------------------
def test_every_linear_is_matmul_nbits_and_the_rest_stays_float(root):
    model = quantized(root, VL_CKPT, "rerank", "int4", block_size=16)
    m = read_manifest(model)
    assert m.quantization == {"scheme": "int4", "bits": 4, "block_size": 16, "accuracy_level": 0, "symmetric": True,
                              "op": "com.microsoft.MatMulNBits"}
    assert (m.dtype, m.precision, m.provider) == ("float32", "float32", "cpu")
    cfg = json.loads((VL_CKPT / "config.json").read_text())
    layers, depth = cfg["text_config"]["num_hidden_layers"], cfg["vision_config"]["depth"]
    deepstack = len(cfg["vision_config"]["deepstack_visual_indexes"])
    for graph_file, count in (("decoder.onnx", 7 * layers), ("vision.onnx", 4 * depth + 2 * (1 + deepstack))):
        proto = onnx.load(str(model / graph_file), load_external_data=False)
        nodes = [n for n in proto.graph.node if n.op_type == "MatMulNBits"]
        assert len(nodes) == count
        for node in nodes:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert node.domain == "com.microsoft" and attrs["bits"] == 4 and attrs["block_size"] == 16
            assert attrs["accuracy_level"] == 0 and len(node.input) == 3  # no zero points: symmetric
        weights = {t.name: t for t in proto.graph.initializer}
        # every remaining MatMul multiplies activations, or the float32 patch embedding / score rows
        for node in (n for n in proto.graph.node if n.op_type == "MatMul"):
            for name in node.input:
                if name in weights:
                    assert name in ("patch_embed.proj.weight", "score_weight"), name
                    assert weights[name].data_type == onnx.TensorProto.FLOAT
        if graph_file == "decoder.onnx":  # bf16 checkpoint: the table is kept bf16 (half size, lossless)
            assert weights["embed_tokens"].data_type == onnx.TensorProto.BFLOAT16
            assert weights["score_weight"].data_type == onnx.TensorProto.FLOAT
            assert all(weights[n].data_type == onnx.TensorProto.FLOAT for n in weights if n.endswith("norm.weight"))


def test_quantized_weights_take_bits_per_weight_plus_a_scale_per_block(root):
    files = {}
    for scheme, bits in (("int8", 8), ("int4", 4)):
        model = quantized(root, VL_CKPT, "rerank", scheme)
        proto = onnx.load(str(model / "vision.onnx"), load_external_data=False)
        weights = {t.name: t for t in proto.graph.initializer}
        for node in (n for n in proto.graph.node if n.op_type == "MatMulNBits"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            blocks = -(-attrs["K"] // 32)
            packed, scales = weights[node.input[1]], weights[node.input[2]]
            assert list(packed.dims) == [attrs["N"], blocks, 32 * bits // 8]
            assert packed.data_type == onnx.TensorProto.UINT8
            assert list(scales.dims) == [attrs["N"] * blocks] and scales.data_type == onnx.TensorProto.FLOAT
        files[scheme] = (model / "vision.onnx.data").stat().st_size
    f32 = vlrank.export(VL_CKPT, root / "vl-f32-size", task="rerank", progress=False)
    assert files["int4"] < files["int8"] < (f32 / "vision.onnx.data").stat().st_size


# ---- bad input --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, field, needle", [
    ({"quantize": "int3"}, "quantize", "quantize='int8' or quantize='int4'"),
    ({"quantize": "INT8"}, "quantize", "quantize='int8'"),
    ({"quantize": "int4", "block_size": 24}, "block_size", "16, 32, 64, 128, 256"),
    ({"quantize": "int4", "block_size": 8}, "block_size", "power of two"),
    ({"quantize": "int8", "block_size": 512}, "block_size", "power of two"),
    ({"quantize": "int8", "block_size": True}, "block_size", "default 32"),
    ({"quantize": "int8", "accuracy_level": 7}, "accuracy_level", "pass 0"),
    ({"quantize": "int4", "precision": "float16", "dtype": "float16"}, "precision", "precision='float32'"),
])
def test_bad_quantize_arguments(kw, field, needle, tmp_path):
    with pytest.raises(InvalidInputError) as info:
        vlrank.export(TEXT_CKPT, tmp_path / "out", task="rerank", progress=False, **kw)
    assert info.value.field == field
    assert needle in str(info.value)
    assert not (tmp_path / "out").exists()  # refused before anything is written


@pytest.mark.parametrize("scheme", ["int4", None])
def test_quantizing_an_export_names_the_checkpoint_to_pass(scheme, root, tmp_path):
    src = quantized(root, TEXT_CKPT, "rerank", "int4") if scheme else vlrank.export(
        TEXT_CKPT, root / "text-f32-src", task="rerank", progress=False)
    with pytest.raises(ModelDirectoryError) as info:
        vlrank.export(src, tmp_path / "again", task="rerank", quantize="int8", progress=False)
    msg = str(info.value)
    assert info.value.field == "model"
    assert ("int4-quantized vlrank export" if scheme else "is a vlrank export") in msg
    assert str(TEXT_CKPT.resolve()) in msg and "pass the checkpoint directory" in msg


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlrank.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_quantize(tmp_path):
    ok = _cli("export", TEXT_CKPT, tmp_path / "q", "--task", "rerank", "--quantize", "int8", "--block-size", "16",
              "--quiet")
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["quantization"]["scheme"] == "int8" and summary["quantization"]["block_size"] == 16
    rr = vlrank.Reranker(tmp_path / "q", providers="cpu")
    case = cases("text_rerank.json")[0]
    out = rr.rerank(case["query"], case["documents"], instruction=case["instruction"])
    got = {r["index"]: r["relevance_score"] for r in out["results"]}
    assert max(abs(got[i] - r["score"]) for i, r in enumerate(case["results"])) <= INT8_SCORE
    for args, needle in ((["--quantize", "int3"], "quantize='int8' or quantize='int4'"),
                         (["--quantize", "int4", "--block-size", "48"], "block_size"),
                         (["--block-size", "64"], "pass --quantize int8|int4")):
        bad = _cli("export", TEXT_CKPT, tmp_path / "bad", "--task", "rerank", "--quiet", *args)
        assert bad.returncode == 1 and bad.stdout == "" and "Traceback" not in bad.stderr, bad.stderr
        assert needle in bad.stderr, bad.stderr
    again = _cli("export", tmp_path / "q", tmp_path / "again", "--quantize", "int4", "--quiet")
    assert again.returncode == 1 and "int8-quantized vlrank export" in again.stderr, again.stderr
