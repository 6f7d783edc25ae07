"""What ``vlrank.ray`` says when Ray is missing: a leaf, so the package and its modules import it one way."""

from __future__ import annotations

from vlrank.errors import RuntimeUnavailableError

INSTALL_HINT = 'pip install "vlrank[ray]"'


class RayUnavailableError(RuntimeUnavailableError, ImportError):
    """Ray (or the part of it a function needs) is not installed."""


# Its public home is the package (``vlrank.ray.RayUnavailableError``): tracebacks and the error list say so.
RayUnavailableError.__module__ = "vlrank.ray"


__all__ = ["INSTALL_HINT", "RayUnavailableError"]
