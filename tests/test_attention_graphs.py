"""Fused attention and half-precision exports: no (L × L) tensor in any graph, float32 graphs unchanged
in semantics (the golden tests check the scores), half graphs valid ONNX whose every (op, dtype) has a
CUDA kernel in ONNX Runtime's registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from export_support import TEXT_CKPT, VL_CKPT, exported, run_rows, session
from vlrank.errors import InvalidInputError
from vlrank.export import export

# (op, domain, dtype) the CUDA execution provider registers, copied from ONNX Runtime's kernel registry
# (onnxruntime/core/providers/cuda/cuda_execution_provider.cc at 0018ddb6, and
# onnxruntime/contrib_ops/cuda/cuda_contrib_kernels.cc at 004b79ed). "*" marks a kernel registered once
# without a type in its class name (its constraint lists every fixed-size tensor type, or every numeric
# type for Max/CumSum); the opset-18 graphs resolve to the newest version of each.
CUDA_KERNELS = {
    # typed: "13, BFloat16, MatMul", "13, MLFloat16, MatMul", "13, float, MatMul"
    ("MatMul", "ai.onnx", "float"), ("MatMul", "ai.onnx", "float16"), ("MatMul", "ai.onnx", "bfloat16"),
    # "13, <T>, Cast" for float, MLFloat16, BFloat16, int64_t, bool (every target type)
    ("Cast", "ai.onnx", "float"), ("Cast", "ai.onnx", "float16"), ("Cast", "ai.onnx", "bfloat16"),
    ("Cast", "ai.onnx", "int64"), ("Cast", "ai.onnx", "bool"),
    # contrib: MLFloat16_MLFloat16 / BFloat16_BFloat16 GroupQueryAttention, *_* MultiHeadAttention
    ("GroupQueryAttention", "com.microsoft", "float16"), ("GroupQueryAttention", "com.microsoft", "bfloat16"),
    ("MultiHeadAttention", "com.microsoft", "float16"), ("MultiHeadAttention", "com.microsoft", "bfloat16"),
    ("MultiHeadAttention", "com.microsoft", "float"),
    # typed float kernels at opset 13/14
    *(((op, "ai.onnx", "float")) for op in (
        "Add", "Sub", "Mul", "Div", "Neg", "Sqrt", "Reciprocal", "Sigmoid", "Tanh", "Erf", "Cos", "Sin",
        "Softmax", "ReduceMean", "ReduceSum", "Equal", "Where", "LayerNormalization")),
    ("Sub", "ai.onnx", "int64"), ("ReduceSum", "ai.onnx", "int64"), ("Equal", "ai.onnx", "int64"),
    # "14, int64_t, Add": the shared-prefix lengths (rows' own + the prefix's tokens)
    ("Add", "ai.onnx", "int64"),
    # untyped class names ("13, Max", "14, CumSum", "14, Reshape", "13, Squeeze", ...)
    ("Max", "ai.onnx", "*"), ("CumSum", "ai.onnx", "*"), ("Reshape", "ai.onnx", "*"),
    ("Squeeze", "ai.onnx", "*"), ("Unsqueeze", "ai.onnx", "*"), ("Gather", "ai.onnx", "*"),
    ("GatherND", "ai.onnx", "*"), ("Transpose", "ai.onnx", "*"), ("Concat", "ai.onnx", "*"),
    ("Split", "ai.onnx", "*"), ("Shape", "ai.onnx", "*"), ("Identity", "ai.onnx", "*"),
    ("Expand", "ai.onnx", "*"),  # "13, Expand": the shared prefix's K/V broadcast to the batch
    # "13, int32_t, Slice" / "13, int64_t, Slice": typed by the index type Tind; T is every fixed-size type
    ("Slice", "ai.onnx", "*"),
}
_UNTYPED = {op for op, _, t in CUDA_KERNELS if t == "*"}
_NAMES = {TensorProto.FLOAT: "float", TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16",
          TensorProto.INT64: "int64", TensorProto.INT32: "int32", TensorProto.BOOL: "bool"}
_BOOL_OUT = {"Equal", "GreaterOrEqual", "And"}


def typed_ops(path: Path) -> set[tuple[str, str, str]]:
    """(op, domain, dtype of its type-constrained input) for every node, by propagating element types."""
    model = onnx.load(str(path), load_external_data=False)
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    found = set()
    for node in model.graph.node:
        t = types[node.input[1 if node.op_type == "Where" else 0]]
        found.add((node.op_type, node.domain or "ai.onnx", _NAMES[t]))
        for out in node.output:
            if node.op_type == "Cast":
                types[out] = next(a.i for a in node.attribute if a.name == "to")
            elif node.op_type == "Shape":
                types[out] = TensorProto.INT64
            elif node.op_type in _BOOL_OUT:
                types[out] = TensorProto.BOOL
            else:
                types[out] = t
    return found


def _half_export(tmp: Path, ckpt: Path, task: str, precision: str) -> Path:
    return export(ckpt, tmp / f"{ckpt.name}-{task}-{precision}", task=task, dtype=precision,
                  precision=precision, progress=False)


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_half_graphs_are_valid_and_cuda_covers_every_op(tmp_path: Path, precision: str) -> None:
    for ckpt, task in ((TEXT_CKPT, "rerank"), (VL_CKPT, "rerank"), (VL_CKPT, "embed")):
        out = _half_export(tmp_path, ckpt, task, precision)
        manifest = (out / "vlrank.json").read_text()
        assert f'"precision": "{precision}"' in manifest and '"provider": "cuda"' in manifest
        graphs = [out / "decoder.onnx"] + ([out / "vision.onnx"] if ckpt == VL_CKPT else [])
        for graph in graphs:
            onnx.checker.check_model(str(graph))
            ops = typed_ops(graph)
            half = {op for op, _, t in ops if t == precision}
            assert {"MatMul"} <= half, graph  # the MatMuls do run in half
            assert ("GroupQueryAttention" if graph.name == "decoder.onnx" else "MultiHeadAttention") in half
            missing = {o for o in ops if o not in CUDA_KERNELS and o[0] not in _UNTYPED}
            assert not missing, f"{graph.name} ({precision}): no CUDA kernel for {sorted(missing)}"


def test_float32_graphs_have_no_quadratic_attention() -> None:
    """No Softmax over (L × L): the decoder's only Softmax is the pruned final layer's one-query one,
    the vision graph has none, and attention is the fused ops."""
    text = typed_ops(exported(TEXT_CKPT, "rerank") / "decoder.onnx")
    assert ("GroupQueryAttention", "com.microsoft", "float") in text
    model = onnx.load(str(exported(TEXT_CKPT, "rerank") / "decoder.onnx"), load_external_data=False)
    layers = sum(n.op_type == "GroupQueryAttention" for n in model.graph.node)
    assert sum(n.op_type == "Softmax" for n in model.graph.node) == 1 and layers >= 1
    vision = onnx.load(str(exported(VL_CKPT, "rerank") / "vision.onnx"), load_external_data=False)
    assert not any(n.op_type == "Softmax" for n in vision.graph.node)
    assert any(n.op_type == "MultiHeadAttention" for n in vision.graph.node)


def test_right_padding_with_fused_attention() -> None:
    """Rows of very different lengths in one batch (GQA's per-row seqlens_k) score as they do alone."""
    sess = session(exported(TEXT_CKPT, "rerank"))
    rows = [(list(range(100, 100 + n)), None) for n in (3, 40, 17)]
    batched = run_rows(sess, rows, "logits", extra_pad=9)
    for b, row in enumerate(rows):
        alone = run_rows(sess, [row], "logits")
        np.testing.assert_allclose(batched[b], alone[0], atol=1e-5, rtol=0)


def test_precision_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="precision"):
        export(TEXT_CKPT, tmp_path / "a", task="rerank", precision="int8", progress=False)
    with pytest.raises(InvalidInputError, match="dtype='float16'"):
        export(TEXT_CKPT, tmp_path / "b", task="rerank", dtype="float32", precision="float16", progress=False)
