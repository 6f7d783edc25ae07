"""vlrank on Ray: embed and rerank whole datasets with Ray Data, serve replicas with Ray Serve.

    import ray, vlrank.ray
    ds = ray.data.read_parquet("s3://bucket/corpus/")
    ds = vlrank.ray.embed_dataset(ds, model="/mnt/models/vl-embed", column="text", image_column="image",
                                  concurrency=4, num_gpus=1, batch_size=64)
    ds.write_parquet("s3://bucket/vectors/")

    app = vlrank.ray.serve_app(models={"reranker": "/mnt/models/vl-rerank"}, num_replicas=2)
    ray.serve.run(app, route_prefix="/")

Workers load an exported model directory (``vlrank export``), once per actor or replica; export once and
put the directory where every node reads it (docs/ray.md). Rows whose input is bad keep their place and
carry an ``error`` struct (type, message, field) instead of failing the job.
"""

from __future__ import annotations

from vlrank.ray.errors import INSTALL_HINT, RayUnavailableError

try:
    import ray as _ray  # noqa: F401 - probe only; each module imports what it uses
except ImportError:
    raise RayUnavailableError(f"vlrank.ray needs Ray; {INSTALL_HINT}", field="ray") from None

from vlrank.ray.data import embed_dataset, rerank_dataset  # noqa: E402
from vlrank.ray.rows import ERROR_TYPE  # noqa: E402
from vlrank.ray.serve import serve_app  # noqa: E402 - imports ray.serve only when called


__all__ = ["embed_dataset", "rerank_dataset", "serve_app", "RayUnavailableError", "ERROR_TYPE", "INSTALL_HINT"]
