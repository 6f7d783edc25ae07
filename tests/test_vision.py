"""export/vision.py: the vision tower graph, stage by stage against the reference's intermediates
(golden vl_intermediates.npz: one 6 x 8 patch image of tiny-qwen3-vl, float32 from bf16 weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from vlrank import _native
from vlrank.errors import ModelDirectoryError
from vlrank.export.checkpoint import open_checkpoint
from vlrank.export.vision import VISION_FILE, build_vision_graph, read_vision_metadata

GOLDEN = Path(__file__).resolve().parent / "golden"
VL_CKPT = GOLDEN / "models" / "tiny-qwen3-vl"
STAGES = ["patch_embed", "block0", "block1", "block2", "deepstack0", "deepstack1", "merger"]


@pytest.fixture(scope="module")
def npz():
    return np.load(GOLDEN / "cases" / "vl_intermediates.npz")


def _build(tmp: Path, dtype: str, *, expose_stages: bool = False) -> ort.InferenceSession:
    files = build_vision_graph(open_checkpoint(VL_CKPT), tmp, dtype, expose_stages=expose_stages)
    assert files == [VISION_FILE, VISION_FILE + ".data"]
    return ort.InferenceSession(str(tmp / VISION_FILE), providers=["CPUExecutionProvider"])


def _feeds(sess: ort.InferenceSession, pixel_values: np.ndarray, grid_h: int, grid_w: int) -> dict:
    meta = read_vision_metadata(sess.get_modelmeta().custom_metadata_map)
    idx, wts = _native.pos_embed_interpolation(grid_h, grid_w, num_grid_per_side=meta["num_grid_per_side"],
                                               merge_size=meta["spatial_merge_size"])
    cos, sin = _native.vision_rotary(grid_h, grid_w, head_dim=meta["head_dim"],
                                     merge_size=meta["spatial_merge_size"], theta=meta["rope_theta"])
    return dict(pixel_values=pixel_values, pos_interp_indices=idx, pos_interp_weights=wts, rotary_cos=cos,
                rotary_sin=sin)


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def staged(tmp_path_factory, npz):
    sess = _build(tmp_path_factory.mktemp("vision-f32"), "float32", expose_stages=True)
    _, h, w = npz["grid_thw"][0]
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, _feeds(sess, npz["pixel_values"], int(h), int(w)))))


@pytest.mark.parametrize("stage", STAGES)
def test_stage_matches_reference(staged, npz, stage):
    ref = npz[f"vision.{stage}"]
    got = staged[f"vision.{stage}"]
    assert got.shape == ref.shape
    assert _rel_err(got, ref) < 1e-5, stage


def test_outputs_are_merger_and_stacked_deepstack(staged, npz):
    np.testing.assert_array_equal(staged["image_embeds"], staged["vision.merger"])
    assert staged["deepstack_embeds"].shape == (2, 12, 32)
    for j in range(2):
        assert _rel_err(staged["deepstack_embeds"][j], npz[f"vision.deepstack{j}"]) < 1e-5


def test_graph_interface_and_metadata(tmp_path):
    sess = _build(tmp_path, "float32")
    inputs = {i.name: (i.type, i.shape) for i in sess.get_inputs()}
    assert inputs == {
        "pixel_values": ("tensor(float)", ["patches", 1536]),
        "pos_interp_indices": ("tensor(int64)", ["patches", 4]),
        "pos_interp_weights": ("tensor(float)", ["patches", 4]),
        "rotary_cos": ("tensor(float)", ["patches", 16]),
        "rotary_sin": ("tensor(float)", ["patches", 16]),
    }
    assert [o.name for o in sess.get_outputs()] == ["image_embeds", "deepstack_embeds"]
    meta = read_vision_metadata(sess.get_modelmeta().custom_metadata_map)
    assert meta == dict(head_dim=16, rope_theta=10000.0, num_grid_per_side=8, spatial_merge_size=2,
                        patch_dim=1536, out_hidden_size=32, deepstack_layers=2)
    onnx.checker.check_model(str(tmp_path / VISION_FILE))


def test_bf16_storage_is_exact_for_a_bf16_checkpoint(tmp_path, npz):
    # The checkpoint is bf16: storing its weights as bf16 and computing in f32 loses nothing.
    sess = _build(tmp_path, "bfloat16")
    _, h, w = npz["grid_thw"][0]
    image, deepstack = sess.run(None, _feeds(sess, npz["pixel_values"], int(h), int(w)))
    assert _rel_err(image, npz["vision.merger"]) < 1e-5
    assert _rel_err(deepstack[1], npz["vision.deepstack1"]) < 1e-5


def test_f16_storage_stays_close(tmp_path, npz):
    sess = _build(tmp_path, "float16")
    _, h, w = npz["grid_thw"][0]
    image, _ = sess.run(None, _feeds(sess, npz["pixel_values"], int(h), int(w)))
    assert _rel_err(image, npz["vision.merger"]) < 5e-3


@pytest.mark.parametrize(("grid_h", "grid_w"), [(2, 2), (18, 2), (4, 30)])
def test_other_grids_give_one_row_per_merged_token(tmp_path_factory, grid_h, grid_w):
    sess = _build(tmp_path_factory.mktemp("grid"), "float32")
    rng = np.random.default_rng(grid_h * 100 + grid_w)
    pv = rng.uniform(-1, 1, size=(grid_h * grid_w, 1536)).astype(np.float32)
    image, deepstack = sess.run(None, _feeds(sess, pv, grid_h, grid_w))
    assert image.shape == (grid_h * grid_w // 4, 32)
    assert deepstack.shape == (2, grid_h * grid_w // 4, 32)
    assert np.isfinite(image).all() and np.isfinite(deepstack).all()


def test_checkpoint_without_vision_config_is_a_typed_error(tmp_path):
    ckpt = open_checkpoint(GOLDEN / "models" / "tiny-qwen3-text")
    with pytest.raises(ModelDirectoryError) as info:
        build_vision_graph(ckpt, tmp_path, "float32")
    assert "vision_config" in str(info.value)


def test_missing_metadata_is_a_typed_error():
    with pytest.raises(ModelDirectoryError) as info:
        read_vision_metadata({})
    assert "re-export" in str(info.value)

