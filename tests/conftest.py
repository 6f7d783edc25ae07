"""Shared test fixtures: where the reference cases live (tests/golden, a copy of the reference set).

tests/golden holds every reference file the tests read except the 18 MB tokenizer.json, which is rebuilt
offline on first use (tests/golden_tokenizer.py, byte-for-byte the reference's). Where the reference set
itself sits beside the repository (../shared/golden), tests/test_golden_copy.py checks the copy equals it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from golden_tokenizer import ensure_golden_tokenizers

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN = REPO_ROOT / "tests" / "golden"
# The reference set the copy was made from, where a checkout has it beside the repository (or names it).
REFERENCE_GOLDEN = Path(os.environ.get("VLRANK_REFERENCE_GOLDEN") or REPO_ROOT.parent / "shared" / "golden")

ensure_golden_tokenizers()


def load_case_file(name: str) -> list[dict]:
    """Load one golden case file (e.g. "geometry.json") from tests/golden/cases."""
    return json.loads((GOLDEN / "cases" / name).read_text())


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN


# Test modules by cost, so `pytest -m "not slow and not network"` (README: the fast command) stays under
# five minutes on a 2-core machine. `network`: installs into fresh venvs (pip reaches PyPI); `slow`: whole
# pipelines (Ray, a real GPU-script run, load and memory soaks, client libraries, quantized exports).
NETWORK_MODULES = frozenset({"test_wheel"})
SLOW_MODULES = frozenset({
    "test_wheel", "test_gpu_script", "test_ray", "test_server_load", "test_clients", "test_quantized",
    "test_server_memory", "test_server_isolation", "test_video_hostile", "test_video_server_cli",
    "test_tei_clients",
})
# Single tests of the fast modules that cost 7-27 s each (measured with --durations on this 2-core machine);
# their rules stay covered by fast neighbours: the golden video scores by test_video_model, the decode bounds by
# the header checks, the CLI by its success paths, the TEI routes by their answers.
SLOW_TESTS = frozenset({
    "test_an_8k_video_is_downscaled_and_too_many_8k_frames_are_refused",
    "test_8192_frames_under_an_address_space_cap_give_a_typed_error_not_an_abort",
    "test_golden_video_embeddings_through_the_api",
    "test_golden_video_embeddings",
    "test_golden_video_rerank_through_the_api",
    "test_a_frame_list_scores_the_same_in_every_spelling",
    "test_ray_rerank_dataset_passes_the_options_through",
    "test_sigterm_answers_queued_requests_with_json_503",
    "test_a_stream_over_the_decode_work_bound_is_refused_from_its_header",
    "test_a_ten_hour_clip_is_refused_from_its_header",
    "test_bad_videos_are_one_line_errors",
    "test_per_video_options_change_the_plan",
    "test_bombs_under_an_address_space_cap_give_typed_errors_and_the_process_survives",
    "test_offline_vocabulary_equals_reference_tokenizer",
    "test_rerank_failures",
    "test_export_failures",
    "test_cli_export_precision",
    "test_serve_a_checkpoint_directory_with_the_loading_flags",
    "test_schemathesis_on_the_new_routes_finds_no_5xx",
})


def _has_cuda() -> bool:
    import shutil

    import onnxruntime as ort

    return shutil.which("nvidia-smi") is not None and "CUDAExecutionProvider" in ort.get_available_providers()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda = None
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in NETWORK_MODULES:
            item.add_marker(pytest.mark.network)
        if module in SLOW_MODULES or getattr(item, "originalname", item.name) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("gpu"):
            cuda = _has_cuda() if cuda is None else cuda
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (nvidia-smi and onnxruntime-gpu)"))
