"""tests/golden is the reference set, file for file and byte for byte: every file matches the SHA-256 pinned
in tests/golden/SHA256SUMS (the tokenizer.json files included: they are rebuilt offline), and where the
reference set sits beside the repository (../shared/golden) the two hold the same files with the same bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from conftest import GOLDEN, REFERENCE_GOLDEN

# files of the copy that are not reference files: the manifest itself and the ignore rule for rebuilt files
OWN_FILES = {"SHA256SUMS", ".gitignore"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path, *, skip: set[str]) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in skip and "__pycache__" not in path.parts and not rel.endswith(".tmp"):
            out[rel] = _sha256(path)
    return out


def _pinned() -> dict[str, str]:
    lines = (GOLDEN / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines)}


def test_the_copy_matches_its_pinned_checksums() -> None:
    pinned = _pinned()
    assert len(pinned) > 150 and "models/tokenizer.json" in pinned
    assert _tree(GOLDEN, skip=OWN_FILES) == pinned


def test_the_copy_equals_the_reference_set_where_it_exists() -> None:
    # A clone without ../shared checks the pins only (above); beside the reference set, the copy must be it.
    if not REFERENCE_GOLDEN.is_dir():
        assert not (REFERENCE_GOLDEN / "cases").exists()
        return
    assert _tree(REFERENCE_GOLDEN, skip=set()) == _tree(GOLDEN, skip=OWN_FILES)
