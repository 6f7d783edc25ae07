"""HTTP errors in the OpenAI / IONOS shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure path of the server ends here, so clients always get JSON with a field name they can act
on, and no stack trace ever leaves the process (tracebacks are logged server-side only).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vlrank.errors import (
    ContextTooLongError,
    ImageFetchError,
    ImageTooLargeError,
    InvalidInputError,
    VlrankError,
)

log = logging.getLogger("vlrank.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error answer: status, message, and the OpenAI-style ``type`` / ``param`` / ``code``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None) -> None:  # noqa: A002
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_vlrank_error(exc: VlrankError) -> ApiError:
    """Map a library error to its HTTP answer; ``field`` becomes ``param``."""
    if isinstance(exc, ContextTooLongError):
        return ApiError(413, exc.message, param=exc.field, code="context_length_exceeded")
    if isinstance(exc, ImageTooLargeError):
        return ApiError(413, exc.message, param=exc.field, code="image_too_large")
    if isinstance(exc, ImageFetchError):
        return ApiError(400, exc.message, param=exc.field, code="image_fetch_failed")
    if isinstance(exc, InvalidInputError):
        return ApiError(400, exc.message, param=exc.field, code="invalid_value")
    # Model directory / runtime failures at request time are the server's fault, not the caller's.
    log.error("library error while serving a request: %r", exc)
    return ApiError(500, "the model failed to process the request; see the server log", code="internal_error")


def internal_error(exc: BaseException) -> ApiError:
    """A bug or an unexpected failure: the traceback goes to the log, the client gets a plain message."""
    log.error("unhandled error while serving a request", exc_info=(type(exc), exc, exc.__traceback__))
    return ApiError(500, "internal server error; see the server log", code="internal_error")


def _loc_to_param(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """('body', 'documents', 3, 'text') -> 'documents[3].text' (the same paths vlrank.errors uses)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "header", "path"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and ("[" in part or "function-" in part or part in ("str", "int", "bool")):
            # pydantic names union branches ("str", "dict[str,any]"); they are not part of the JSON path
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or None


def body_parse_error(cause: BaseException | None) -> ApiError:
    """What was wrong with a body the JSON decoder could not take (FastAPI hides the cause behind
    "There was an error parsing the body"); ``param`` is "body", the message says what to send."""
    if isinstance(cause, UnicodeDecodeError):
        why = (f"the request body is not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at offset "
               f"{cause.start}); send UTF-8 JSON (other text as \\uXXXX escapes)")
    elif isinstance(cause, RecursionError):
        why = ("the request body nests JSON arrays / objects too deeply to parse; send a flat request (a "
               "query, a list of documents, each at most a few levels deep)")
    elif isinstance(cause, ValueError) and "digits" in str(cause):
        why = (f"the request body holds a number too long to parse ({cause}); send numbers of at most a "
               "few digits (top_n, dimensions are small integers)")
    else:
        why = "the request body could not be parsed; send a JSON object in UTF-8"
    return ApiError(400, why, param="body", code="invalid_json")


def validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    if not errors:
        return ApiError(400, "invalid request body", param="body", code="invalid_request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        loc = first.get("loc", ())
        at = f" at byte {loc[-1]}" if len(loc) > 1 and isinstance(loc[-1], int) else ""
        return ApiError(400, f"the request body is not valid JSON ({detail}{at}); send a JSON object",
                        param="body", code="invalid_json")
    param = _loc_to_param(first.get("loc", ()))
    if param is None and first.get("type") in ("model_attributes_type", "dict_type"):
        return ApiError(400, "the request body must be a JSON object sent with Content-Type: application/json",
                        param="body", code="invalid_json")
    if param is None and first.get("type") == "missing":
        return ApiError(400, "the request body is empty; send a JSON object with Content-Type: application/json "
                             "(see /openapi.json)", param="body", code="invalid_json")
    where = param or "body"
    msg = first.get("msg", "invalid value")
    if first.get("type") == "missing":
        msg = "field required"
    elif first.get("type") == "extra_forbidden":
        msg = "unknown field; remove it (see /openapi.json for the accepted fields)"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return ApiError(400, f"{where}: {msg}{more}", param=param, code="invalid_value")


def install_handlers(app: FastAPI) -> None:
    """Route every error class to the JSON error shape."""

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def request_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_error(exc).response()

    async def http_exception(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        if status == 404:
            err = ApiError(404, "no such route; see /openapi.json", code="not_found")
        elif status == 405:
            err = ApiError(405, "method not allowed on this route; see /openapi.json", code="method_not_allowed")
        elif status == 400 and exc.__cause__ is not None:  # the body's JSON could not be decoded
            err = body_parse_error(exc.__cause__)
        else:
            detail = exc.detail if isinstance(exc.detail, str) else "request failed"
            err = ApiError(status, detail, code="request_timeout" if status == 408 else None)
        headers = dict(exc.headers or {})
        headers.update(err.headers)
        err.headers = headers
        return err.response()

    async def vlrank_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, VlrankError)
        return from_vlrank_error(exc).response()

    async def unhandled(_: Request, exc: Exception) -> JSONResponse:
        return internal_error(exc).response()

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(StarletteHTTPException, http_exception)
    app.add_exception_handler(VlrankError, vlrank_error)
    app.add_exception_handler(Exception, unhandled)
