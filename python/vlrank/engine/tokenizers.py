"""The tokenizer cache: one native ``Tokenizer`` per tokenizer.json per process."""

from __future__ import annotations

from pathlib import Path

from vlrank import _native

_TOKENIZERS: dict[tuple[str, int, int], object] = {}


def load_tokenizer(path: Path):
    """The native tokenizer of ``path``, parsed once per process (a Qwen tokenizer.json is 18 MB and
    takes ~1.5 s to load; facades on the same model share it — it is immutable)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    tok = _TOKENIZERS.get(key)
    if tok is None:
        tok = _native.Tokenizer.from_file(str(path))
        _TOKENIZERS[key] = tok
    return tok


__all__ = ["load_tokenizer"]
