# Type stubs for the native extension vlrank._native (rust/src/py.rs). Keep in sync by hand.
from __future__ import annotations

__version__: str

# ---- geometry / probe / image (owner: native-image) ----

# ---- tokenizer / prompt / batch (owner: native-text) ----

# ---- rope (owner: vision) ----
