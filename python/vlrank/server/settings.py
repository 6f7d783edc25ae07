"""Server knobs, one frozen object shared by the app, the schedulers and the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass

from vlrank.errors import InvalidInputError
from vlrank.inputs.policy import DEFAULT_MAX_VIDEO_BYTES, FetchPolicy
from vlrank.preprocess.images import DEFAULT_MAX_IMAGE_PIXELS

API_KEY_ENV = "VLRANK_API_KEY"


@dataclass(frozen=True)
class ServerSettings:
    """Limits and policy of one server instance.

    ``max_queue`` counts requests waiting (not yet running) per model; past it a request is answered 429
    with ``Retry-After`` instead of queueing without bound. ``max_batch_tokens`` is the (estimated) token
    budget of one model batch and ``max_batch_requests`` caps how many requests share one.

    Connections: a request head must arrive within ``header_timeout_s`` (of the connection opening or
    the previous response) and in ``max_header_bytes`` (else 408 / 431 and the connection is closed), the
    body within ``body_timeout_s`` of the head (else 408); an idle keep-alive connection is closed after
    ``keep_alive_s``. Shutdown: queued requests get ``drain_timeout_s`` to finish, then the JSON 503.

    Images: one of more than ``max_image_pixels`` source pixels (from its header) is answered 413 naming
    its field before anything is decoded; the model sees at most ``max_pixels`` of an image anyway.
    Videos: a video file (data URL or http(s)) of more than ``max_video_bytes`` is refused (413) while it is
    read; its frames are planned from the header and decoded within the image decode budget.

    Media held: a request's images and videos are decoded in its own thread into float32 pixel rows, which it
    holds until its batch has run; ``max_media_bytes`` bounds those rows over all requests at once (a request
    that needs more is 413; one that finds it full waits up to ``media_wait_s``, then 503 with Retry-After).
    Default 4 GiB: 128 images at the default 1,280-token max_pixels (32 MiB of rows each).
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
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_s: float = 5.0
    max_header_bytes: int = 64 * 1024
    drain_timeout_s: float = 20.0
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    max_media_bytes: int = 4 * 2**30
    #: threads that prepare requests holding images or videos (fetch, probe, decode), at a lower CPU priority
    media_workers: int = 4
    media_wait_s: float = 30.0
    #: the model TEI's /rerank, /embed and /info use when a request names none (--tei-default)
    tei_default: str | None = None

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s", "drain_timeout_s", "media_wait_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidInputError(f"{name} must be a positive number of seconds, got {value!r}", field=name)
        for name in ("max_queue", "max_documents", "max_body_bytes", "max_batch_tokens", "max_batch_requests",
                     "retry_after_s", "max_header_bytes", "max_image_pixels", "max_video_bytes",
                     "max_media_bytes", "media_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive int, got {value!r}", field=name)
        if self.api_key is not None and not self.api_key:
            raise InvalidInputError("api_key is empty; pass a non-empty key or None for no auth", field="api_key")

    def fetch_policy(self) -> FetchPolicy:
        """What a request's URLs may reach: never local files (a client must not read the server's disk),
        private addresses only when allowed, and this server's video byte cap."""
        return FetchPolicy(allow_local_files=False, allow_private_urls=self.allow_private_urls,
                           max_video_bytes=self.max_video_bytes)


def api_key_from_env() -> str | None:
    """The bearer key from $VLRANK_API_KEY (empty counts as unset)."""
    return os.environ.get(API_KEY_ENV) or None
