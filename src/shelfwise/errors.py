"""Domain errors.

Plain exception classes with a stable machine-readable `code`. Only the HTTP edge
(`shelfwise.http.problems`) maps them to status codes; services never think in HTTP.
"""

from __future__ import annotations

from typing import Any


class ShelfwiseError(Exception):
    code = "error"
    title = "Request failed"

    def __init__(
        self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        self.headers = headers or {}


class NotFound(ShelfwiseError):
    code = "not_found"
    title = "Resource not found"


class AlreadyExists(ShelfwiseError):
    code = "already_exists"
    title = "Resource already exists"


class Conflict(ShelfwiseError):
    code = "conflict"
    title = "Conflict with the current state"


class InvalidInput(ShelfwiseError):
    code = "validation_failed"
    title = "Request is invalid"


class Unauthenticated(ShelfwiseError):
    code = "unauthenticated"
    title = "Authentication required"


class PermissionDenied(ShelfwiseError):
    code = "forbidden"
    title = "Not allowed"


class InsufficientStock(Conflict):
    code = "insufficient_stock"
    title = "Not enough stock"


class VersionMismatch(ShelfwiseError):
    """The caller's view of a resource is stale (optimistic concurrency)."""

    code = "precondition_failed"
    title = "Resource has changed"


class PreconditionRequired(ShelfwiseError):
    code = "precondition_required"
    title = "If-Match header required"


class IdempotencyKeyReused(ShelfwiseError):
    code = "idempotency_key_reused"
    title = "Idempotency key reused with a different request"


class IdempotencyKeyInProgress(ShelfwiseError):
    code = "idempotency_key_in_progress"
    title = "A request with this idempotency key is still in progress"


class IdempotencyKeyMissing(ShelfwiseError):
    code = "idempotency_key_missing"
    title = "Idempotency-Key header required"


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"
    title = "Cursor is invalid"


class RateLimited(ShelfwiseError):
    code = "rate_limited"
    title = "Too many requests"


class PositionTooOld(ShelfwiseError):
    """A stream position whose events were pruned: reload the snapshot."""

    code = "position_too_old"
    title = "The position is no longer available; reload the snapshot"


class Unavailable(ShelfwiseError):
    code = "unavailable"
    title = "Temporarily unavailable"


class MalformedRequest(ShelfwiseError):
    """The request cannot be read at all (e.g. a body that is not the JSON it claims)."""

    code = "malformed_request"
    title = "The request is malformed"


class UnsupportedMediaType(ShelfwiseError):
    code = "unsupported_media_type"
    title = "The request body's media type is not accepted here"


class DatabaseUnavailable(Unavailable):
    """PostgreSQL cannot be reached (restarting, network down): retry shortly."""

    code = "database_unavailable"
    title = "The database is temporarily unreachable"


class SessionStoreUnavailable(Unavailable):
    """Redis, which holds browser sessions when configured, cannot be reached. Sessions
    fail closed: a session that cannot be checked is not trusted."""

    code = "session_store_unavailable"
    title = "Sign-in sessions are temporarily unavailable"
