"""The one JSON error shape and the status code of every error the service answers with."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# Where a WSGI app hands its error shape to the intake, which answers before the app sees a
# request: `app.extensions[ERROR_BODY](path, error)` is the JSON body in the shape of the
# protocol that owns `path` (app/adapters/routes.py). The intake imports no adapter.
ERROR_BODY = "wanwu.error_body"


class ApiError(Exception):
    """An error a client sees as `{"error": {"code": ..., "message": ...}}`."""

    status = 500
    code = "internal"

    def __init__(
        self,
        message: str,
        *,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.headers = dict(headers or {})  # more response headers (RateLimit-* on a 429)

    def http_headers(self) -> dict[str, str]:
        """The headers an HTTP answer of this error carries: Retry-After when set, then its
        own (RateLimit-* on a 429)."""
        retry = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        return {**retry, **self.headers}

    def body(self) -> dict[str, Any]:
        """Return the JSON body for this error."""
        return {"error": {"code": self.code, "message": self.message}}


ErrorBody = Callable[[str, ApiError], dict[str, Any]]


def plain_body(path: str, error: ApiError) -> dict[str, Any]:
    """wanwu's own error shape, whatever the path (for an app that hands in no other)."""
    return error.body()


def _error(name: str, status: int, code: str) -> type[ApiError]:
    return type(name, (ApiError,), {"status": status, "code": code, "__doc__": code})


BadRequest = _error("BadRequest", 400, "bad_request")
LoadFailed = _error("LoadFailed", 400, "load_failed")
NoImage = _error("NoImage", 400, "no_image")
UndecodableImage = _error("UndecodableImage", 400, "undecodable_image")
Unauthorized = _error("Unauthorized", 401, "unauthorized")
NotFound = _error("NotFound", 404, "not_found")
ModelNotFound = _error("ModelNotFound", 404, "model_not_found")
MethodNotAllowed = _error("MethodNotAllowed", 405, "method_not_allowed")
RequestTimeout = _error("RequestTimeout", 408, "request_timeout")
LengthRequired = _error("LengthRequired", 411, "length_required")
PayloadTooLarge = _error("PayloadTooLarge", 413, "payload_too_large")
ImageTooLarge = _error("ImageTooLarge", 413, "image_too_large")
TooManyFiles = _error("TooManyFiles", 413, "too_many_files")
UnsupportedMediaType = _error("UnsupportedMediaType", 415, "unsupported_media_type")
InvalidParameter = _error("InvalidParameter", 422, "invalid_parameter")
RateLimited = _error("RateLimited", 429, "rate_limited")
HeadersTooLarge = _error("HeadersTooLarge", 431, "request_header_fields_too_large")
NotReady = _error("NotReady", 503, "not_ready")
Overloaded = _error("Overloaded", 503, "overloaded")
Timeout = _error("Timeout", 504, "timeout")
InternalError = _error("InternalError", 500, "internal")
NotExplainable = _error("NotExplainable", 501, "not_explainable")


def too_many_files(count: int, most: int) -> ApiError:
    """The 413 for a request of `count` images when WANWU_MAX_FILES is `most`."""
    return TooManyFiles(f"{count} files sent; at most {most} per request (WANWU_MAX_FILES).")


def body_too_large(limit_mb: float) -> str:
    """The 413 message for a body over the upload limit, naming the setting that raises it."""
    return f"The request body is larger than {limit_mb:g} MB (WANWU_MAX_UPLOAD_MB)."
