"""vlrank.export: manifest, storage dtypes, checkpoint layouts (sharded, f32), typed errors, CLI."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from vlrank.modeldir import read_manifest
from export_support import (
    TEXT_CKPT,
    VL_CKPT,
    cases,
    exported,
    run_rows,
    session,
    sigmoid,
    softmax_yes,
)

from vlrank.errors import InvalidInputError, ModelDirectoryError
from vlrank.export import export
from vlrank.export.checkpoint import bf16_bits_to_f32, f32_to_bf16_bits, open_checkpoint
from vlrank.export.decoder import inv_freq, mrope_axis_of_frequency
from vlrank import _native
from vlrank.engine.manifest import read_manifest
from vlrank.engine.sessions import create_session

TEXT_ROWS = [r for case in cases("text_rerank.json") for r in case["results"]]
VL_TEXT_ROWS = [r for case in cases("vl_rerank.json") for r in case["results"] if 151655 not in r["input_ids"]]


def _text_scores(model_dir: Path) -> np.ndarray:
    sess = create_session(model_dir / "decoder.onnx", providers="cpu")
    return softmax_yes(run_rows(sess, [(r["input_ids"], None) for r in TEXT_ROWS], "logits"))


# ---- manifest ----------------------------------------------------------------------------------------
def test_manifest_text_rerank() -> None:
    m = read_manifest(exported(TEXT_CKPT, "rerank"))
    assert (m.family, m.task, m.dtype) == ("qwen3", "rerank", "float32")
    assert m.special["yes"] == 9693 and m.special["no"] == 2152
    assert m.special["im_start"] == 151644 and m.special["im_end"] == 151645
    assert m.max_length == 8192
    assert m.decoder_output == "logits"
    assert m.dims.hidden_size == open_checkpoint(TEXT_CKPT).text.hidden_size
    for key in ("tokenizer", "decoder", "decoder_data"):
        assert m.file(key).is_file()
    assert len(m.source_hash) == 64


def test_manifest_vl_tasks() -> None:
    rr = read_manifest(exported(VL_CKPT, "rerank"))
    em = read_manifest(exported(VL_CKPT, "embed"))
    assert (rr.family, rr.task, rr.max_length, rr.decoder_output) == ("qwen3_vl", "rerank", 10240, "logit")
    assert (em.task, em.max_length, em.decoder_output) == ("embed", 8192, "embedding")
    assert rr.special["image_pad"] == 151655
    assert rr.dims.deepstack_layers == len(
        json.loads((VL_CKPT / "config.json").read_text())["vision_config"]["deepstack_visual_indexes"])
    assert rr.image.patch_size == 16 and rr.image.spatial_merge_size == 2
    assert rr.source_hash == em.source_hash
    # the manifest records the defaults the export used (owned by the Rust core)
    assert (rr.context_length, rr.image.min_pixels, rr.image.max_pixels) == (32768, 4096, 1310720)
    assert rr.prompt.instruction == _native.VL_RERANK_DEFAULT_INSTRUCTION
    assert em.prompt.system is None and em.prompt.instruction == _native.EMBED_DEFAULT_INSTRUCTION


def test_graph_outputs_only_the_task_head() -> None:
    """Never the full-vocabulary logits: the task head, at most 2 wide (or hidden for embed), is the last output;
    a rerank graph's others are its shared-prefix K/V per layer (export/decoder.py), empty unless asked for."""
    for ckpt, task, name, shape in [(TEXT_CKPT, "rerank", "logits", ["batch", 2]),
                                    (VL_CKPT, "rerank", "logit", ["batch"]),
                                    (VL_CKPT, "embed", "embedding", ["batch", None])]:
        outs = session(exported(ckpt, task)).get_outputs()
        layers = read_manifest(exported(ckpt, task)).dims.num_layers if task == "rerank" else 0
        assert [o.name for o in outs] == [f"present_{kind}.{i}" for i in range(layers)
                                          for kind in ("key", "value")] + [name]
        assert len(outs[-1].shape) == len(shape)


# ---- storage dtypes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_storage_matches_float32(dtype: str) -> None:
    ref = _text_scores(exported(TEXT_CKPT, "rerank"))
    got = _text_scores(exported(TEXT_CKPT, "rerank", dtype))
    assert np.max(np.abs(got - ref)) <= 1e-2
    # The checkpoint is bf16, so bf16 storage (and f16 for these small weights) is lossless.
    assert np.max(np.abs(got - ref)) <= 1e-5
    data = exported(TEXT_CKPT, "rerank", dtype) / "decoder.onnx.data"
    assert data.stat().st_size < (exported(TEXT_CKPT, "rerank") / "decoder.onnx.data").stat().st_size * 0.6


def test_half_storage_vl_embed() -> None:
    rows = [(r["input_ids"], r["position_ids"]) for r in VL_TEXT_ROWS[:4]]
    ref = run_rows(session(exported(VL_CKPT, "embed")), rows, "embedding")
    got = run_rows(session(exported(VL_CKPT, "embed", "float16")), rows, "embedding")
    assert np.min(np.sum(ref * got, axis=-1)) >= 0.99999


def test_bf16_conversion_round_trip() -> None:
    x = np.array([1.0, -2.5, 3.1415927, 1e-30, 65504.0, 0.0], np.float32)
    bits = f32_to_bf16_bits(x)
    back = bf16_bits_to_f32(bits)
    np.testing.assert_allclose(back, x, rtol=2**-8)
    assert np.array_equal(f32_to_bf16_bits(back), bits)  # bf16 -> f32 -> bf16 is the identity


def test_rope_tables() -> None:
    ck = open_checkpoint(VL_CKPT)
    freq = inv_freq(ck.text)
    assert freq.dtype == np.float32 and freq[0] == 1.0
    axis = mrope_axis_of_frequency(ck.text)
    # transformers' apply_interleaved_mrope: h at 1, 4, 7.. (< 3*section[1]), w at 2, 5, .. (< 3*section[2])
    for j, a in enumerate(axis):
        expect = 1 if (j % 3 == 1 and j < 3 * ck.text.mrope_section[1]) else \
            2 if (j % 3 == 2 and j < 3 * ck.text.mrope_section[2]) else 0
        assert a == expect


# ---- checkpoint layouts -----------------------------------------------------------------------------------
def _read_safetensors(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> None:
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, blob) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    head += b" " * ((-len(head)) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def _copy_without_weights(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if not f.name.endswith(".safetensors"):
            shutil.copy(f, dst / f.name)


def _tensors(src: Path) -> dict[str, tuple[str, list[int], bytes]]:
    header, data = _read_safetensors(src / "model.safetensors")
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0] : v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}


def _sharded(tmp_path: Path) -> Path:
    dst = tmp_path / "Qwen3-Reranker-sharded"
    _copy_without_weights(TEXT_CKPT, dst)
    tensors = _tensors(TEXT_CKPT)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    weight_map = {}
    for fname, part in shards.items():
        _write_safetensors(dst / fname, {n: tensors[n] for n in part})
        weight_map.update({n: fname for n in part})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst


def test_sharded_checkpoint(tmp_path: Path) -> None:
    out = export(_sharded(tmp_path), tmp_path / "out", progress=False)
    assert np.max(np.abs(_text_scores(out) - _text_scores(exported(TEXT_CKPT, "rerank")))) <= 1e-6
    assert read_manifest(out).name == "Qwen3-Reranker-sharded"


def test_float32_and_float16_checkpoints(tmp_path: Path) -> None:
    ref = _text_scores(exported(TEXT_CKPT, "rerank"))
    for tag, np_dtype in (("F32", np.float32), ("F16", np.float16)):
        dst = tmp_path / f"ckpt-{tag}"
        _copy_without_weights(TEXT_CKPT, dst)
        converted = {}
        for name, (dtype, shape, blob) in _tensors(TEXT_CKPT).items():
            assert dtype == "BF16"
            values = bf16_bits_to_f32(np.frombuffer(blob, dtype="<u2")).astype(np_dtype)
            converted[name] = (tag, shape, values.tobytes())
        _write_safetensors(dst / "model.safetensors", converted)
        got = _text_scores(export(dst, tmp_path / f"out-{tag}", progress=False))
        assert np.max(np.abs(got - ref)) <= 1e-5


def test_released_and_new_config_formats(tmp_path: Path) -> None:
    """The VL checkpoint in the newer dialect (rope_parameters, dtype) exports the same graph."""
    dst = tmp_path / "vl-new-config"
    shutil.copytree(VL_CKPT, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    cfg = json.loads((dst / "config.json").read_text())
    tc = cfg["text_config"]
    scaling = tc.pop("rope_scaling")
    tc["rope_parameters"] = {"rope_type": "default", "rope_theta": tc.pop("rope_theta"),
                             "mrope_section": scaling["mrope_section"], "mrope_interleaved": True}
    cfg["dtype"] = cfg.pop("torch_dtype")
    (dst / "config.json").write_text(json.dumps(cfg))
    a, b = open_checkpoint(VL_CKPT).text, open_checkpoint(dst).text
    assert a == b
    out = export(dst, tmp_path / "out", task="rerank", progress=False)
    rows = [(r["input_ids"], r["position_ids"]) for r in VL_TEXT_ROWS]
    got = run_rows(create_session(out / "decoder.onnx", providers="cpu"), rows, "logit")
    for r, logit in zip(VL_TEXT_ROWS, got):
        assert abs(sigmoid(float(logit)) - r["score"]) <= 1e-4


# ---- typed errors -------------------------------------------------------------------------------------------
def test_missing_shard(tmp_path: Path) -> None:
    src = _sharded(tmp_path)
    (src / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelDirectoryError, match="model-00002-of-00002.safetensors") as err:
        export(src, tmp_path / "out", progress=False)
    assert err.value.field == "model"


def test_missing_config(tmp_path: Path) -> None:
    src = tmp_path / "no-config"
    _copy_without_weights(TEXT_CKPT, src)
    (src / "config.json").unlink()
    with pytest.raises(ModelDirectoryError, match="config.json"):
        export(src, tmp_path / "out", progress=False)


def test_missing_weights_and_tokenizer(tmp_path: Path) -> None:
    src = tmp_path / "no-weights"
    _copy_without_weights(TEXT_CKPT, src)
    with pytest.raises(ModelDirectoryError, match="safetensors"):
        export(src, tmp_path / "out", progress=False)
    shutil.copy(TEXT_CKPT / "model.safetensors", src / "model.safetensors")
    (src / "tokenizer.json").unlink()
    with pytest.raises(ModelDirectoryError, match="tokenizer.json"):
        export(src, tmp_path / "out", progress=False)


def test_missing_tensor(tmp_path: Path) -> None:
    src = tmp_path / "no-lm-head"
    _copy_without_weights(TEXT_CKPT, src)
    tensors = _tensors(TEXT_CKPT)
    del tensors["lm_head.weight"]
    _write_safetensors(src / "model.safetensors", tensors)
    with pytest.raises(ModelDirectoryError, match="lm_head.weight"):
        export(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "decoder.onnx.data").exists()  # no half-written weights left behind


def test_unsupported_architecture(tmp_path: Path) -> None:
    src = tmp_path / "llama"
    _copy_without_weights(TEXT_CKPT, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelDirectoryError, match="LlamaForCausalLM"):
        export(src, tmp_path / "out", progress=False)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelDirectoryError):
        export(tmp_path / "nope" / "missing", tmp_path / "out", progress=False)


def test_task_inference(tmp_path: Path) -> None:
    with pytest.raises(ModelDirectoryError, match="task"):
        export(VL_CKPT, tmp_path / "out", progress=False)
    named = tmp_path / "Qwen3-VL-Embedding-tiny"
    shutil.copytree(VL_CKPT, named)
    assert read_manifest(export(named, tmp_path / "e", progress=False)).task == "embed"
    named.rename(tmp_path / "Qwen3-VL-Reranker-tiny")
    assert read_manifest(export(tmp_path / "Qwen3-VL-Reranker-tiny", tmp_path / "r", progress=False)).task == "rerank"
    with pytest.raises(InvalidInputError, match="task"):
        export(TEXT_CKPT, tmp_path / "t", task="embed", progress=False)
    with pytest.raises(InvalidInputError, match="task"):
        export(VL_CKPT, tmp_path / "t", task="classify", progress=False)
    with pytest.raises(InvalidInputError, match="dtype"):
        export(VL_CKPT, tmp_path / "t", task="rerank", dtype="int8", progress=False)


# ---- CLI -----------------------------------------------------------------------------------------------------
def test_cli_export(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "vlrank.cli", "export", str(VL_CKPT), str(out), "--task", "embed",
                           "--dtype", "float16", "--quiet"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["task"] == "embed" and summary["dtype"] == "float16"
    assert (out / "decoder.onnx").is_file()
    bad = subprocess.run([sys.executable, "-m", "vlrank.cli", "export", str(VL_CKPT), str(tmp_path / "x")],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "--task" in bad.stderr and "Traceback" not in bad.stderr
