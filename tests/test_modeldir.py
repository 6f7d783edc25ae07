"""vlrank/modeldir.py: the one Manifest the exporter writes and the engine reads, and the directories
exported before it carried the widths (they keep loading, with the same numbers, read from the graphs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

import vlrank
from export_support import GOLDEN, TEXT_CKPT, VL_CKPT, exported
from vlrank.engine.budget import MemoryBudget, VisionWidths
from vlrank.errors import ModelDirectoryError
from vlrank.export.checkpoint import open_checkpoint
from vlrank.export.vision import vision_spec
from vlrank.modeldir import MANIFEST, VisionMeta, read_manifest


def _old_format(model: Path, out: Path) -> Path:
    """A copy of ``model`` whose vlrank.json is what exports before this change wrote: no
    dims.intermediate_size, no vision section."""
    shutil.copytree(model, out)
    data = json.loads((out / MANIFEST).read_text())
    del data["dims"]["intermediate_size"]
    data.pop("vision", None)
    (out / MANIFEST).write_text(json.dumps(data))
    return out


@pytest.mark.parametrize("ckpt,task", [(TEXT_CKPT, "rerank"), (VL_CKPT, "rerank"), (VL_CKPT, "embed")])
def test_the_file_is_the_manifest(ckpt: Path, task: str) -> None:
    model = exported(ckpt, task)
    m = read_manifest(model)
    assert json.loads((model / MANIFEST).read_text()) == m.to_json()  # nothing written is lost on reading
    source = open_checkpoint(ckpt)
    assert m.dims.intermediate_size == source.text.intermediate_size
    if ckpt == VL_CKPT:
        spec = vision_spec(source)
        assert m.vision == spec.meta()
        assert (m.vision.hidden_size, m.vision.intermediate_size) == (spec.hidden, spec.intermediate)
        # the numbers the graph keeps in its own metadata are the manifest's
        graph = ort.InferenceSession(str(m.file("vision")), providers=["CPUExecutionProvider"])
        props = graph.get_modelmeta().custom_metadata_map
        assert {k: v for k, v in props.items() if k.startswith("vlrank.vision.")} == m.vision.props()
        assert VisionMeta.from_props(props) == VisionMeta(**{**vars(m.vision), "hidden_size": None,
                                                             "intermediate_size": None})
    else:
        assert m.vision is None


def test_the_engine_reads_the_manifest_widths() -> None:
    model = exported(VL_CKPT, "rerank")
    m = read_manifest(model)
    rr = vlrank.Reranker(model, providers="cpu")
    d, v = m.dims, m.vision
    expected = MemoryBudget(budget=rr.runner.budget.budget, hidden=d.hidden_size, heads=d.num_heads,
                            kv_heads=d.num_kv_heads, head_dim=d.head_dim, intermediate=d.intermediate_size,
                            deepstack=d.deepstack_layers,
                            vision=VisionWidths(hidden=v.hidden_size, intermediate=v.intermediate_size,
                                                patch_dim=v.patch_dim))
    got = rr.runner.budget
    assert (got.token_bytes, got.image_token_bytes, got.patch_bytes) == (
        expected.token_bytes, expected.image_token_bytes, expected.patch_bytes)
    tower = rr.tower()
    assert (tower.head_dim, tower.theta, tower.side, tower.merge, tower.patch_dim, tower.out_hidden,
            tower.deepstack_layers) == (v.head_dim, v.rope_theta, v.num_grid_per_side, v.spatial_merge_size,
                                        v.patch_dim, v.out_hidden_size, v.deepstack_layers)


@pytest.mark.parametrize("ckpt", [TEXT_CKPT, VL_CKPT])
def test_an_old_format_directory_loads_with_the_same_numbers(ckpt: Path, tmp_path: Path) -> None:
    new = exported(ckpt, "rerank")
    old = _old_format(new, tmp_path / "old")
    m = read_manifest(old)
    assert m.dims.intermediate_size is None and m.vision is None
    a, b = vlrank.Reranker(new, providers="cpu"), vlrank.Reranker(old, providers="cpu")
    # the widths read from the graphs equal the ones the manifest now records
    assert (a.runner.budget.token_bytes, a.runner.budget.patch_bytes) == (
        b.runner.budget.token_bytes, b.runner.budget.patch_bytes)
    docs: list = ["Paris is the capital of France.", "Berlin"]
    if ckpt == VL_CKPT:
        image = (GOLDEN / "images" / "gradient_130x97.png").read_bytes()
        docs.append({"content": [{"type": "image", "image": image}, {"type": "text", "text": "a gradient"}]})
        assert vars(a.tower()).keys() == vars(b.tower()).keys()
        assert {k: v for k, v in vars(a.tower()).items() if k != "session"} == \
               {k: v for k, v in vars(b.tower()).items() if k != "session"}
    scores = [[r["relevance_score"] for r in rr.rerank("capital of France?", docs)["results"]] for rr in (a, b)]
    assert scores[0] == scores[1]


def test_a_manifest_that_disagrees_with_its_vision_graph_is_refused(tmp_path: Path) -> None:
    model = _old_format(exported(VL_CKPT, "rerank"), tmp_path / "mixed")
    data = json.loads((model / MANIFEST).read_text())
    data["vision"] = {**json.loads((exported(VL_CKPT, "rerank") / MANIFEST).read_text())["vision"],
                      "rope_theta": 5000.0}
    (model / MANIFEST).write_text(json.dumps(data))
    rr = vlrank.Reranker(model, providers="cpu")
    with pytest.raises(ModelDirectoryError) as info:
        rr.tower()
    assert info.value.field == "model"
    assert "vlrank.vision.rope_theta" in str(info.value) and "re-export" in str(info.value)


def test_a_malformed_vision_section_is_a_typed_error(tmp_path: Path) -> None:
    model = _old_format(exported(VL_CKPT, "rerank"), tmp_path / "bad")
    data = json.loads((model / MANIFEST).read_text())
    data["vision"] = {"head_dim": 16}
    (model / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ModelDirectoryError) as info:
        read_manifest(model)
    assert info.value.field == "model" and "rope_theta" in str(info.value)
