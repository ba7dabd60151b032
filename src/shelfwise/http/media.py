"""A JSON endpoint's body errors, told apart:

- a body sent with another media type (`text/plain`, a form) → `415` (RFC 9110
  §15.5.16), naming the accepted type in `Accept-Patch` for PATCH (RFC 5789 §2.2) or
  `Accept-Post` otherwise;
- a body that claims JSON but does not parse → `400 malformed_json`;
- well-formed JSON with wrong fields stays `422 validation_failed`.

FastAPI reports all three as one `RequestValidationError`; this looks at its errors and
the request's `Content-Type` to give the right status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.types import Scope

JSON_MEDIA_TYPE = "application/json"


def is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == JSON_MEDIA_TYPE or (kind.startswith("application/") and kind.endswith("+json"))


def body_error_status(errors: Sequence[Any], scope: Scope) -> int | None:
    """415 or 400 when the body could not be read as JSON at all; None otherwise."""
    body_errors = [e for e in errors if tuple(e.get("loc", ()))[:1] == ("body",)]
    if not body_errors:
        return None
    if any(e.get("type") == "json_invalid" for e in body_errors):
        return 400
    content_type = Headers(scope=scope).get("content-type")
    if content_type and not is_json(content_type):
        return 415
    return None


def accept_header(scope: Scope) -> dict[str, str]:
    name = "Accept-Patch" if scope.get("method") == "PATCH" else "Accept-Post"
    return {name: JSON_MEDIA_TYPE}
