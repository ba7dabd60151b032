"""The HTTP edge of idempotency keys: header parsing, request fingerprints, replays.

The semantics live in `shelfwise.idempotency.service`; this module only turns a request
into an `IdempotentRequest` and a stored response back into HTTP.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from shelfwise.errors import IdempotencyKeyMissing, InvalidInput
from shelfwise.http.request_urls import url_path
from shelfwise.idempotency.service import IdempotentRequest, Outcome, StoredResponse
from shelfwise.identity.principal import Principal

T = TypeVar("T")
HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# RFC 8941 §3.3.3 sf-string: printable ASCII in quotes, `\"` and `\\` the only escapes;
# or the same key bare (what most clients send): 1-255 visible ASCII, not starting with `"`.
# One pattern, used both to parse and in the OpenAPI document, so the two cannot differ.
KEY_PATTERN = (
    r"^(?:[\x21\x23-\x7e][\x21-\x7e]{0,254}"
    r'|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\]){1,255}")$'
)
_KEY = re.compile(KEY_PATTERN)
_SF_ESCAPE = re.compile(r'\\(["\\])')
KEY_DESCRIPTION = (
    "Unique per logical operation; retries reuse it. An RFC 8941 Structured Field "
    'string (`"order-7f3a"`, as the IETF Idempotency-Key draft defines it) or the same '
    "characters bare (`order-7f3a`); 1-255 characters of visible ASCII, never empty."
)

# Where it is required, the route still declares it optional so that a missing key is
# the documented `400 idempotency_key_missing`, not a generic 422; the marker makes the
# OpenAPI document say `required: true` (`http/openapi.py`).
REQUIRED_MARKER = "x-shelfwise-required"
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(alias=HEADER, description=KEY_DESCRIPTION, pattern=KEY_PATTERN),
]
RequiredIdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description=KEY_DESCRIPTION + " Required: without it the answer is 400.",
        pattern=KEY_PATTERN,
        json_schema_extra={REQUIRED_MARKER: True},
    ),
]


def parse_key(value: str) -> str | None:
    """The key an `Idempotency-Key` header carries, or None when it is malformed.
    `"abc"` (the draft's sf-string) and `abc` are the same key; `""` is refused."""
    if _KEY.fullmatch(value) is None:
        return None
    if value.startswith('"'):
        return _SF_ESCAPE.sub(r"\1", value[1:-1])
    return value


def _checked(header: str) -> str:
    key = parse_key(header)
    if key is None:
        raise InvalidInput(
            "Idempotency-Key must be a non-empty Structured Field string (or bare token) "
            "of at most 255 visible ASCII characters",
            errors=[
                {
                    "field": "header.Idempotency-Key",
                    "message": "malformed",
                    "type": "idempotency_key",
                }
            ],
        )
    return key


def fingerprint(request: Request, payload: BaseModel) -> str:
    """Same operation = same method, path and *parsed* body, whatever the JSON spacing."""
    canonical = json.dumps(payload.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    target = f"{request.method} {url_path(request)}\n{canonical}"
    return hashlib.sha256(target.encode()).hexdigest()


def idempotent_request(
    request: Request,
    principal: Principal,
    key: str | None,
    payload: BaseModel,
    render: Callable[[T], StoredResponse],
    *,
    required: bool = False,
) -> IdempotentRequest[T] | None:
    if key is None:
        if required:
            raise IdempotencyKeyMissing(f"Send an {HEADER} header with this request")
        return None
    return IdempotentRequest(
        principal=principal.key,
        key=_checked(key),
        fingerprint=fingerprint(request, payload),
        render=render,
    )


@dataclass(frozen=True, slots=True)
class RenderedResponse(StoredResponse):
    """A response rendered from a model: the body to store, and the same body already
    encoded as `JSONResponse` would encode it (pydantic's serializer writes it in one
    pass; `json.dumps` of the dumped dict was ~20 µs of an order's CPU)."""

    encoded: bytes


class _EncodedJSONResponse(JSONResponse):
    """A `JSONResponse` given its body already encoded: same headers, same bytes."""

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else super().render(content)


def json_response(
    stored: StoredResponse, *, replayed: bool, headers: dict[str, str] | None = None
) -> JSONResponse:
    all_headers = {REPLAYED_HEADER: "true" if replayed else "false", **(headers or {})}
    if isinstance(stored, RenderedResponse):
        return _EncodedJSONResponse(stored.encoded, status_code=stored.status, headers=all_headers)
    return JSONResponse(stored.body, status_code=stored.status, headers=all_headers)


def respond(
    outcome: Outcome[T],
    render: Callable[[T], StoredResponse],
    *,
    headers: Callable[[StoredResponse], dict[str, str]] | None = None,
) -> JSONResponse:
    """The HTTP answer for an idempotent use case: the replay, the response already stored
    with the key, or (no key) the result rendered now."""
    if outcome.replay is not None:
        stored, replayed = outcome.replay, True
    elif outcome.stored is not None:
        stored, replayed = outcome.stored, False
    else:
        assert outcome.result is not None
        stored, replayed = render(outcome.result), False
    return json_response(stored, replayed=replayed, headers=headers(stored) if headers else None)


def render_model(status: int) -> Callable[[BaseModel], StoredResponse]:
    def render(model: BaseModel) -> StoredResponse:
        body: dict[str, Any] = model.model_dump(mode="json")
        # The bytes `JSONResponse(body)` would send (compact, UTF-8, not ASCII-escaped),
        # written by the same serializer that dumped `body`
        # (tests/unit/test_rendered_response.py compares them).
        encoded = model.__pydantic_serializer__.to_json(model)
        return RenderedResponse(status=status, body=body, encoded=encoded)

    return render
