"""RFC 9457 problem+json: the one place where errors become HTTP responses.

Every exception ends here — domain errors, validation errors, Starlette HTTP errors and
anything unexpected. Unexpected errors are logged with the request id and answered as a
bare 500 that reveals nothing internal.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from psycopg_pool import PoolTimeout as DriverPoolTimeout
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import Scope

from shelfwise import errors
from shelfwise.availability import is_connection_failure
from shelfwise.http.media import JSON_MEDIA_TYPE, accept_header, body_error_status
from shelfwise.http.methods import allow_header
from shelfwise.http.request_id import request_id_of
from shelfwise.observability.metrics import UNHANDLED_ERRORS
from shelfwise.observability.tracing import current_trace_id

log = structlog.get_logger("shelfwise.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
RETRY_SOON = {"Retry-After": "2"}  # outages of a dependency (DB restart, Redis gone)

STATUS_BY_ERROR: dict[type[errors.ShelfwiseError], int] = {
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.Conflict: 409,
    errors.InvalidInput: 422,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.VersionMismatch: 412,
    errors.PreconditionRequired: 428,
    errors.IdempotencyKeyReused: 422,
    errors.IdempotencyKeyInProgress: 409,
    errors.IdempotencyKeyMissing: 400,
    errors.RateLimited: 429,
    errors.PositionTooOld: 410,
    errors.Unavailable: 503,
    errors.MalformedRequest: 400,
    errors.UnsupportedMediaType: 415,
}

CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
}


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def status_for(exc: errors.ShelfwiseError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


def problem(
    status: int,
    code: str,
    detail: str,
    scope: Scope,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": f"urn:shelfwise:problem:{code}",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": scope.get("path", ""),
        "code": code,
        "request_id": request_id_of(scope),
        # Beside the request id when tracing is on: the trace to open for this failure.
        **({"trace_id": trace_id} if (trace_id := current_trace_id()) else {}),
        **extra,
    }
    return ProblemResponse(body, status_code=status, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Deliberately omit pydantic's `input`: it may echo a password or token back.
    return [
        {
            "field": ".".join(str(part) for part in err.get("loc", ())),
            "message": err.get("msg", "invalid"),
            "type": err.get("type", "invalid"),
        }
        for err in exc.errors()
    ]


def problem_for_exception(exc: Exception, scope: Scope) -> ProblemResponse:
    if isinstance(exc, errors.ShelfwiseError):
        status = status_for(exc)
        headers = {**({"WWW-Authenticate": "Bearer"} if status == 401 else {}), **exc.headers}
        return problem(
            status, exc.code, exc.detail, scope, title=exc.title, headers=headers, **exc.extra
        )
    if isinstance(exc, RequestValidationError):
        unreadable = body_error_status(exc.errors(), scope)
        if unreadable == 415:
            return problem(
                415,
                "unsupported_media_type",
                f"Send the body as {JSON_MEDIA_TYPE}",
                scope,
                headers=accept_header(scope),
            )
        if unreadable == 400:
            return problem(400, "malformed_json", "The body is not valid JSON", scope)
        return problem(
            422,
            "validation_failed",
            "The request has invalid fields",
            scope,
            title="Request is invalid",
            errors=_field_errors(exc),
        )
    if isinstance(exc, StarletteHTTPException):
        code = CODE_BY_STATUS.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the resource, not one route's
            headers["Allow"] = allow_header(scope) or headers.get("Allow", "")
        return problem(exc.status_code, code, str(exc.detail), scope, headers=headers)
    if isinstance(exc, PoolTimeout | DriverPoolTimeout):
        # Every database connection stayed busy for `db_pool_timeout_seconds`: overload,
        # not a bug. Shed the request with a retryable answer instead of a bare 500.
        log.warning("database_pool_exhausted", path=scope.get("path"))
        return problem(
            503,
            "database_busy",
            "The service is busy; retry shortly.",
            scope,
            headers={"Retry-After": "1"},
        )
    if is_connection_failure(exc):
        # The safety net behind the doors (driverpool.py, db.py): a connection that failed
        # where nothing wrapped it is still an outage, not a bug.
        log.warning("database_unreachable", path=scope.get("path"), error=type(exc).__name__)
        return problem_for_exception(errors.DatabaseUnavailable(headers=RETRY_SOON), scope)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        log.warning("redis_unreachable", path=scope.get("path"), error=type(exc).__name__)
        return problem(
            503,
            "redis_unavailable",
            "A dependency is unreachable; retry shortly.",
            scope,
            headers=RETRY_SOON,
        )
    UNHANDLED_ERRORS.labels(type(exc).__name__).inc()
    log.error("unhandled_exception", exc_info=exc, path=scope.get("path"))
    return problem(
        500,
        "internal_error",
        "An unexpected error occurred. Quote the request id when reporting it.",
        scope,
    )


async def _handle(request: Request, exc: Exception) -> ProblemResponse:
    return problem_for_exception(exc, request.scope)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.ShelfwiseError, _handle)
    app.add_exception_handler(RequestValidationError, _handle)
    app.add_exception_handler(StarletteHTTPException, _handle)
