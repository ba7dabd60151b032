"""Domain errors → HTTP status, and the shape of every problem+json body."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from prometheus_client import REGISTRY
from starlette.exceptions import HTTPException
from structlog.testing import capture_logs

from shelfwise import errors
from shelfwise.catalog.service import ProductInUse, ProductNotFound, SkuTaken
from shelfwise.http.problems import (
    PROBLEM_MEDIA_TYPE,
    problem,
    problem_for_exception,
    status_for,
)
from shelfwise.identity.service import EmailUnavailable, InvalidCredentials
from shelfwise.inventory.service import LocationCodeTaken, LocationNotFound

EXPECTED_STATUS: dict[type[errors.ShelfwiseError], int] = {
    errors.ShelfwiseError: 400,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.Conflict: 409,
    errors.InvalidInput: 422,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.InsufficientStock: 409,
    errors.VersionMismatch: 412,
    errors.PreconditionRequired: 428,
    errors.IdempotencyKeyReused: 422,
    errors.IdempotencyKeyInProgress: 409,
    errors.IdempotencyKeyMissing: 400,
    errors.InvalidCursor: 422,
    errors.RateLimited: 429,
    errors.PositionTooOld: 410,
    errors.Unavailable: 503,
    errors.DatabaseUnavailable: 503,
    errors.SessionStoreUnavailable: 503,
    errors.MalformedRequest: 400,
    errors.UnsupportedMediaType: 415,
}

FIELDS = ("type", "title", "status", "detail", "instance", "code", "request_id")


def error_classes() -> list[type[errors.ShelfwiseError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.ShelfwiseError) and cls.__module__ == errors.__name__
    ]


def scope_for(path: str = "/v1/things/1", request_id: str | None = "req-12345678") -> Any:
    state = {"request_id": request_id} if request_id else {}
    return {"type": "http", "method": "GET", "path": path, "headers": [], "state": state}


def body_of(response: Any) -> dict[str, Any]:
    return dict(json.loads(response.body))


def test_every_error_class_has_an_expected_status() -> None:
    # A new error class must be given a status here on purpose, not fall through to 400.
    assert set(error_classes()) == set(EXPECTED_STATUS)


@pytest.mark.parametrize(
    ("cls", "status"), EXPECTED_STATUS.items(), ids=lambda v: getattr(v, "__name__", str(v))
)
def test_status_for(cls: type[errors.ShelfwiseError], status: int) -> None:
    assert status_for(cls("detail")) == status


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (ProductNotFound, 404),
        (LocationNotFound, 404),
        (SkuTaken, 409),
        (LocationCodeTaken, 409),
        (EmailUnavailable, 409),
        (ProductInUse, 409),
        (InvalidCredentials, 401),
    ],
)
def test_service_subclasses_inherit_their_status(
    cls: type[errors.ShelfwiseError], status: int
) -> None:
    assert status_for(cls()) == status


def test_unmapped_subclass_falls_back_to_400() -> None:
    class Odd(errors.ShelfwiseError):
        code = "odd"

    assert status_for(Odd()) == 400


@pytest.mark.parametrize("cls", sorted(EXPECTED_STATUS, key=lambda c: c.__name__))
def test_codes_are_stable_snake_case(cls: type[errors.ShelfwiseError]) -> None:
    assert cls.code.replace("_", "").isalpha()
    assert cls.code == cls.code.lower()
    assert cls.title


def test_error_defaults_detail_to_title() -> None:
    exc = errors.NotFound()
    assert exc.detail == exc.title == str(exc)
    assert errors.NotFound("gone").detail == "gone"


def test_problem_body_shape() -> None:
    response = problem(404, "not_found", "No such thing", scope_for("/v1/things/7"))
    assert response.status_code == 404
    assert response.media_type == PROBLEM_MEDIA_TYPE
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert body_of(response) == {
        "type": "urn:shelfwise:problem:not_found",
        "title": "Not Found",
        "status": 404,
        "detail": "No such thing",
        "instance": "/v1/things/7",
        "code": "not_found",
        "request_id": "req-12345678",
    }


def test_problem_extra_fields_and_title() -> None:
    response = problem(
        409, "x", "d", scope_for(), title="Custom", headers={"Retry-After": "1"}, lines=[1]
    )
    body = body_of(response)
    assert body["title"] == "Custom"
    assert body["lines"] == [1]
    assert response.headers["retry-after"] == "1"


def test_problem_without_request_id() -> None:
    assert (
        body_of(problem(400, "bad_request", "d", scope_for(request_id=None)))["request_id"] is None
    )


def test_domain_error_becomes_problem_with_extras() -> None:
    exc = errors.InsufficientStock("only 2 left", lines=[{"requested": 5, "available": 2}])
    response = problem_for_exception(exc, scope_for())
    body = body_of(response)
    assert response.status_code == 409
    assert set(FIELDS) <= set(body)
    assert body["code"] == "insufficient_stock"
    assert body["type"] == "urn:shelfwise:problem:insufficient_stock"
    assert body["title"] == "Not enough stock"
    assert body["detail"] == "only 2 left"
    assert body["lines"] == [{"requested": 5, "available": 2}]
    assert "www-authenticate" not in response.headers


def test_unauthenticated_carries_www_authenticate() -> None:
    response = problem_for_exception(errors.Unauthenticated("no"), scope_for())
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_validation_error_lists_fields_without_echoing_input() -> None:
    exc = RequestValidationError(
        [
            {
                "loc": ("body", "password"),
                "msg": "too short",
                "type": "string_too_short",
                "input": "hunter2-secret",
            }
        ]
    )
    response = problem_for_exception(exc, scope_for())
    body = body_of(response)
    assert response.status_code == 422
    assert body["code"] == "validation_failed"
    assert body["errors"] == [
        {"field": "body.password", "message": "too short", "type": "string_too_short"}
    ]
    assert b"hunter2-secret" not in response.body


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, "not_found"),
        (405, "method_not_allowed"),
        (413, "payload_too_large"),
        (418, "http_error"),
    ],
)
def test_http_exception_becomes_problem(status: int, code: str) -> None:
    response = problem_for_exception(HTTPException(status, "nope"), scope_for())
    assert response.status_code == status
    assert body_of(response)["code"] == code
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE


def test_http_exception_headers_are_kept() -> None:
    response = problem_for_exception(
        HTTPException(405, "nope", headers={"Allow": "GET"}), scope_for()
    )
    assert response.headers["allow"] == "GET"


def test_unexpected_exception_is_opaque_counted_and_logged() -> None:
    def count() -> float:
        value = REGISTRY.get_sample_value(
            "shelfwise_unhandled_errors_total", {"exception": "ZeroDivisionError"}
        )
        return value or 0.0

    before = count()
    with capture_logs() as logs:
        response = problem_for_exception(ZeroDivisionError("secret internals"), scope_for())
    body = body_of(response)
    assert response.status_code == 500
    assert body["code"] == "internal_error"
    assert body["request_id"] == "req-12345678"
    assert b"secret internals" not in response.body
    assert b"ZeroDivisionError" not in response.body
    assert count() == before + 1
    assert [entry["event"] for entry in logs] == ["unhandled_exception"]
    assert logs[0]["log_level"] == "error"
