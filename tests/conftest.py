"""Shared test fixtures: where the reference cases live (../shared/golden beside the repository)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN = REPO_ROOT.parent / "shared" / "golden"


def load_case_file(name: str) -> list[dict]:
    """Load one golden case file (e.g. "geometry.json") from ../shared/golden/cases."""
    return json.loads((GOLDEN / "cases" / name).read_text())


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN.is_dir():
        raise RuntimeError(
            f"the reference cases are missing: expected {GOLDEN} (../shared/golden beside the repository)"
        )
    return GOLDEN
