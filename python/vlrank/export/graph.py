"""A small ONNX graph builder over ``onnx.helper``, shared by the decoder and vision exporters.

Every op method takes value names and returns the name(s) of its output(s), so graph code reads like
the model code it mirrors::

    g = Graph("decoder")
    x = g.input("x", FLOAT, ["B", "L", 32])
    w = g.weight("w", np.ones((32, 64), np.float32))
    y = g.matmul(x, w)
    g.output(y, "y", FLOAT, ["B", "L", 64])
    g.save(out_dir / "decoder.onnx")

Large initializers are streamed to one external-data file beside the model (``<model>.data``) as they
are added, so building an 8B decoder never holds all weights in memory and never hits protobuf's 2 GB
limit. Weights may be stored as float16 / bfloat16 (``weight(..., compute=FLOAT)`` then inserts a Cast
so the graph computes in float32 regardless of storage; see decoder.py for why).

Extending: add a method per op you need (append-only, keep them thin) or call ``g.op(...)`` directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 18  # ReduceMean/ReduceSum take axes as inputs; well covered by ORT's CPU and CUDA kernels.
FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
BFLOAT16 = TensorProto.BFLOAT16
INT64 = TensorProto.INT64
INT32 = TensorProto.INT32
MS_DOMAIN = "com.microsoft"  # ORT's contrib ops (fused attention)
BOOL = TensorProto.BOOL

# Initializers at least this large go to the external data file (small ones stay inline: one file
# read per tiny tensor would be slower than keeping them in the protobuf).
EXTERNAL_THRESHOLD = 1024
# ORT memory-maps external data when offsets are page aligned.
_ALIGN = 4096

_NP_TO_ONNX = {
    np.dtype(np.float32): FLOAT,
    np.dtype(np.float16): FLOAT16,
    np.dtype(np.int64): INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.bool_): BOOL,
    np.dtype(np.uint8): TensorProto.UINT8,  # MatMulNBits' packed weights (export/quantize.py)
}

STORAGE_TYPES = {"float32": FLOAT, "float16": FLOAT16, "bfloat16": BFLOAT16}


class Graph:
    """Accumulates nodes, inputs, outputs and initializers; ``save`` writes the model."""

    def __init__(self, name: str, *, opset: int = OPSET) -> None:
        self.name = name
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.initializers: list[TensorProto] = []
        self._counter = 0
        self._consts: dict[tuple, str] = {}
        self._data_path: Path | None = None
        self._data_file = None
        self._data_offset = 0

    # ---- naming ---------------------------------------------------------------------------------
    def fresh(self, hint: str = "v") -> str:
        self._counter += 1
        return f"{hint}_{self._counter}"

    # ---- external data ----------------------------------------------------------------------------
    def set_external_data(self, data_path: str | Path) -> None:
        """Stream large initializers into ``data_path`` (must sit beside the .onnx file)."""
        self._data_path = Path(data_path)
        self._data_file = self._data_path.open("wb")
        self._data_offset = 0

    def _append_external(self, array: np.ndarray) -> tuple[int, int]:
        assert self._data_file is not None
        pad = (-self._data_offset) % _ALIGN
        if pad:
            self._data_file.write(b"\0" * pad)
            self._data_offset += pad
        offset = self._data_offset
        # (bench) write the array's own buffer: array.tobytes() would copy it, doubling the export's peak
        # memory at the largest tensor (the embedding table). C order, as tobytes() wrote it.
        raw = memoryview(np.ascontiguousarray(array)).cast("B")
        self._data_file.write(raw)
        self._data_offset += raw.nbytes
        return offset, raw.nbytes

    # ---- graph interface ---------------------------------------------------------------------------
    def input(self, name: str, elem_type: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, value: str, name: str, elem_type: int, shape: list) -> str:
        """Expose ``value`` as graph output ``name`` (an Identity renames it when needed)."""
        if value != name:
            self.nodes.append(helper.make_node("Identity", [value], [name]))
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def initializer(self, name: str, array: np.ndarray, *, elem_type: int | None = None) -> str:
        """Add a constant tensor. ``elem_type=BFLOAT16`` takes ``array`` as uint16 bf16 bit patterns."""
        array = np.asarray(array, order="C")  # (ascontiguousarray would turn a scalar into shape (1,))
        if elem_type is None:
            elem_type = _NP_TO_ONNX[array.dtype]
        if self._data_file is not None and array.nbytes >= EXTERNAL_THRESHOLD:
            tensor = TensorProto()
            tensor.name = name
            tensor.data_type = elem_type
            tensor.dims.extend(array.shape)
            offset, length = self._append_external(array)
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", self._data_path.name), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key = key
                entry.value = value
        else:
            tensor = helper.make_tensor(name, elem_type, array.shape, array.tobytes(), raw=True)
        self.initializers.append(tensor)
        return name

    def weight(self, name: str, array: np.ndarray, *, storage: str = "float32") -> str:
        """A float weight stored as ``storage`` ("float32" | "float16" | "bfloat16" — bf16 given as bits)
        and read as float32 by the graph (a Cast that ORT constant-folds at session load)."""
        stored = self.initializer(name, array, elem_type=STORAGE_TYPES[storage])
        if storage == "float32":
            return stored
        return self.cast(stored, FLOAT)

    def const(self, value, dtype=np.int64) -> str:
        """A small constant (deduplicated): scalars and short lists of ints or floats."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.initializer(self.fresh("const"), array)
        return self._consts[key]

    # ---- generic op ----------------------------------------------------------------------------------
    def op(self, op_type: str, inputs: list[str], *, outputs: int = 1, name: str | None = None,
           domain: str | None = None, **attrs) -> str | list[str]:
        """Append one node; returns its output name (or list of names when ``outputs > 1``)."""
        outs = [self.fresh(op_type.lower()) for _ in range(outputs)]
        node = helper.make_node(op_type, inputs, outs, name=name or outs[0], domain=domain, **attrs)
        self.nodes.append(node)
        return outs[0] if outputs == 1 else outs

    # ---- op helpers (thin wrappers; add more as needed) -----------------------------------------------
    def add(self, a: str, b: str) -> str:
        return self.op("Add", [a, b])

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", [a, b])

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", [a, b])

    def div(self, a: str, b: str) -> str:
        return self.op("Div", [a, b])

    def neg(self, a: str) -> str:
        return self.op("Neg", [a])

    def sqrt(self, a: str) -> str:
        return self.op("Sqrt", [a])

    def reciprocal(self, a: str) -> str:
        return self.op("Reciprocal", [a])

    def sigmoid(self, a: str) -> str:
        return self.op("Sigmoid", [a])

    def cos(self, a: str) -> str:
        return self.op("Cos", [a])

    def sin(self, a: str) -> str:
        return self.op("Sin", [a])

    def matmul(self, a: str, b: str) -> str:
        return self.op("MatMul", [a, b])

    def softmax(self, a: str, axis: int = -1) -> str:
        return self.op("Softmax", [a], axis=axis)

    def cast(self, a: str, to: int) -> str:
        return self.op("Cast", [a], to=to)

    def reshape(self, a: str, shape: list[int] | str) -> str:
        return self.op("Reshape", [a, shape if isinstance(shape, str) else self.const(shape)])

    def transpose(self, a: str, perm: list[int]) -> str:
        return self.op("Transpose", [a], perm=perm)

    def unsqueeze(self, a: str, axes: list[int]) -> str:
        return self.op("Unsqueeze", [a, self.const(axes)])

    def squeeze(self, a: str, axes: list[int]) -> str:
        return self.op("Squeeze", [a, self.const(axes)])

    def concat(self, values: list[str], axis: int) -> str:
        return self.op("Concat", values, axis=axis)

    def split(self, a: str, sizes: list[int], axis: int) -> list[str]:
        return self.op("Split", [a, self.const(sizes)], outputs=len(sizes), axis=axis)

    def slice(self, a: str, starts: list[int], ends: list[int], axes: list[int]) -> str:
        return self.op("Slice", [a, self.const(starts), self.const(ends), self.const(axes)])

    def gather(self, data: str, indices: str, axis: int = 0) -> str:
        return self.op("Gather", [data, indices], axis=axis)

    def where(self, cond: str, a: str, b: str) -> str:
        return self.op("Where", [cond, a, b])

    def reduce_mean(self, a: str, axes: list[int], keepdims: int = 1) -> str:
        return self.op("ReduceMean", [a, self.const(axes)], keepdims=keepdims)

    def reduce_sum(self, a: str, axes: list[int], keepdims: int = 1) -> str:
        return self.op("ReduceSum", [a, self.const(axes)], keepdims=keepdims)

    def shape(self, a: str, start: int | None = None, end: int | None = None) -> str:
        attrs = {}
        if start is not None:
            attrs["start"] = start
        if end is not None:
            attrs["end"] = end
        return self.op("Shape", [a], **attrs)

    # ---- output ----------------------------------------------------------------------------------------
    def to_model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", self.opset), helper.make_opsetid(MS_DOMAIN, 1)],
            producer_name="vlrank",
        )
        model.ir_version = 9  # ORT >= 1.16 reads IR 9; newer onnx defaults to IR versions older ORT rejects
        return model

    def save(self, path: str | Path) -> list[str]:
        """Write the model (and close the external data file); returns the file names written."""
        path = Path(path)
        model = self.to_model()
        files = [path.name]
        if self._data_file is not None:
            self._data_file.close()
            self._data_file = None
            files.append(self._data_path.name)
        with open(path, "wb") as fh:
            fh.write(model.SerializeToString())
        return files

    def abort(self) -> None:
        """Close and remove a half-written external data file (export failed)."""
        if self._data_file is not None:
            self._data_file.close()
            self._data_file = None
            if self._data_path is not None and self._data_path.exists():
                os.remove(self._data_path)
