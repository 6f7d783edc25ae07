"""``vlrank.export``: a Hugging Face checkpoint -> a vlrank model directory, without torch.

The output directory holds ``vlrank.json`` (its format: vlrank/modeldir.py; written by
export/manifest.py), ``tokenizer.json``, ``decoder.onnx`` (+ ``decoder.onnx.data``) and, for Qwen3-VL,
the vision graph files written by export/vision.py.

Only exporting imports this package (and with it onnx): ``import vlrank`` and running an exported model
never do. ``vlrank.export`` is therefore loaded on first use, and Python then binds this package itself as
``vlrank.export``; calling the package calls ``export`` (``_CallablePackage``), so ``vlrank.export(...)``
works whichever of the two a caller reached first.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
import types
from pathlib import Path

from vlrank.errors import InvalidInputError, ModelDirectoryError
from vlrank.export.checkpoint import Checkpoint, checkpoint_hash, infer_task, open_checkpoint
from vlrank.export.decoder import PRECISIONS, build_decoder, check_precision
from vlrank.export.manifest import export_manifest, special_token_ids
from vlrank.export.quantize import DEFAULT_BLOCK_SIZE, Quantization, check_quantize
from vlrank.export.vision import build_vision_graph, vision_spec
from vlrank.modeldir import DECODER_FILE, MANIFEST, TASKS

DTYPES = ("float32", "float16", "bfloat16")
#: every ``precision=``: the graph dtypes (decoder.PRECISIONS) and int8 compute (export/quantize.py)
COMPUTE_PRECISIONS = (*PRECISIONS, "int8")

__all__ = ["export", "resolve_checkpoint", "infer_task", "DTYPES", "TASKS"]


def resolve_checkpoint(src: str | Path) -> Path:
    """A local checkpoint directory, or a hub id downloaded with huggingface_hub."""
    path = Path(src).expanduser()
    if path.exists():
        if not path.is_dir():  # a file is a bad `model` argument, not a checkpoint
            raise ModelDirectoryError(f"{src}: is a file, not a directory; pass a checkpoint directory, an exported "
                                      "vlrank directory (with vlrank.json) or a hub id", field="model")
        return path
    text = str(src)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download
        except ImportError as exc:  # pragma: no cover - declared dependency
            raise ModelDirectoryError("downloading a hub id needs huggingface_hub: pip install huggingface_hub",
                                      field="model") from exc
        try:
            return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
        except Exception as exc:  # noqa: BLE001 - hub errors come in many classes
            raise ModelDirectoryError(f"could not download '{text}' from the Hugging Face hub: {exc}; "
                                      "pass a local checkpoint directory instead", field="model") from exc
    raise ModelDirectoryError(f"{src}: no such directory (nor a hub id of the form owner/name)", field="model")


class _Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal or forced)."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled = enabled
        self.label = label
        self.start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {done}/{total} layers {time.monotonic() - self.start:5.1f}s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def export(src: str | Path, out_dir: str | Path, *, task: str | None = None, dtype: str = "float32",
           precision: str = "float32", quantize: str | None = None, block_size: int = DEFAULT_BLOCK_SIZE,
           accuracy_level: int | None = None, progress: bool = True, name: str | None = None,
           prefix_kv: bool | None = None) -> Path:
    """Export a Qwen3 / Qwen3-VL checkpoint (directory or hub id) to ``out_dir``; returns ``out_dir``.

    ``task``: "rerank" | "embed" (default: from the checkpoint's name). ``dtype``: weight storage of the
    ONNX files ("float32" | "float16" | "bfloat16"). ``precision``: compute dtype — "float32" (the CPU
    graph, any storage), "float16" | "bfloat16" (CUDA graphs; ``dtype`` must equal it) or "int8" (a CPU
    graph whose Linears multiply int8 activations; needs ``quantize``, float32 ``dtype``). The manifest
    records both and the provider the graph is meant for ("cpu" | "cuda").
    ``quantize``: "int8" | "int4" — every Linear of the decoder and the vision tower as a block-quantized
    ``com.microsoft.MatMulNBits`` (``block_size`` weights per scale, ``accuracy_level`` 0 = float32
    compute, the default for precision "float32"; export/quantize.py), or with precision "int8" the int8
    kernels export/quantize.py chooses; the manifest records it under ``quantization``.
    ``prefix_kv``: a rerank decoder that also takes / returns a shared prompt prefix's K/V (optional inputs,
    extra outputs; export/decoder.py), so ``Reranker(share_prefix=...)`` runs a call's query once; the
    manifest records it (``decoder.prefix_kv``). None (default): on for rerank exports (the path costs
    nothing when unused: empty default inputs, empty outputs), off for embed exports, which have no prefix.
    """
    if prefix_kv is not None and not isinstance(prefix_kv, bool):
        raise InvalidInputError(f"prefix_kv={prefix_kv!r}; pass True, False or None (on for rerank)",
                                field="prefix_kv")
    if precision not in COMPUTE_PRECISIONS:
        raise InvalidInputError(f"precision={precision!r}; pass one of {', '.join(COMPUTE_PRECISIONS)}",
                                field="precision")
    # An int8-compute graph is a float32 graph around its integer GEMMs: the builders see float32.
    graph_precision = "float32" if precision == "int8" else precision
    check_precision(graph_precision, dtype)
    if dtype not in DTYPES:
        raise InvalidInputError(f"dtype={dtype!r}; pass one of {', '.join(DTYPES)}", field="dtype")
    quant = check_quantize(quantize, block_size=block_size, accuracy_level=accuracy_level, precision=precision,
                           dtype=dtype)
    root = resolve_checkpoint(src)
    _refuse_export_dir(root)
    ckpt = open_checkpoint(root)
    model_name = name or (str(src) if not Path(src).expanduser().exists() else ckpt.name)
    task = infer_task(ckpt, model_name, task)
    if prefix_kv is None:
        prefix_kv = task == "rerank"
    if prefix_kv and task != "rerank":
        raise InvalidInputError(f"prefix_kv=True is for rerank exports (documents sharing a query); this is a "
                                f"'{task}' export: pass prefix_kv=False", field="prefix_kv")
    tokenizer = root / "tokenizer.json"
    if not tokenizer.is_file():
        raise ModelDirectoryError(f"{root}: tokenizer.json is missing; download it with the checkpoint",
                                  field="model")
    special = special_token_ids(tokenizer)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a parent that is a file: a bad `out_dir` argument
        raise InvalidInputError(f"out_dir: cannot create {str(out)!r} ({exc.strerror or exc}); pass a writable "
                                "directory path", field="out_dir") from exc
    vision = vision_spec(ckpt).meta() if ckpt.family == "qwen3_vl" else None
    deepstack = vision.deepstack_layers if vision else 0
    image_pad = ckpt.config.get("image_token_id", special.get("image_pad"))
    if ckpt.family == "qwen3_vl":
        special["image_pad"] = int(image_pad)
        video_pad = ckpt.config.get("video_token_id", special.get("video_pad"))
        if video_pad is not None:
            special["video_pad"] = int(video_pad)
    else:
        special.pop("video_pad", None)  # a text model has no video input
    bar = _Progress(progress and sys.stderr.isatty(), f"export {model_name}")
    files = build_decoder(ckpt, out, task=task, dtype=dtype, yes_id=special["yes"], no_id=special["no"],
                          image_token_id=special.get("image_pad"), deepstack_layers=deepstack,
                          precision=graph_precision, quant=quant, progress=bar,
                          video_token_id=special.get("video_pad"), prefix_kv=prefix_kv)
    file_map = {"tokenizer": "tokenizer.json", "decoder": DECODER_FILE}
    if len(files) > 1:
        file_map["decoder_data"] = files[1]
    shutil.copyfile(tokenizer, out / "tokenizer.json")
    if ckpt.family == "qwen3_vl":
        file_map.update(_export_vision(ckpt, out, dtype, graph_precision, quant))
    manifest = export_manifest(out, ckpt, name=model_name, task=task, dtype=dtype, precision=precision,
                               quantization=None if quant is None else quant.manifest(), special=special,
                               files=file_map, vision=vision, source_path=str(root.resolve()),
                               source_hash=checkpoint_hash(root))
    dataclasses.replace(manifest, prefix_kv=prefix_kv).write()
    ckpt.close()
    return out


def _refuse_export_dir(root: Path) -> None:
    """An exported vlrank directory is not a checkpoint: its graphs (quantized or not) cannot be exported
    or quantized again; the checkpoint it came from can."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        return
    import json

    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = {}
    data = data if isinstance(data, dict) else {}
    quant = data.get("quantization") or {}
    what = f"an {quant.get('scheme')}-quantized vlrank export" if quant else "a vlrank export"
    source = (data.get("source") or {}).get("path") if isinstance(data.get("source"), dict) else None
    hint = f" ({source}, recorded in its {MANIFEST})" if source else ""
    raise ModelDirectoryError(
        f"{root} is {what}, not a checkpoint: exports (and quantization) start from the Hugging Face checkpoint; "
        f"pass the checkpoint directory it was exported from{hint}", field="model")


def _export_vision(ckpt: Checkpoint, out: Path, dtype: str, precision: str,
                   quant: Quantization | None) -> dict[str, str]:
    """The vision graph files (export/vision.py): the first is the graph, a second one its external data."""
    files = build_vision_graph(ckpt, out, dtype, precision=precision, quant=quant)
    result = {"vision": files[0]} if files else {}
    if len(files) > 1:
        result["vision_data"] = files[1]
    return result


class _CallablePackage(types.ModuleType):
    """This package, callable as ``export`` (see the module docstring)."""

    def __call__(self, src: str | Path, out_dir: str | Path, **options) -> Path:
        return export(src, out_dir, **options)


sys.modules[__name__].__class__ = _CallablePackage
