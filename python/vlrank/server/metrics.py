"""Prometheus metrics of one app instance (own registry, so several apps in one process do not clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Requests by route/status, latency, queue depth, batch sizes, tokens."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("vlrank_requests", "HTTP requests answered", ["route", "method", "status"],
                                registry=r)
        self.latency = Histogram("vlrank_request_duration_seconds", "HTTP request latency", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("vlrank_queue_depth", "requests waiting for a model batch", ["model"], registry=r)
        self.batch_requests = Histogram("vlrank_batch_requests", "requests per model batch", ["model"],
                                        buckets=_SIZE_BUCKETS, registry=r)
        self.batch_items = Histogram("vlrank_batch_items", "documents / inputs per model batch", ["model"],
                                     buckets=_SIZE_BUCKETS, registry=r)
        self.batch_seconds = Histogram("vlrank_batch_duration_seconds", "model time per batch", ["model"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("vlrank_prompt_tokens", "prompt tokens processed", ["model"], registry=r)
        self.rejected = Counter("vlrank_rejected_requests", "requests refused because a queue was full",
                                ["model"], registry=r)
        self.cancelled = Counter("vlrank_cancelled_requests", "queued requests dropped after the client left",
                                 ["model"], registry=r)
        self.ready = Gauge("vlrank_ready", "1 once every model is loaded and warmed", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
