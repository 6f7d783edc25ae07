"""Server knobs, one frozen object shared by the app, the schedulers and the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass

from vlrank.errors import InvalidInputError

API_KEY_ENV = "VLRANK_API_KEY"


@dataclass(frozen=True)
class ServerSettings:
    """Limits and policy of one server instance.

    ``max_queue`` counts requests waiting (not yet running) per model; past it a request is answered 429
    with ``Retry-After`` instead of queueing without bound. ``max_batch_tokens`` is the (estimated) token
    budget of one model batch and ``max_batch_requests`` caps how many requests share one.
    """

    api_key: str | None = None
    max_queue: int = 256
    max_documents: int = 1000
    max_body_bytes: int = 64 * 1024 * 1024
    allow_private_urls: bool = False
    max_batch_tokens: int = 16384
    max_batch_requests: int = 64
    retry_after_s: int = 1
    warmup: bool = True
    #: serve Swagger UI at /docs (its scripts come from a CDN, so it is blank on an offline host)
    docs: bool = False

    def __post_init__(self) -> None:
        for name in ("max_queue", "max_documents", "max_body_bytes", "max_batch_tokens", "max_batch_requests",
                     "retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive int, got {value!r}", field=name)
        if self.api_key is not None and not self.api_key:
            raise InvalidInputError("api_key is empty; pass a non-empty key or None for no auth", field="api_key")


def api_key_from_env() -> str | None:
    """The bearer key from $VLRANK_API_KEY (empty counts as unset)."""
    return os.environ.get(API_KEY_ENV) or None
